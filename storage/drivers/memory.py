"""An in-memory driver: the twin of the real ones for tests and throw-away registries."""

from __future__ import annotations

import functools
import time
from collections.abc import AsyncIterator

from storage.drivers.base import Entry, NotFound, Piece
from storage.drivers.pieces import WriterPiece, check_pieces, piece_key


class MemoryWriter:
    def __init__(self, driver: MemoryDriver, key: str):
        self._driver, self._key = driver, key
        self._buffer = bytearray()
        self._done = False

    @property
    def size(self) -> int:
        return len(self._buffer)

    async def write(self, data: bytes) -> None:
        self._buffer += data

    async def commit(self) -> int:
        self._driver._objects[self._key] = (bytes(self._buffer), time.time())
        self._done = True
        return len(self._buffer)

    async def cancel(self) -> None:
        self._buffer = bytearray()


class MemoryDriver:
    """Objects in a dict; every operation is atomic because nothing awaits inside it."""

    def __init__(self) -> None:
        self._objects: dict[str, tuple[bytes, float]] = {}

    def _load(self, key: str) -> tuple[bytes, float]:
        try:
            return self._objects[key]
        except KeyError:
            raise NotFound(key) from None

    async def stat(self, key: str) -> Entry:
        data, modified = self._load(key)
        return Entry(key, len(data), modified)

    async def get(self, key: str) -> bytes:
        return self._load(key)[0]

    async def put(self, key: str, data: bytes) -> None:
        self._objects[key] = (bytes(data), time.time())

    async def reader(self, key: str, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        data = self._load(key)[0]
        end = len(data) if length is None else min(len(data), offset + length)
        for start in range(offset, end, 1 << 20):
            yield data[start : min(end, start + (1 << 20))]

    async def writer(self, key: str, durable: bool = True) -> MemoryWriter:
        return MemoryWriter(self, key)

    async def append(self, key: str, start: int) -> WriterPiece:
        """Each append is an object of its own, stored at its commit."""
        at = piece_key(key, start)
        return WriterPiece(MemoryWriter(self, at), at, start, functools.partial(self.delete, at))

    async def seal(self, key: str, pieces: list[Piece], dst: str) -> None:
        check_pieces(pieces)
        joined = b"".join([self._load(piece.key)[0] for piece in pieces])
        self._objects[dst] = (joined, time.time())

    async def move(self, src: str, dst: str) -> None:
        data, _ = self._load(src)
        self._objects[dst] = (data, time.time())
        del self._objects[src]

    async def delete(self, key: str) -> None:
        self._objects.pop(key, None)
        prefix = key.rstrip("/") + "/"
        for other in [k for k in self._objects if k.startswith(prefix)]:
            del self._objects[other]

    async def list(self, prefix: str) -> AsyncIterator[Entry]:
        for key in sorted(k for k in self._objects if k.startswith(prefix)):
            data, modified = self._objects[key]
            yield Entry(key, len(data), modified)

    async def url(self, key: str, expires_s: int) -> str | None:
        return None

    async def abandoned(self, before: float, remove: bool = False) -> AsyncIterator[Entry]:
        """Nothing, ever: a write not committed lives only in its writer, and dies with it."""
        nothing: list[Entry] = []
        for entry in nothing:
            yield entry
