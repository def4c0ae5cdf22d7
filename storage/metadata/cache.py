"""The pull-through cache's queries: cached manifests and tags, batched pull times, and what eviction
reads and deletes. A cache repository is an ordinary repository whose name starts with an upstream's
prefix; what a prefix means is the caller's business (registry/proxy/)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from storage.metadata.database import Connection, Database, one
from storage.metadata.reviews import queue_manifest_dependents, queue_replaced
from storage.metadata.rows import ManifestRecord, put_manifest_rows
from storage.metadata.schema import PRESENT


@dataclass(frozen=True, slots=True)
class CachedTag:
    """A tag's manifest, and when its upstream last confirmed it (None: the tag was pushed here)."""

    manifest: ManifestRecord
    checked_at: float | None


@dataclass(frozen=True, slots=True)
class CacheEntry:
    """A manifest of a cache repository, and when it was last pulled (or cached)."""

    repository: str
    digest: str
    used_at: float


def _under(column: str, prefixes: Sequence[str]) -> tuple[str, tuple[str | int, ...]]:
    """A predicate that `column` is a repository under one of `prefixes`, and its parameters."""
    if not prefixes:
        return "1 = 0", ()
    terms = " OR ".join(f"substr({column}, 1, ?) = ?" for _ in prefixes)
    parameters: tuple[str | int, ...] = ()
    for prefix in prefixes:
        parameters += (len(prefix) + 1, prefix + "/")
    return f"({terms})", parameters


def _blob_children(c: Connection, repository: str, digest: str) -> list[str]:
    rows = c.execute(
        "SELECT child FROM manifest_references WHERE repository = ? AND manifest = ? AND kind = 'blob'",
        (repository, digest),
    ).fetchall()
    return [row[0] for row in rows]


def _evict(c: Connection, repository: str, digest: str, children: list[str]) -> None:
    """Delete a cached manifest (whose blobs are `children`) with its tags and references, and unlink
    from its repository the blobs no other manifest there refers to (their bytes go when the
    collector finds them unused)."""
    c.execute("DELETE FROM manifests WHERE repository = ? AND digest = ?", (repository, digest))
    c.execute("DELETE FROM manifest_references WHERE repository = ? AND manifest = ?", (repository, digest))
    c.execute("DELETE FROM tags WHERE repository = ? AND digest = ?", (repository, digest))
    for child in [digest, *children]:
        used = c.execute(
            "SELECT 1 FROM manifest_references WHERE repository = ? AND child = ? "
            "UNION ALL SELECT 1 FROM manifests WHERE repository = ? AND digest = ? LIMIT 1",
            (repository, child, repository, child),
        ).fetchone()
        if used is None:
            c.execute("DELETE FROM repository_blobs WHERE repository = ? AND digest = ?", (repository, child))
    if c.execute("SELECT 1 FROM repository_blobs WHERE repository = ? LIMIT 1", (repository,)).fetchone() is None:
        c.execute("DELETE FROM repositories WHERE name = ?", (repository,))


def _cached_sizes(c: Connection, digests: Sequence[str], prefixes: Sequence[str], every_prefix: Sequence[str]) -> int:
    """The bytes of those of `digests` that `cached_bytes(prefixes, every_prefix)` counts."""
    ours, ours_parameters = _under("r.repository", prefixes)
    cache, cache_parameters = _under("r.repository", every_prefix)
    total = 0
    for digest in digests:
        row = c.execute(
            "SELECT b.size FROM blobs b WHERE b.digest = ? AND b.state = ? "
            f"AND EXISTS (SELECT 1 FROM repository_blobs r WHERE r.digest = b.digest AND {ours}) "
            f"AND NOT EXISTS (SELECT 1 FROM repository_blobs r WHERE r.digest = b.digest AND NOT {cache})",
            (digest, PRESENT, *ours_parameters, *cache_parameters),
        ).fetchone()
        total += 0 if row is None else int(row[0])
    return total


class CacheQueries:
    """Queries of the pull-through cache over `db` (`Metadata.cache` gives those of its database); the
    reviews its changes queue are due `review_delay_s` later."""

    def __init__(self, db: Database, review_delay_s: float = 3600.0):
        self.db = db
        self.review_delay_s = review_delay_s

    async def put_manifest(
        self,
        repository: str,
        manifest: ManifestRecord,
        blobs: dict[str, int],
        children: dict[str, int],
        tag: str | None,
        description: str | None = None,
    ) -> None:
        """Record a manifest fetched from an upstream (its bytes stored), its references, and `tag`
        pointing at it as confirmed now (with the image's `description`). The blobs and children it
        refers to need not be cached yet: they are fetched when asked for. Raises BlobCollecting when
        the collector is deleting its bytes."""
        now = time.time()

        def put(c: Connection) -> None:
            queue_replaced(c, repository, manifest.digest, tag, now + self.review_delay_s)
            put_manifest_rows(c, repository, manifest, blobs, children, tag, now, now, description)

        await self.db.write(put)

    async def tagged(self, repository: str, tag: str) -> CachedTag | None:
        """The manifest `tag` of `repository` points at, with when an upstream last confirmed it."""
        row = await self.db.read(
            lambda c: c.execute(
                "SELECT m.digest, m.media_type, m.size, m.artifact_type, m.subject, m.annotations, t.checked_at "
                "FROM tags t JOIN manifests m ON m.repository = t.repository AND m.digest = t.digest "
                "WHERE t.repository = ? AND t.name = ?",
                (repository, tag),
            ).fetchone()
        )
        return None if row is None else CachedTag(ManifestRecord(*row[:6]), row[6])

    async def confirm_tag(self, repository: str, tag: str, digest: str) -> bool:
        """Record that the upstream confirmed now that `tag` is still `digest`; False when the tag
        points elsewhere meanwhile (or is gone)."""
        now = time.time()
        return await self.db.write(
            lambda c: (
                c.execute(
                    "UPDATE tags SET checked_at = ? WHERE repository = ? AND name = ? AND digest = ?",
                    (now, repository, tag, digest),
                ).rowcount
                == 1
            )
        )

    async def record_pulls(self, manifests: dict[tuple[str, str], float], blobs: dict[str, float]) -> None:
        """Record when each (repository, digest) of `manifests` was last pulled, and mark each blob of
        `blobs` used then (so the collector keeps it for a grace period), in one transaction."""

        def record(c: Connection) -> None:
            c.executemany(
                "UPDATE manifests SET pulled_at = ? WHERE repository = ? AND digest = ? "
                "AND (pulled_at IS NULL OR pulled_at < ?)",
                [(at, repository, digest, at) for (repository, digest), at in manifests.items()],
            )
            c.executemany(
                "UPDATE blobs SET last_used_at = ? WHERE digest = ? AND state = ? AND last_used_at < ?",
                [(at, digest, PRESENT, at) for digest, at in blobs.items()],
            )

        await self.db.write(record)

    async def cached_bytes(self, prefixes: Sequence[str], every_prefix: Sequence[str]) -> int:
        """The bytes of the present blobs linked in a repository under `prefixes` and in none outside
        `every_prefix` (every cache's prefixes): content also pushed here is not the cache's."""
        ours, ours_parameters = _under("r.repository", prefixes)
        cache, cache_parameters = _under("r.repository", every_prefix)
        sql = (
            "SELECT COALESCE(SUM(b.size), 0) FROM blobs b WHERE b.state = ? "
            f"AND EXISTS (SELECT 1 FROM repository_blobs r WHERE r.digest = b.digest AND {ours}) "
            f"AND NOT EXISTS (SELECT 1 FROM repository_blobs r WHERE r.digest = b.digest AND NOT {cache})"
        )
        parameters = (PRESENT, *ours_parameters, *cache_parameters)
        total: int = (await self.db.scan(lambda c: one(c.execute(sql, parameters))))[0]
        return total

    async def least_recently_pulled(self, prefixes: Sequence[str], before: float, limit: int) -> list[CacheEntry]:
        """Up to `limit` manifests of repositories under `prefixes` last pulled (or cached) before
        `before`, least recently first."""
        under, parameters = _under("repository", prefixes)
        sql = (
            "SELECT repository, digest, COALESCE(pulled_at, created_at) AS used FROM manifests "
            f"WHERE {under} AND COALESCE(pulled_at, created_at) < ? ORDER BY used, repository, digest LIMIT ?"
        )
        rows = await self.db.scan(lambda c: c.execute(sql, (*parameters, before, limit)).fetchall())
        return [CacheEntry(*row) for row in rows]

    async def evict(
        self, repository: str, digest: str, before: float, prefixes: Sequence[str], every_prefix: Sequence[str]
    ) -> int | None:
        """Evict a cached manifest if it was still last pulled before `before`: delete it with its tags
        and references, and unlink the blobs no other manifest of its repository refers to. Returns by
        how many bytes that lowered `cached_bytes(prefixes, every_prefix)`, or None when the manifest
        is gone or was pulled meanwhile."""

        def evict(c: Connection) -> int | None:
            row = c.execute(
                "SELECT COALESCE(pulled_at, created_at) FROM manifests WHERE repository = ? AND digest = ?",
                (repository, digest),
            ).fetchone()
            if row is None or row[0] >= before:
                return None
            children = _blob_children(c, repository, digest)
            touched = [digest, *children]
            counted = _cached_sizes(c, touched, prefixes, every_prefix)
            queue_manifest_dependents(c, [(repository, digest)], time.time() + self.review_delay_s)
            _evict(c, repository, digest, children)
            return counted - _cached_sizes(c, touched, prefixes, every_prefix)

        return await self.db.write(evict)
