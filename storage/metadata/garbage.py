"""The garbage collector's queries: a snapshot of what refers to what, and the re-checked deletes.

Decisions are planned from a snapshot, then every delete re-checks its condition inside its own
transaction, so a push that lands meanwhile is never undone: it either happened before the check
(and the row is kept) or it sees the row gone (and uploads again).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from storage.metadata.database import Connection, Database, one, placeholders
from storage.metadata.leases import Leases
from storage.metadata.schema import DELETING, PRESENT

GC_LEASE = "gc"


@dataclass(frozen=True, slots=True)
class ManifestNode:
    """A manifest of the snapshot: `tagged` when a tag of its repository points at it."""

    repository: str
    digest: str
    subject: str | None
    created_at: float
    size: int
    tagged: bool


@dataclass(frozen=True, slots=True)
class Reference:
    """Manifest `manifest` of `repository` refers to `child`: a blob it uses, or (from an index) a
    manifest it lists."""

    repository: str
    manifest: str
    child: str


@dataclass(frozen=True, slots=True)
class BlobRow:
    """A blob of the snapshot, in state PRESENT or DELETING."""

    digest: str
    size: int
    state: str
    last_used_at: float


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What refers to what, read in one transaction."""

    manifests: list[ManifestNode]
    children: list[Reference]  # an index to a manifest it lists
    blob_refs: list[Reference]  # a manifest to a blob it uses
    blobs: list[BlobRow]


@dataclass(frozen=True, slots=True)
class Blob:
    """A blob's digest and size in bytes."""

    digest: str
    size: int


@dataclass(frozen=True, slots=True)
class PurgedUpload:
    """An upload forgotten by `stale_uploads`; its bytes remain, for the caller to delete."""

    id: str
    size: int


@dataclass(frozen=True, slots=True)
class UploadTotals:
    """How many uploads, and their bytes."""

    uploads: int
    size: int


@dataclass(frozen=True, slots=True)
class Totals:
    """How many manifests and present blobs the metadata holds, and the bytes of those blobs."""

    manifests: int
    blobs: int
    blob_bytes: int


def _snapshot(c: Connection) -> Snapshot:
    tagged = set(c.execute("SELECT DISTINCT repository, digest FROM tags").fetchall())
    manifests = [
        ManifestNode(repo, digest, subject, created, size, (repo, digest) in tagged)
        for repo, digest, subject, created, size in c.execute(
            "SELECT repository, digest, subject, created_at, size FROM manifests"
        ).fetchall()
    ]
    references = c.execute("SELECT repository, manifest, child, kind FROM manifest_references").fetchall()
    blobs = [BlobRow(*row) for row in c.execute("SELECT digest, size, state, last_used_at FROM blobs").fetchall()]
    return Snapshot(
        manifests,
        [Reference(r, m, child) for r, m, child, kind in references if kind == "manifest"],
        [Reference(r, m, child) for r, m, child, kind in references if kind == "blob"],
        blobs,
    )


def _remove_manifests(c: Connection, candidates: Sequence[ManifestNode], cutoff: float) -> list[ManifestNode]:
    """Delete the candidates that are still old, untagged, no kept index's child, and whose subject
    (if any) is untagged. Parents go before their children, so this loops until nothing changes."""
    removed: list[ManifestNode] = []
    pending = list(candidates)
    while pending:
        left = []
        for m in pending:
            row = c.execute(
                "SELECT 1 FROM manifests m WHERE repository = ? AND digest = ? AND created_at < ? "
                "AND NOT EXISTS (SELECT 1 FROM tags t WHERE t.repository = m.repository AND t.digest = m.digest) "
                "AND NOT EXISTS (SELECT 1 FROM manifest_references r WHERE r.repository = m.repository "
                "AND r.child = m.digest AND r.kind = 'manifest') "
                "AND (m.subject IS NULL OR NOT EXISTS "
                "(SELECT 1 FROM tags s WHERE s.repository = m.repository AND s.digest = m.subject))",
                (m.repository, m.digest, cutoff),
            ).fetchone()
            if row is None:
                left.append(m)
                continue
            c.execute("DELETE FROM manifests WHERE repository = ? AND digest = ?", (m.repository, m.digest))
            c.execute("DELETE FROM manifest_references WHERE repository = ? AND manifest = ?", (m.repository, m.digest))
            c.execute("DELETE FROM repository_blobs WHERE repository = ? AND digest = ?", (m.repository, m.digest))
            removed.append(m)
        if len(left) == len(pending):
            break
        pending = left
    return removed


def _mark_blobs(c: Connection, cutoff: float, now: float) -> list[Blob]:
    """Mark `deleting` every present blob unused since `cutoff` that no manifest refers to; returns
    every blob in that state (with those a crashed run left)."""
    c.execute(
        "UPDATE blobs SET state = ?, last_used_at = ? WHERE state = ? AND last_used_at < ? "
        "AND NOT EXISTS (SELECT 1 FROM manifest_references r WHERE r.child = blobs.digest) "
        "AND NOT EXISTS (SELECT 1 FROM manifests m WHERE m.digest = blobs.digest)",
        (DELETING, now, PRESENT, cutoff),
    )
    rows = c.execute("SELECT digest, size FROM blobs WHERE state = ? ORDER BY digest", (DELETING,)).fetchall()
    return [Blob(*row) for row in rows]


def _finishing(c: Connection, size: int) -> bool:
    """Whether an upload of `size` bytes exists, which may be finishing into a blob of that size."""
    return c.execute("SELECT 1 FROM uploads WHERE size = ? LIMIT 1", (size,)).fetchone() is not None


class GarbageQueries:
    """Queries of the garbage collector over `db` (`Metadata.garbage` gives those of its database)."""

    def __init__(self, db: Database):
        self.db = db
        self.leases = Leases(db)

    async def lock(self, holder: str, ttl_s: float) -> bool:
        """Take or renew the collector's lease for `holder`; False while another holder has it."""
        return await self.leases.take(GC_LEASE, holder, ttl_s)

    async def unlock(self, holder: str) -> None:
        """Give up the lease if `holder` has it."""
        await self.leases.release(GC_LEASE, holder)

    async def snapshot(self) -> Snapshot:
        """Every manifest, reference and blob, read in one transaction."""
        return await self.db.scan(_snapshot)

    async def remove_manifests(self, candidates: Sequence[ManifestNode], cutoff: float) -> list[ManifestNode]:
        """Delete those of `candidates` (from a snapshot) that still qualify, each with its references,
        tags and blob link: created before `cutoff`, untagged, listed by no index, and whose subject
        (if any) is untagged. Returns those deleted."""
        return await self.db.write(lambda c: _remove_manifests(c, candidates, cutoff))

    async def mark_blobs(self, cutoff: float) -> list[Blob]:
        """Mark unreferenced blobs unused since `cutoff` as `deleting`; returns every blob in that
        state (with those a crashed collection left), by digest."""
        now = time.time()
        return await self.db.write(lambda c: _mark_blobs(c, cutoff, now))

    async def forget_blobs(self, digests: list[str]) -> None:
        """Drop the rows of `deleting` blobs whose bytes are gone."""

        def forget(c: Connection) -> None:
            c.executemany("DELETE FROM repository_blobs WHERE digest = ?", [(d,) for d in digests])
            c.executemany("DELETE FROM blobs WHERE digest = ? AND state = ?", [(d, DELETING) for d in digests])

        await self.db.write(forget)

    async def known_blobs(self, digests: list[str]) -> set[str]:
        """Those of `digests` that have a row (in any state)."""
        if not digests:
            return set()
        sql = f"SELECT digest FROM blobs WHERE digest IN ({placeholders(len(digests))})"
        return await self.db.read(lambda c: {row[0] for row in c.execute(sql, digests).fetchall()})

    async def mark_orphans(self, blobs: Sequence[Blob]) -> list[str]:
        """Give each of `blobs` (the size of its stored bytes) that still has no row a row in state
        `deleting`, as `mark_blobs` does, so that a push of it meanwhile waits or fails and uploads
        again; returns the digests marked. A blob a push linked meanwhile keeps its row and bytes, and
        so does one an upload of its size may be finishing into (its bytes are placed before its row
        is written: a final PUT killed in between is retried and links them), until that upload is
        finished or purged."""
        now = time.time()

        def mark(c: Connection) -> list[str]:
            marked = []
            for blob in blobs:
                if _finishing(c, blob.size):
                    continue
                cursor = c.execute(
                    "INSERT INTO blobs (digest, size, state, created_at, last_used_at) VALUES (?, ?, ?, ?, ?) "
                    "ON CONFLICT (digest) DO NOTHING",
                    (blob.digest, blob.size, DELETING, now, now),
                )
                if cursor.rowcount == 1:
                    marked.append(blob.digest)
            return marked

        return await self.db.write(mark)

    async def markable_orphans(self, blobs: Sequence[Blob]) -> list[str]:
        """The digests of `blobs` that `mark_orphans` would mark now (for a dry run)."""

        def markable(c: Connection) -> list[str]:
            unknown = [
                b for b in blobs if c.execute("SELECT 1 FROM blobs WHERE digest = ?", (b.digest,)).fetchone() is None
            ]
            return [b.digest for b in unknown if not _finishing(c, b.size)]

        return await self.db.scan(markable)

    async def unknown_uploads(self, upload_ids: list[str]) -> list[str]:
        """Those of `upload_ids` that name no upload."""
        if not upload_ids:
            return []
        sql = f"SELECT id FROM uploads WHERE id IN ({placeholders(len(upload_ids))})"
        known = await self.db.read(lambda c: {row[0] for row in c.execute(sql, upload_ids).fetchall()})
        return [i for i in upload_ids if i not in known]

    async def stale_uploads(self, cutoff: float) -> list[PurgedUpload]:
        """Forget uploads untouched since `cutoff`, with their chunks; their bytes remain for the
        caller to delete."""

        def purge(c: Connection) -> list[PurgedUpload]:
            stale = [
                PurgedUpload(*row)
                for row in c.execute("SELECT id, size FROM uploads WHERE updated_at < ?", (cutoff,)).fetchall()
            ]
            c.executemany("DELETE FROM upload_chunks WHERE upload = ?", [(u.id,) for u in stale])
            c.executemany("DELETE FROM uploads WHERE id = ?", [(u.id,) for u in stale])
            return stale

        return await self.db.write(purge)

    async def stale_upload_totals(self, cutoff: float) -> UploadTotals:
        """The uploads untouched since `cutoff`: how many, and their bytes."""
        row = await self.db.scan(
            lambda c: one(
                c.execute(
                    "SELECT COUNT(*), CAST(COALESCE(SUM(size), 0) AS BIGINT) FROM uploads WHERE updated_at < ?",
                    (cutoff,),
                )
            )
        )
        return UploadTotals(*row)

    async def upload_ids(self) -> list[str]:
        """The id of every upload."""
        return await self.db.scan(lambda c: [row[0] for row in c.execute("SELECT id FROM uploads").fetchall()])

    async def totals(self) -> Totals:
        """How many manifests and present blobs there are, and the bytes of those blobs."""

        def count(c: Connection) -> Totals:
            manifests = one(c.execute("SELECT COUNT(*) FROM manifests"))[0]
            blobs, size = one(
                c.execute(
                    "SELECT COUNT(*), CAST(COALESCE(SUM(size), 0) AS BIGINT) FROM blobs WHERE state = ?", (PRESENT,)
                )
            )
            return Totals(manifests, blobs, size)

        return await self.db.scan(count)

    async def record_run(self, started_at: float, report: str, keep: int = 100) -> None:
        """Store a run's report (JSON), keeping the newest `keep`."""

        def record(c: Connection) -> None:
            c.execute("INSERT INTO gc_runs (started_at, report) VALUES (?, ?)", (started_at, report))
            c.execute(
                "DELETE FROM gc_runs WHERE started_at < (SELECT MIN(started_at) FROM "
                "(SELECT started_at FROM gc_runs ORDER BY started_at DESC LIMIT ?) AS newest)",
                (keep,),
            )

        await self.db.write(record)

    async def last_run(self) -> str | None:
        """The report of the newest run, if any."""
        row = await self.db.read(
            lambda c: c.execute("SELECT report FROM gc_runs ORDER BY started_at DESC LIMIT 1").fetchone()
        )
        if row is None:
            return None
        report: str = row[0]
        return report
