"""Appends written by a Writer (as objects of their own, or into a growing file), and the checks
every driver's seal makes of its pieces."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

from storage.drivers.base import Piece, Writer


def piece_key(key: str, start: int) -> str:
    """A new key for an append to `key` at `start`, beside it: sorted by offset, and never the key of
    another append (a random part keeps racing appends at one offset apart)."""
    return f"{key}.{start:020d}-{uuid.uuid4().hex[:12]}"


def check_pieces(pieces: list[Piece]) -> int:
    """The size of the object `pieces` make; ValueError unless they follow each other from offset 0."""
    end = 0
    for piece in pieces:
        if piece.start != end or piece.size < 0:
            raise ValueError(f"piece {piece} does not continue at {end}")
        end = piece.end
    return end


class WriterPiece:
    """An append written by a Writer: its commit gives the Piece (`key`, `start`, bytes written), and
    `discard` runs the driver's own removal of it (for an object of its own: deleting `key`)."""

    def __init__(self, writer: Writer, key: str, start: int, discard: Callable[[], Awaitable[None]]):
        self._writer, self._key, self._start, self._discard = writer, key, start, discard

    @property
    def size(self) -> int:
        return self._writer.size

    async def write(self, data: bytes) -> None:
        await self._writer.write(data)

    async def commit(self) -> Piece:
        return Piece(self._key, self._start, await self._writer.commit())

    async def cancel(self) -> None:
        await self._writer.cancel()

    async def discard(self) -> None:
        await self._discard()
