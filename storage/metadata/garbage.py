"""The garbage collector's queries: a snapshot of what refers to what, and the re-checked deletes.

Decisions are planned from a snapshot, then every delete re-checks its condition inside its own
transaction, so a push that lands meanwhile is never undone: it either happened before the check
(and the row is kept) or it sees the row gone (and uploads again).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from storage.metadata.store import DELETING, PRESENT, placeholders


@dataclass(frozen=True, slots=True)
class ManifestNode:
    repository: str
    digest: str
    subject: str | None
    created_at: float
    size: int
    tagged: bool


@dataclass(frozen=True, slots=True)
class BlobRow:
    digest: str
    size: int
    state: str
    last_used_at: float


@dataclass
class Snapshot:
    """What refers to what, read in one transaction."""

    manifests: list[ManifestNode]
    children: list[tuple[str, str, str]]  # (repository, index, child manifest)
    blob_refs: list[tuple[str, str, str]]  # (repository, manifest, blob)
    blobs: list[BlobRow]


def _snapshot(c) -> Snapshot:
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
        [(r, m, child) for r, m, child, kind in references if kind == "manifest"],
        [(r, m, child) for r, m, child, kind in references if kind == "blob"],
        blobs,
    )


def _remove_manifests(c, candidates: list[tuple[str, str]], cutoff: float) -> list[tuple[str, str, int]]:
    """Delete the candidates that are still old, untagged, no kept index's child, and whose subject
    (if any) is untagged. Parents go before their children, so this loops until nothing changes."""
    removed: list[tuple[str, str, int]] = []
    pending = list(candidates)
    while pending:
        left = []
        for repository, digest in pending:
            row = c.execute(
                "SELECT size FROM manifests m WHERE repository = ? AND digest = ? AND created_at < ? "
                "AND NOT EXISTS (SELECT 1 FROM tags t WHERE t.repository = m.repository AND t.digest = m.digest) "
                "AND NOT EXISTS (SELECT 1 FROM manifest_references r WHERE r.repository = m.repository "
                "AND r.child = m.digest AND r.kind = 'manifest') "
                "AND (m.subject IS NULL OR NOT EXISTS "
                "(SELECT 1 FROM tags s WHERE s.repository = m.repository AND s.digest = m.subject))",
                (repository, digest, cutoff),
            ).fetchone()
            if row is None:
                left.append((repository, digest))
                continue
            c.execute("DELETE FROM manifests WHERE repository = ? AND digest = ?", (repository, digest))
            c.execute("DELETE FROM manifest_references WHERE repository = ? AND manifest = ?", (repository, digest))
            c.execute("DELETE FROM repository_blobs WHERE repository = ? AND digest = ?", (repository, digest))
            removed.append((repository, digest, row[0]))
        if len(left) == len(pending):
            break
        pending = left
    return removed


def _mark_blobs(c, cutoff: float, now: float) -> list[tuple[str, int]]:
    """Mark `deleting` every present blob unused since `cutoff` that no manifest refers to; returns
    every blob in that state (with those a crashed run left)."""
    c.execute(
        "UPDATE blobs SET state = ?, last_used_at = ? WHERE state = ? AND last_used_at < ? "
        "AND NOT EXISTS (SELECT 1 FROM manifest_references r WHERE r.child = blobs.digest) "
        "AND NOT EXISTS (SELECT 1 FROM manifests m WHERE m.digest = blobs.digest)",
        (DELETING, now, PRESENT, cutoff),
    )
    return c.execute("SELECT digest, size FROM blobs WHERE state = ? ORDER BY digest", (DELETING,)).fetchall()


def _finishing(c, size: int) -> bool:
    """Whether an upload of `size` bytes exists, which may be finishing into a blob of that size."""
    return c.execute("SELECT 1 FROM uploads WHERE size = ? LIMIT 1", (size,)).fetchone() is not None


class GarbageQueries:
    """Queries of the garbage collector over a database (see sqlite.py)."""

    def __init__(self, db):
        self.db = db

    async def lock(self, holder: str, ttl_s: float) -> bool:
        """Take or renew the collector's lease for `holder`; False while another holder has it."""
        now = time.time()

        def take(c) -> bool:
            row = c.execute("SELECT holder, expires_at FROM locks WHERE name = 'gc'").fetchone()
            if row is None:
                c.execute("INSERT INTO locks (name, holder, expires_at) VALUES ('gc', ?, ?)", (holder, now + ttl_s))
                return True
            if row[0] != holder and row[1] > now:
                return False
            c.execute("UPDATE locks SET holder = ?, expires_at = ? WHERE name = 'gc'", (holder, now + ttl_s))
            return True

        return await self.db.write(take)

    async def unlock(self, holder: str) -> None:
        await self.db.write(lambda c: c.execute("DELETE FROM locks WHERE name = 'gc' AND holder = ?", (holder,)))

    async def snapshot(self) -> Snapshot:
        return await self.db.scan(_snapshot)

    async def remove_manifests(self, candidates: list[tuple[str, str]], cutoff: float) -> list[tuple[str, str, int]]:
        """Delete those of `candidates` that still qualify (see _remove_manifests); returns
        (repository, digest, size) of each deleted."""
        return await self.db.write(lambda c: _remove_manifests(c, candidates, cutoff))

    async def mark_blobs(self, cutoff: float) -> list[tuple[str, int]]:
        """Mark unreferenced blobs unused since `cutoff` as `deleting`; returns (digest, size) of
        every blob in that state."""
        now = time.time()
        return await self.db.write(lambda c: _mark_blobs(c, cutoff, now))

    async def forget_blobs(self, digests: list[str]) -> None:
        """Drop the rows of `deleting` blobs whose bytes are gone."""

        def forget(c) -> None:
            c.executemany("DELETE FROM repository_blobs WHERE digest = ?", [(d,) for d in digests])
            c.executemany("DELETE FROM blobs WHERE digest = ? AND state = ?", [(d, DELETING) for d in digests])

        await self.db.write(forget)

    async def known_blobs(self, digests: list[str]) -> set[str]:
        """Those of `digests` that have a row (in any state)."""
        if not digests:
            return set()
        sql = f"SELECT digest FROM blobs WHERE digest IN ({placeholders(len(digests))})"
        return await self.db.read(lambda c: {row[0] for row in c.execute(sql, digests).fetchall()})

    async def mark_orphans(self, blobs: list[tuple[str, int]]) -> list[str]:
        """Give each of `blobs` (digest, size of its stored bytes) that still has no row a row in state
        `deleting`, as `mark_blobs` does, so that a push of it meanwhile waits or fails and uploads
        again; returns the digests marked. A blob a push linked meanwhile keeps its row and bytes, and
        so does one an upload of its size may be finishing into (its bytes are placed before its row
        is written: a final PUT killed in between is retried and links them), until that upload is
        finished or purged."""
        now = time.time()

        def mark(c) -> list[str]:
            marked = []
            for digest, size in blobs:
                if _finishing(c, size):
                    continue
                cursor = c.execute(
                    "INSERT INTO blobs (digest, size, state, created_at, last_used_at) VALUES (?, ?, ?, ?, ?) "
                    "ON CONFLICT (digest) DO NOTHING",
                    (digest, size, DELETING, now, now),
                )
                if cursor.rowcount == 1:
                    marked.append(digest)
            return marked

        return await self.db.write(mark)

    async def markable_orphans(self, blobs: list[tuple[str, int]]) -> list[str]:
        """The digests of `blobs` that `mark_orphans` would mark now (for a dry run)."""

        def markable(c) -> list[str]:
            unknown = [
                (d, size) for d, size in blobs if not c.execute("SELECT 1 FROM blobs WHERE digest = ?", (d,)).fetchone()
            ]
            return [d for d, size in unknown if not _finishing(c, size)]

        return await self.db.scan(markable)

    async def unknown_uploads(self, upload_ids: list[str]) -> list[str]:
        """Those of `upload_ids` that name no upload."""
        if not upload_ids:
            return []
        sql = f"SELECT id FROM uploads WHERE id IN ({placeholders(len(upload_ids))})"
        known = await self.db.read(lambda c: {row[0] for row in c.execute(sql, upload_ids).fetchall()})
        return [i for i in upload_ids if i not in known]

    async def stale_uploads(self, cutoff: float) -> list[tuple[str, int]]:
        """Forget uploads untouched since `cutoff`; returns (id, size) of each, whose bytes remain
        for the caller to delete."""

        def purge(c) -> list[tuple[str, int]]:
            stale = c.execute("SELECT id, size FROM uploads WHERE updated_at < ?", (cutoff,)).fetchall()
            c.executemany("DELETE FROM upload_chunks WHERE upload = ?", [(i,) for i, _ in stale])
            c.executemany("DELETE FROM uploads WHERE id = ?", [(i,) for i, _ in stale])
            return stale

        return await self.db.write(purge)

    async def stale_upload_totals(self, cutoff: float) -> tuple[int, int]:
        """(count, bytes) of the uploads untouched since `cutoff`."""
        return await self.db.scan(
            lambda c: c.execute(
                "SELECT COUNT(*), CAST(COALESCE(SUM(size), 0) AS BIGINT) FROM uploads WHERE updated_at < ?", (cutoff,)
            ).fetchone()
        )

    async def upload_ids(self) -> list[str]:
        return await self.db.scan(lambda c: [row[0] for row in c.execute("SELECT id FROM uploads").fetchall()])

    async def totals(self) -> tuple[int, int, int]:
        """(manifests, present blobs, bytes of present blobs)."""

        def count(c) -> tuple[int, int, int]:
            manifests = c.execute("SELECT COUNT(*) FROM manifests").fetchone()[0]
            blobs, size = c.execute(
                "SELECT COUNT(*), CAST(COALESCE(SUM(size), 0) AS BIGINT) FROM blobs WHERE state = ?", (PRESENT,)
            ).fetchone()
            return manifests, blobs, size

        return await self.db.scan(count)

    async def record_run(self, started_at: float, report: str, keep: int = 100) -> None:
        """Store a run's report (JSON), keeping the newest `keep`."""

        def record(c) -> None:
            c.execute("INSERT INTO gc_runs (started_at, report) VALUES (?, ?)", (started_at, report))
            c.execute(
                "DELETE FROM gc_runs WHERE started_at < (SELECT MIN(started_at) FROM "
                "(SELECT started_at FROM gc_runs ORDER BY started_at DESC LIMIT ?) AS newest)",
                (keep,),
            )

        await self.db.write(record)

    async def last_run(self) -> str | None:
        row = await self.db.read(
            lambda c: c.execute("SELECT report FROM gc_runs ORDER BY started_at DESC LIMIT 1").fetchone()
        )
        return None if row is None else row[0]
