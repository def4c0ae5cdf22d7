"""Online garbage collection from the metadata index: what nothing refers to any more is deleted
while pushes and pulls go on.

Kept: every tagged manifest and, without `delete_untagged`, every manifest; the children of kept
indexes; the referrers (signatures, attestations) of kept manifests; the blobs and manifest bytes
that kept manifests refer to; and anything pushed, mounted or touched within the grace period.
Removed: referrers whose subject is gone; with `delete_untagged`, manifests no tag reaches; blobs
nothing refers to; uploads untouched for `purge_after`. Blobs go in two steps (marked `deleting`,
bytes deleted, rows dropped), so a concurrent push either keeps a blob or sees it gone and uploads
it again; a manifest is never accepted with a reference to a blob being deleted.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections import defaultdict
from dataclasses import asdict, dataclass

from registry.config import Settings, parse_duration
from registry.layout import blob_key, upload_prefix
from storage.drivers import Driver
from storage.index import Index
from storage.index.collection import Collection, Snapshot

log = logging.getLogger("registry.gc")

LOCK_TTL_S = 600.0
DELETE_CONCURRENCY = 16


class CollectorBusy(Exception):
    """Another collection holds the lock."""


@dataclass
class Report:
    """What a collection did (or, dry, would do)."""

    dry_run: bool
    delete_untagged: bool
    manifests_removed: int = 0
    manifest_bytes_removed: int = 0
    blobs_removed: int = 0
    blob_bytes_removed: int = 0
    uploads_purged: int = 0
    upload_bytes_purged: int = 0
    manifests_kept: int = 0
    blobs_kept: int = 0
    blob_bytes_kept: int = 0
    seconds: float = 0.0

    def summary(self) -> str:
        verb = "would remove" if self.dry_run else "removed"
        return (
            f"{verb} {self.manifests_removed} manifests, {self.blobs_removed} blobs "
            f"({_mib(self.blob_bytes_removed)}), {self.uploads_purged} abandoned uploads "
            f"({_mib(self.upload_bytes_purged)}); kept {self.manifests_kept} manifests, {self.blobs_kept} blobs "
            f"({_mib(self.blob_bytes_kept)}); {self.seconds:.2f}s"
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


def _mib(size: int) -> str:
    return f"{size / (1 << 20):.1f} MiB"


def kept_manifests(snapshot: Snapshot, cutoff: float, delete_untagged: bool) -> set[tuple[str, str]]:
    """(repository, digest) of every manifest to keep: the roots (tagged or young manifests; with
    `delete_untagged` off, every manifest that is not a referrer of a missing subject), then the
    children and referrers of what is kept."""
    present = {(m.repository, m.digest) for m in snapshot.manifests}
    children: dict[tuple[str, str], list[str]] = defaultdict(list)
    for repository, parent, child in snapshot.children:
        children[(repository, parent)].append(child)
    referrers: dict[tuple[str, str], list[str]] = defaultdict(list)
    for m in snapshot.manifests:
        if m.subject:
            referrers[(m.repository, m.subject)].append(m.digest)

    def is_root(m) -> bool:
        if m.tagged or m.created_at >= cutoff:
            return True
        if delete_untagged:
            return False
        return m.subject is None or (m.repository, m.subject) in present

    kept: set[tuple[str, str]] = set()
    stack = [(m.repository, m.digest) for m in snapshot.manifests if is_root(m)]
    while stack:
        node = stack.pop()
        if node in kept or node not in present:
            continue
        kept.add(node)
        repository = node[0]
        stack += [(repository, d) for d in children[node]]
        stack += [(repository, d) for d in referrers[node]]
    return kept


def garbage_blobs(snapshot: Snapshot, kept: set[tuple[str, str]], cutoff: float) -> list[tuple[str, int]]:
    """(digest, size) of the blobs a collection keeping `kept` would delete."""
    referenced = {digest for _, digest in kept}
    referenced |= {blob for repository, manifest, blob in snapshot.blob_refs if (repository, manifest) in kept}
    return [
        (b.digest, b.size)
        for b in snapshot.blobs
        if b.digest not in referenced and (b.state != "present" or b.last_used_at < cutoff)
    ]


class Collector:
    """Collects garbage of one index and driver; one collection at a time across every process
    sharing the index."""

    def __init__(self, index: Index, driver: Driver, grace_s: float, purge_after_s: float):
        self.index, self.driver = index, driver
        self.queries = Collection(index.db)
        self.grace_s, self.purge_after_s = grace_s, purge_after_s

    @classmethod
    def configured(cls, index: Index, driver: Driver, settings: Settings) -> Collector:
        """The collector `settings` describe (`gc.grace`, `uploads.purge_after`)."""
        return cls(index, driver, parse_duration(settings.gc.grace), parse_duration(settings.uploads.purge_after))

    async def run(self, *, dry_run: bool = False, delete_untagged: bool = False) -> Report:
        """Collect (or, dry, only plan); raises CollectorBusy when another collection is running."""
        holder = uuid.uuid4().hex
        if not await self.queries.lock(holder, LOCK_TTL_S):
            raise CollectorBusy
        try:
            started = time.time()
            report = Report(dry_run, delete_untagged)
            await (self._plan(report, started) if dry_run else self._collect(report, started, holder))
            manifests, blobs, size = await self.queries.totals()
            report.manifests_kept = manifests - (report.manifests_removed if dry_run else 0)
            report.blobs_kept = blobs - (report.blobs_removed if dry_run else 0)
            report.blob_bytes_kept = size - (report.blob_bytes_removed if dry_run else 0)
            report.seconds = time.time() - started
            if not dry_run:
                await self.queries.record_run(started, report.to_json())
            log.info("garbage collection: %s", report.summary())
            return report
        finally:
            await self.queries.unlock(holder)

    async def _plan(self, report: Report, started: float) -> None:
        cutoff = started - self.grace_s
        snapshot = await self.queries.snapshot()
        kept = kept_manifests(snapshot, cutoff, report.delete_untagged)
        removed = [m for m in snapshot.manifests if (m.repository, m.digest) not in kept]
        report.manifests_removed = len(removed)
        report.manifest_bytes_removed = sum(m.size for m in removed)
        garbage = garbage_blobs(snapshot, kept, cutoff)
        report.blobs_removed = len(garbage)
        report.blob_bytes_removed = sum(size for _, size in garbage)
        stale = await self.queries.stale_upload_totals(started - self.purge_after_s)
        report.uploads_purged, report.upload_bytes_purged = stale

    async def _collect(self, report: Report, started: float, holder: str) -> None:
        cutoff = started - self.grace_s
        snapshot = await self.queries.snapshot()
        kept = kept_manifests(snapshot, cutoff, report.delete_untagged)
        candidates = [(m.repository, m.digest) for m in snapshot.manifests if (m.repository, m.digest) not in kept]
        removed = await self.queries.remove_manifests(candidates, cutoff)
        report.manifests_removed = len(removed)
        report.manifest_bytes_removed = sum(size for _, _, size in removed)

        await self.queries.lock(holder, LOCK_TTL_S)
        doomed = await self.queries.mark_blobs(cutoff)
        await self._delete_all([blob_key(digest) for digest, _ in doomed])
        await self.queries.forget_blobs([digest for digest, _ in doomed])
        report.blobs_removed = len(doomed)
        report.blob_bytes_removed = sum(size for _, size in doomed)

        await self.queries.lock(holder, LOCK_TTL_S)
        stale = await self.queries.stale_uploads(started - self.purge_after_s)
        await self._delete_all([upload_prefix(upload_id) for upload_id, _ in stale])
        report.uploads_purged = len(stale)
        report.upload_bytes_purged = sum(size for _, size in stale)

    async def _delete_all(self, keys: list[str]) -> None:
        gate = asyncio.Semaphore(DELETE_CONCURRENCY)

        async def delete(key: str) -> None:
            async with gate:
                await self.driver.delete(key)

        await asyncio.gather(*(delete(k) for k in keys))

    async def last_report(self) -> Report | None:
        """The report of the last collection of this index (by any process), if any."""
        text = await self.queries.last_run()
        return None if text is None else Report(**json.loads(text))


async def collect_every(collector: Collector, interval_s: float) -> None:
    """Collect garbage every `interval_s` seconds, forever; a run another process holds is skipped."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            await collector.run()
        except CollectorBusy:
            log.info("garbage collection skipped: another collection is running")
        except Exception:
            log.exception("garbage collection failed")
