"""Storage drivers: byte-oriented, content-agnostic stores of keyed objects."""

from storage.drivers.base import Appender, Driver, Entry, Writer
from storage.errors import Busy, NotFound

__all__ = ["Appender", "Busy", "Driver", "Entry", "NotFound", "Writer"]
