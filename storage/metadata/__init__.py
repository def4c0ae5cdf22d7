"""The metadata store (SQL): what exists where, kept in transactions instead of storage walks.

Callers import from here only; the modules behind it are the package's own.
"""

from __future__ import annotations

from storage.errors import BlobCollecting, MissingReferences
from storage.metadata.browse import BrowseQueries, RepositoryStats, RepositoryUsage, StoredTotal, TagRow
from storage.metadata.cache import CachedTag, CacheEntry, CacheQueries
from storage.metadata.database import Connection, Cursor, Database, Row, Session
from storage.metadata.events import EndpointStatus, EventQueries, OutboxEvent, PendingEvent
from storage.metadata.figures import FigureQueries, Figures
from storage.metadata.garbage import (
    BLOB_BATCH,
    MANIFEST_BATCH,
    Blob,
    GarbageQueries,
    ManifestKey,
    MarkedBlobs,
    Marks,
    PurgedUpload,
    Reference,
    Removable,
    RemovedManifest,
    Totals,
    UploadTotals,
)
from storage.metadata.leases import Leases
from storage.metadata.logins import Limits, Logins, Reservation
from storage.metadata.reviews import Decision, QueueTotals, ReviewQueries
from storage.metadata.rows import ManifestRecord
from storage.metadata.schema import DELETING, PRESENT
from storage.metadata.sqlite import SQLiteDatabase
from storage.metadata.store import REVIEW_DELAY_S, Chunk, Metadata, RemovedRepository, Upload
from storage.metadata.visibility import EVERYTHING, Glob, Visibility, literal_glob, parse_glob

__all__ = [
    "BLOB_BATCH",
    "DELETING",
    "EVERYTHING",
    "MANIFEST_BATCH",
    "PRESENT",
    "Blob",
    "BlobCollecting",
    "BrowseQueries",
    "CacheEntry",
    "CacheQueries",
    "CachedTag",
    "Chunk",
    "Connection",
    "Cursor",
    "Database",
    "Decision",
    "EndpointStatus",
    "EventQueries",
    "FigureQueries",
    "Figures",
    "GarbageQueries",
    "Glob",
    "Leases",
    "Limits",
    "Logins",
    "ManifestKey",
    "ManifestRecord",
    "MarkedBlobs",
    "Marks",
    "Metadata",
    "MissingReferences",
    "OutboxEvent",
    "PendingEvent",
    "PurgedUpload",
    "QueueTotals",
    "Reference",
    "Removable",
    "RemovedManifest",
    "RemovedRepository",
    "RepositoryStats",
    "RepositoryUsage",
    "Reservation",
    "ReviewQueries",
    "Row",
    "SQLiteDatabase",
    "Session",
    "StoredTotal",
    "TagRow",
    "Totals",
    "Upload",
    "UploadTotals",
    "Visibility",
    "literal_glob",
    "open_metadata",
    "parse_glob",
]


def open_metadata(url: str, review_delay_s: float = REVIEW_DELAY_S) -> Metadata:
    """An (unopened) metadata store for `url`: `sqlite:///PATH` (relative), `sqlite:////abs/path`, or
    `postgresql://user:password@host:port/database`; the reviews its changes queue are due
    `review_delay_s` after them."""
    if url.startswith("sqlite:///"):
        return Metadata(SQLiteDatabase(url.removeprefix("sqlite:///")), review_delay_s)
    if url.startswith(("postgresql://", "postgres://")):
        from storage.metadata.postgres import PostgresDatabase  # psycopg only where it is used

        return Metadata(PostgresDatabase(url), review_delay_s)
    raise ValueError(f"unsupported index url {url!r} (sqlite:///PATH or postgresql://...)")
