"""The driver protocol every storage backend implements, with the contract of each method.

Keys are plain strings with `/` separators and no leading slash. A driver stores bytes only; what a
key means is decided by the caller.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from storage.errors import NotFound

__all__ = ["Driver", "Entry", "NotFound", "Piece", "PieceWriter", "Writer"]

# Every method may also raise storage.errors.BackendUnavailable when the store cannot be reached.


@dataclass(frozen=True, slots=True)
class Entry:
    """What a driver knows of a stored object."""

    key: str
    size: int
    modified: float  # seconds since the epoch


class Writer(Protocol):
    """A new object being written; invisible under its key until `commit`."""

    async def write(self, data: bytes) -> None:
        """Append `data` to the object."""

    async def commit(self) -> int:
        """Make the object durable and visible under its key at once (replacing any old one).

        Returns the number of bytes written. Raises NotFound, storing nothing, when `Driver.abandoned`
        removed the write meanwhile (only a driver that cannot tell a live write does).
        """

    async def cancel(self) -> None:
        """Discard everything written; leaves nothing behind. Safe to call after commit (no-op)."""

    @property
    def size(self) -> int:
        """Bytes written so far."""


@dataclass(frozen=True, slots=True)
class Piece:
    """Bytes an append committed: `size` bytes of a growing object from its offset `start`, kept by
    the driver under `key`. The caller records pieces and gives them back to `seal`; what `key` holds
    is the driver's business (the caller never reads, moves or deletes it)."""

    key: str
    start: int
    size: int

    @property
    def end(self) -> int:
        return self.start + self.size


class PieceWriter(Protocol):
    """Bytes of a growing object written from an offset; they become no object a caller reads, only
    a piece that `Driver.seal` may join into one."""

    async def write(self, data: bytes) -> None:
        """Append `data` to the piece."""

    async def commit(self) -> Piece:
        """Keep the bytes written as a piece that a later `seal` may use (not durably: the seal makes
        them durable). Raises NotFound, keeping nothing, when `Driver.abandoned` removed the write
        meanwhile (only a driver that cannot tell a live write does)."""

    async def cancel(self) -> None:
        """Discard everything written; leaves nothing behind. Safe to call after commit (no-op)."""

    async def discard(self) -> None:
        """After commit, for a piece that nothing recorded: remove it (it must not be sealed then)."""

    @property
    def size(self) -> int:
        """Bytes written so far."""


class Driver(Protocol):
    """A byte store. Every method is safe to call concurrently from many tasks."""

    async def stat(self, key: str) -> Entry:
        """The entry of `key`; raises NotFound."""

    async def get(self, key: str) -> bytes:
        """The whole content of `key` (small objects only); raises NotFound."""

    async def put(self, key: str, data: bytes) -> None:
        """Store `data` under `key` durably and atomically (create or replace)."""

    def reader(self, key: str, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        """Stream `length` bytes (all to the end when None) from `offset`; raises NotFound on first read."""

    async def writer(self, key: str, durable: bool = True) -> Writer:
        """Start writing a new object under `key`; with `durable` off, commit need not survive a power
        loss (a crash of the process it still survives)."""

    async def append(self, key: str, start: int) -> PieceWriter:
        """Start writing bytes of the growing object `key` (an upload's data) from offset `start`.

        Many appends of one object may run at once, from any process, at any offsets: each writes
        where no other can overwrite it, and none changes what an earlier commit kept. A committed
        append is a Piece that `seal` may use. What appends keep lives beside `key` in its folder (under
        keys that start with `key`), so deleting that folder removes it all."""

    async def seal(self, key: str, pieces: list[Piece], dst: str) -> None:
        """Store the bytes of `pieces` of `key` (committed appends, contiguous, in order from offset 0;
        none for an empty object) durably and atomically under `dst`, as `put` does. Raises NotFound,
        storing nothing, when a piece is missing; ValueError when the pieces do not follow each other.
        Never moves bytes an append may still be writing; the pieces may be gone afterwards."""

    async def move(self, src: str, dst: str) -> None:
        """Move `src` to `dst` durably, replacing `dst`; raises NotFound when `src` is missing."""

    async def delete(self, key: str) -> None:
        """Delete `key`, or every key under `key/` when it is a prefix; idempotent."""

    def list(self, prefix: str) -> AsyncIterator[Entry]:
        """Every object whose key starts with `prefix`, recursively, sorted by key."""

    async def url(self, key: str, expires_s: int) -> str | None:
        """A presigned GET URL for `key`, or None when the driver cannot give one."""

    def abandoned(self, before: float, remove: bool = False) -> AsyncIterator[Entry]:
        """The driver's own leftovers of writes abandoned before `before` (seconds since the epoch):
        what a writer stored on its way, then neither committed nor cancelled because its process died
        (local: temp files; S3: multipart uploads, billed until aborted). With `remove`, each is
        deleted before it is yielded. Never an object visible under a key, nor a write that showed
        progress at or after `before`; a driver that can tell a write is still in progress never
        yields it, whatever its age (each driver says how it tells). An entry's key names the
        leftover for people, not for the other methods; `modified` is its last sign of progress."""
