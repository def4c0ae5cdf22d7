"""The metadata index (SQL): what exists where, kept in transactions instead of storage walks."""

from __future__ import annotations

from storage.errors import BlobCollecting, MissingReferences
from storage.metadata.sqlite import SQLiteDatabase
from storage.metadata.store import Chunk, ManifestRecord, Metadata, Upload

__all__ = ["BlobCollecting", "Chunk", "ManifestRecord", "Metadata", "MissingReferences", "Upload", "open_metadata"]


def open_metadata(url: str) -> Metadata:
    """An (unopened) index for `url`: `sqlite:///PATH` (relative), `sqlite:////abs/path`, or
    `postgresql://user:password@host:port/database`."""
    if url.startswith("sqlite:///"):
        return Metadata(SQLiteDatabase(url.removeprefix("sqlite:///")))
    if url.startswith(("postgresql://", "postgres://")):
        from storage.metadata.postgres import PostgresDatabase

        return Metadata(PostgresDatabase(url))
    raise ValueError(f"unsupported index url {url!r} (sqlite:///PATH or postgresql://...)")
