"""The index's figures for monitoring: how many repositories, tags, manifests, blobs and open uploads
there are, the bytes stored, and the newest garbage collection's report."""

from __future__ import annotations

from dataclasses import dataclass

from storage.metadata.database import Connection, Database, one
from storage.metadata.schema import PRESENT


@dataclass(frozen=True, slots=True)
class Figures:
    """Counts of rows, `blob_bytes` the bytes of the present blobs (each stored once), and the newest
    garbage collection's start time and report (JSON), None before the first."""

    repositories: int
    tags: int
    manifests: int
    blobs: int
    blob_bytes: int
    uploads: int
    gc_started_at: float | None
    gc_report: str | None


def _read(c: Connection) -> Figures:
    repositories = one(c.execute("SELECT COUNT(*) FROM repositories"))[0]
    tags = one(c.execute("SELECT COUNT(*) FROM tags"))[0]
    manifests = one(c.execute("SELECT COUNT(*) FROM manifests"))[0]
    blobs, size = one(
        c.execute("SELECT COUNT(*), CAST(COALESCE(SUM(size), 0) AS BIGINT) FROM blobs WHERE state = ?", (PRESENT,))
    )
    uploads = one(c.execute("SELECT COUNT(*) FROM uploads"))[0]
    run = c.execute("SELECT started_at, report FROM gc_runs ORDER BY started_at DESC LIMIT 1").fetchone()
    return Figures(
        int(repositories),
        int(tags),
        int(manifests),
        int(blobs),
        int(size),
        int(uploads),
        None if run is None else float(run[0]),
        None if run is None else str(run[1]),
    )


class FigureQueries:
    """The figures of `db`."""

    def __init__(self, db: Database):
        self.db = db

    async def read(self) -> Figures:
        """Every figure, from one snapshot. It counts whole tables (on SQLite about 0.1 s a million
        blobs): read it now and then in the background, never per request."""
        return await self.db.scan(_read)
