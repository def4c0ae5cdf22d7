"""The driver protocol every storage backend implements, with the contract of each method.

Keys are plain strings with `/` separators and no leading slash. A driver stores bytes only; what a
key means is decided by the caller.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol

from storage.errors import Busy, NotFound

__all__ = ["Appender", "Busy", "Driver", "Entry", "NotFound", "Writer"]

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


class Appender(Protocol):
    """Exclusive write access to one object that grows by appends (an upload's data), until released."""

    def writer(self, offset: int) -> Writer:
        """Write from `offset` on; commit makes the object end after the bytes written (not durably)."""

    async def seal(self, size: int, dst: str) -> None:
        """Cut the object to `size` bytes and move it durably to key `dst`."""


class Driver(Protocol):
    """A byte store. Every method is safe to call concurrently from many tasks."""

    appends: bool  # whether `appender` works; else an upload keeps each chunk as an object and joins them

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

    def appender(self, key: str, create: bool) -> AbstractAsyncContextManager[Appender]:
        """Hold `key` exclusively for appending (creating it empty when `create`) until the context
        exits. Raises Busy when another appender holds it, NotFound when it is missing and not `create`."""

    async def move(self, src: str, dst: str) -> None:
        """Move `src` to `dst` durably, replacing `dst`; raises NotFound when `src` is missing."""

    async def concat(self, sources: list[str], dst: str) -> None:
        """Store the bytes of `sources`, in order, as `dst` (atomically, as `put` does); the sources
        stay. Raises NotFound when one is missing. Drivers join on the server side where they can."""

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
