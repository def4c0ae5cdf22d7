"""The garbage collector's queries: the mark of what to keep, and the re-checked deletes.

The mark runs inside the database, in one snapshot, into a temporary table (the process holds no
more than a page of keys, whatever the size of the index); then deletes go in batches of at most a
few thousand rows, each its own short write transaction that re-checks its condition, so a push
that lands meanwhile is never undone: it either happened before the check (and the row is kept)
or it sees the row gone (and uploads again).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import astuple, dataclass

from storage.metadata.database import Connection, Database, Session, one, placeholders
from storage.metadata.leases import Leases
from storage.metadata.reviews import ReviewQueries
from storage.metadata.schema import DELETING, PRESENT

GC_LEASE = "gc"
MANIFEST_BATCH = 50  # manifests decided in one write transaction (each deletes its references and link too)
BLOB_BATCH = 1000  # blobs marked, or forgotten, in one write transaction


@dataclass(frozen=True, slots=True)
class ManifestKey:
    """A manifest: its repository and digest."""

    repository: str
    digest: str


@dataclass(frozen=True, slots=True)
class Reference:
    """Manifest `manifest` of `repository` refers to blob `child`."""

    repository: str
    manifest: str
    child: str


@dataclass(frozen=True, slots=True)
class RemovedManifest:
    """A manifest `remove_manifests` deleted, with the size of its bytes."""

    repository: str
    digest: str
    size: int


@dataclass(frozen=True, slots=True)
class Removable:
    """What a collection keeping the marked manifests would remove: manifests (and their bytes), and
    blobs (and theirs)."""

    manifests: int
    manifest_bytes: int
    blobs: int
    blob_bytes: int


@dataclass(frozen=True, slots=True)
class MarkedBlobs:
    """A page of `mark_blobs`: the last digest it covered (None: the blobs are all behind), and the
    blobs of the page in state `deleting`."""

    last: str | None
    blobs: list[Blob]


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


def _mark_kept(c: Connection, cutoff: float, delete_untagged: bool) -> None:
    """Fill the temporary table `gc_kept` with every manifest to keep: the roots (tagged or created
    since `cutoff`; without `delete_untagged`, also every manifest that is no referrer of a missing
    subject), then, round after round, the manifests that kept indexes list and the referrers of kept
    manifests (a round per level: manifests form a DAG, so this ends)."""
    c.execute("DROP TABLE IF EXISTS gc_kept")
    c.execute(
        "CREATE TEMPORARY TABLE gc_kept (repository TEXT NOT NULL, digest TEXT NOT NULL, round INTEGER NOT NULL, "
        "PRIMARY KEY (repository, digest))"
    )
    roots = (
        "m.created_at >= ? OR EXISTS (SELECT 1 FROM tags t WHERE t.repository = m.repository AND t.digest = m.digest)"
    )
    if not delete_untagged:
        roots += (
            " OR m.subject IS NULL OR EXISTS "
            "(SELECT 1 FROM manifests s WHERE s.repository = m.repository AND s.digest = m.subject)"
        )
    c.execute(
        "INSERT INTO gc_kept (repository, digest, round) "
        f"SELECT m.repository, m.digest, 0 FROM manifests m WHERE {roots}",
        (cutoff,),
    )
    c.execute("CREATE INDEX gc_kept_by_round ON gc_kept (round)")
    absent = "NOT EXISTS (SELECT 1 FROM gc_kept o WHERE o.repository = m.repository AND o.digest = m.digest)"
    level = 0
    while True:
        children = c.execute(
            "INSERT INTO gc_kept (repository, digest, round) SELECT DISTINCT m.repository, m.digest, ? FROM gc_kept k "
            "JOIN manifest_references r "
            "ON r.repository = k.repository AND r.manifest = k.digest AND r.kind = 'manifest' "
            f"JOIN manifests m ON m.repository = r.repository AND m.digest = r.child WHERE k.round = ? AND {absent}",
            (level + 1, level),
        ).rowcount
        referrers = c.execute(
            "INSERT INTO gc_kept (repository, digest, round) SELECT DISTINCT m.repository, m.digest, ? FROM gc_kept k "
            f"JOIN manifests m ON m.repository = k.repository AND m.subject = k.digest WHERE k.round = ? AND {absent}",
            (level + 1, level),
        ).rowcount
        if children + referrers == 0:
            break
        level += 1
    c.execute("CREATE INDEX gc_kept_by_digest ON gc_kept (digest)")


def _removable(c: Connection, cutoff: float) -> Removable:
    """What a collection keeping `gc_kept` would remove: the other manifests, and the blobs (present
    and unused since `cutoff`, or already `deleting`) that no kept manifest is or refers to."""
    manifests, manifest_bytes = one(
        c.execute(
            "SELECT COUNT(*), CAST(COALESCE(SUM(size), 0) AS BIGINT) FROM manifests m WHERE NOT EXISTS "
            "(SELECT 1 FROM gc_kept k WHERE k.repository = m.repository AND k.digest = m.digest)"
        )
    )
    blobs, blob_bytes = one(
        c.execute(
            "SELECT COUNT(*), CAST(COALESCE(SUM(size), 0) AS BIGINT) FROM blobs b "
            "WHERE (b.state <> ? OR b.last_used_at < ?) "
            "AND NOT EXISTS (SELECT 1 FROM gc_kept k WHERE k.digest = b.digest) "
            "AND NOT EXISTS (SELECT 1 FROM manifest_references r JOIN gc_kept k "
            "ON k.repository = r.repository AND k.digest = r.manifest WHERE r.child = b.digest AND r.kind = 'blob')",
            (PRESENT, cutoff),
        )
    )
    return Removable(manifests, manifest_bytes, blobs, blob_bytes)


def _unkept(c: Connection, after: ManifestKey | None, limit: int) -> list[ManifestKey]:
    """The next `limit` manifests after `after` (by repository and digest) that `gc_kept` lacks."""
    where, parameters = "", []
    if after is not None:
        where, parameters = "(m.repository, m.digest) > (?, ?) AND ", [after.repository, after.digest]
    rows = c.execute(
        f"SELECT m.repository, m.digest FROM manifests m WHERE {where}NOT EXISTS "
        "(SELECT 1 FROM gc_kept k WHERE k.repository = m.repository AND k.digest = m.digest) "
        "ORDER BY m.repository, m.digest LIMIT ?",
        [*parameters, limit],
    ).fetchall()
    return [ManifestKey(*row) for row in rows]


def _remove_manifests(c: Connection, candidates: Sequence[ManifestKey], cutoff: float) -> list[RemovedManifest]:
    """Delete the candidates that are still old, untagged, no kept index's child, and whose subject
    (if any) is untagged. Parents go before their children, so this loops until nothing changes."""
    removed: list[RemovedManifest] = []
    pending = list(candidates)
    while pending:
        left = []
        for m in pending:
            row = c.execute(
                "SELECT size FROM manifests m WHERE repository = ? AND digest = ? AND created_at < ? "
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
            removed.append(RemovedManifest(m.repository, m.digest, row[0]))
        if len(left) == len(pending):
            break
        pending = left
    return removed


def _mark_blobs(c: Connection, after: str, cutoff: float, now: float, limit: int) -> MarkedBlobs:
    """Over the next `limit` blobs after digest `after`: mark `deleting` every present blob unused
    since `cutoff` that no manifest refers to; returns the page's blobs in that state (with those a
    crashed run left)."""
    last = one(
        c.execute(
            "SELECT MAX(digest) FROM (SELECT digest FROM blobs WHERE digest > ? ORDER BY digest LIMIT ?) AS page",
            (after, limit),
        )
    )[0]
    if last is None:
        return MarkedBlobs(None, [])
    c.execute(
        # `state || ''` and `last_used_at + 0`: walk the page by digest, not blobs_by_state (every old blob)
        "UPDATE blobs SET state = ?, last_used_at = ? WHERE digest > ? AND digest <= ? AND state || '' = ? "
        "AND last_used_at + 0 < ? "
        "AND NOT EXISTS (SELECT 1 FROM manifest_references r WHERE r.child = blobs.digest) "
        "AND NOT EXISTS (SELECT 1 FROM manifests m WHERE m.digest = blobs.digest)",
        (DELETING, now, after, last, PRESENT, cutoff),
    )
    rows = c.execute(
        "SELECT digest, size FROM blobs WHERE digest > ? AND digest <= ? AND state = ? ORDER BY digest",
        (after, last, DELETING),
    ).fetchall()
    return MarkedBlobs(last, [Blob(*row) for row in rows])


def _finishing(c: Connection, size: int) -> bool:
    """Whether an upload of `size` bytes exists, which may be finishing into a blob of that size."""
    return c.execute("SELECT 1 FROM uploads WHERE size = ? LIMIT 1", (size,)).fetchone() is not None


class Marks:
    """The manifests marked to keep (`GarbageQueries.marked`), and what the rest amounts to."""

    def __init__(self, session: Session, cutoff: float):
        self.session, self.cutoff = session, cutoff

    async def removable(self) -> Removable:
        """What a collection keeping the marked manifests would remove (read in one snapshot)."""
        return await self.session.run(lambda c: _removable(c, self.cutoff))

    async def unkept(self, after: ManifestKey | None, limit: int = MANIFEST_BATCH) -> list[ManifestKey]:
        """The next `limit` unmarked manifests after `after` (by repository and digest), as they are now."""
        return await self.session.run(lambda c: _unkept(c, after, limit))


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

    @contextlib.asynccontextmanager
    async def marked(self, cutoff: float, delete_untagged: bool) -> AsyncIterator[Marks]:
        """Mark every manifest to keep (see `_mark_kept`) in a temporary table of a session of its own,
        read in one snapshot; the table, and so the process's memory, never holds more than keys in
        the database's files. The marks go when the block ends."""
        async with self.db.session() as session:
            await session.run(lambda c: _mark_kept(c, cutoff, delete_untagged))
            yield Marks(session, cutoff)

    async def remove_manifests(self, candidates: Sequence[ManifestKey], cutoff: float) -> list[RemovedManifest]:
        """Delete those of `candidates` (unmarked when planned) that still qualify, each with its
        references, tags and blob link, in one transaction: created before `cutoff`, untagged, listed
        by no index, and whose subject (if any) is untagged. Returns those deleted."""
        return await self.db.write(lambda c: _remove_manifests(c, candidates, cutoff))

    async def mark_blobs(self, cutoff: float, after: str = "", limit: int = BLOB_BATCH) -> MarkedBlobs:
        """In one transaction over the next `limit` blobs by digest after `after`: mark unreferenced
        blobs unused since `cutoff` as `deleting`; returns that page's blobs in that state (with those
        a crashed collection left)."""
        now = time.time()
        return await self.db.write(lambda c: _mark_blobs(c, after, cutoff, now, limit))

    async def forget_blobs(self, digests: list[str]) -> None:
        """Drop the rows of `deleting` blobs whose bytes are gone, with their links and reviews, as the
        incremental collector does (`ReviewQueries.forget_blobs`; give at most BLOB_BATCH)."""
        await ReviewQueries(self.db).forget_blobs(digests)

    async def present_blobs(self, after: str, limit: int) -> list[Blob]:
        """The next `limit` present blobs by digest after `after`."""
        sql = "SELECT digest, size FROM blobs WHERE digest > ? AND state = ? ORDER BY digest LIMIT ?"
        return await self.db.read(lambda c: [Blob(*row) for row in c.execute(sql, (after, PRESENT, limit)).fetchall()])

    async def manifests_without_bytes(self) -> list[ManifestKey]:
        """The manifests whose bytes are no present blob (a problem: none should be)."""
        sql = (
            "SELECT repository, digest FROM manifests m WHERE NOT EXISTS "
            "(SELECT 1 FROM blobs b WHERE b.digest = m.digest AND b.state = ?) ORDER BY repository, digest"
        )
        return await self.db.scan(lambda c: [ManifestKey(*row) for row in c.execute(sql, (PRESENT,)).fetchall()])

    async def missing_blob_references(self, after: Reference | None, limit: int) -> list[Reference]:
        """The next `limit` blob references (by repository, manifest, child) after `after` whose blob is
        not present: problems, or in a pull-through cache, blobs not pulled yet."""
        where, parameters = "", []
        if after is not None:
            where, parameters = "(r.repository, r.manifest, r.child) > (?, ?, ?) AND ", [*astuple(after)]
        sql = (
            f"SELECT repository, manifest, child FROM manifest_references r WHERE {where}r.kind = 'blob' "
            "AND NOT EXISTS (SELECT 1 FROM blobs b WHERE b.digest = r.child AND b.state = ?) "
            "ORDER BY repository, manifest, child LIMIT ?"
        )
        rows = await self.db.scan(lambda c: c.execute(sql, [*parameters, PRESENT, limit]).fetchall())
        return [Reference(*row) for row in rows]

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
