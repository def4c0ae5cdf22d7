"""The metadata index (SQL): what exists where, kept in transactions instead of storage walks."""

from __future__ import annotations

from storage.index.index import BlobCollecting, Chunk, Index, ManifestRecord, MissingReferences, Upload
from storage.index.sqlite import SQLiteDatabase

__all__ = ["BlobCollecting", "Chunk", "Index", "ManifestRecord", "MissingReferences", "Upload", "open_index"]


def open_index(url: str) -> Index:
    """An (unopened) index for `url`: `sqlite:///PATH` (relative), `sqlite:////abs/path`, or
    `postgresql://user:password@host:port/database`."""
    if url.startswith("sqlite:///"):
        return Index(SQLiteDatabase(url.removeprefix("sqlite:///")))
    if url.startswith(("postgresql://", "postgres://")):
        from storage.index.postgres import PostgresDatabase

        return Index(PostgresDatabase(url))
    raise ValueError(f"unsupported index url {url!r} (sqlite:///PATH or postgresql://...)")
