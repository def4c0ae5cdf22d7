"""The metadata index (SQL): what exists where, kept in transactions instead of storage walks."""

from __future__ import annotations

from storage.index.index import BlobCollecting, Chunk, Index, ManifestRecord, MissingReferences, Upload
from storage.index.sqlite import SQLiteDatabase

__all__ = ["BlobCollecting", "Chunk", "Index", "ManifestRecord", "MissingReferences", "Upload", "open_index"]


def open_index(url: str) -> Index:
    """An (unopened) index for `url`: `sqlite:///PATH` (relative) or `sqlite:////abs/path`."""
    if url.startswith("sqlite:///"):
        return Index(SQLiteDatabase(url.removeprefix("sqlite:///")))
    raise ValueError(f"unsupported index url {url!r} (expected sqlite:///PATH)")
