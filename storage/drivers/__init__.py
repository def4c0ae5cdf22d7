"""Storage drivers: byte-oriented, content-agnostic stores of keyed objects."""

from storage.drivers.base import Driver, Entry, NotFound, Writer

__all__ = ["Driver", "Entry", "NotFound", "Writer"]
