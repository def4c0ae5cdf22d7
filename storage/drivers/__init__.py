"""Storage drivers: byte-oriented, content-agnostic stores of keyed objects."""

from storage.drivers.base import Driver, Entry, Piece, PieceWriter, Writer
from storage.errors import NotFound

__all__ = ["Driver", "Entry", "NotFound", "Piece", "PieceWriter", "Writer"]
