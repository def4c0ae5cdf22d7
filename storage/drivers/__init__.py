"""Storage drivers: byte-oriented, content-agnostic stores of keyed objects."""

from storage.drivers.base import Appender, Busy, Driver, Entry, NotFound, Writer

__all__ = ["Appender", "Busy", "Driver", "Entry", "NotFound", "Writer"]
