"""Online garbage collection from the metadata: what nothing refers to any more is deleted
while pushes and pulls go on.

Kept: every tagged manifest and, without `delete_untagged`, every manifest; the children of kept
indexes; the referrers (signatures, attestations) of kept manifests; the blobs and manifest bytes
that kept manifests refer to; and anything pushed, mounted or touched within the grace period.
Removed: referrers whose subject is gone; with `delete_untagged`, manifests no tag reaches; blobs
nothing refers to; uploads untouched for `purge_after`. Blobs go in two steps (marked `deleting`,
bytes deleted, rows dropped), so a concurrent push either keeps a blob or sees it gone and uploads
it again; a manifest is never accepted with a reference to a blob being deleted.

Memory does not grow with the index: the manifests to keep are marked inside the database (a
temporary table: `GarbageQueries.marked`), the rest is read a page of keys at a time, and every
delete is a write transaction of at most MANIFEST_BATCH manifests or BLOB_BATCH blobs.

Then what storage holds and the metadata does not know, older than the grace period: orphans (bytes
under `blobs/` without a row, from a crash between storing a blob and linking it; upload folders
without an upload), deleted with the same two steps (an orphan blob stays while an upload of its
size exists: a final PUT killed between placing the bytes and their row links them when retried),
and the driver's leftovers of writes killed mid-way (`Driver.abandoned`). A write in progress is
never taken for a leftover: on disk the writer's lock says it lives; on S3 it is taken only after a
whole grace period without receiving one part (16 MiB), and its commit then fails, storing nothing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import asdict, dataclass
from typing import TypeVar

from registry.config import ProxySettings, Settings, parse_duration
from registry.errors import DigestInvalid
from registry.layout import blob_key, upload_prefix
from registry.names import parse_digest
from registry.proxy.eviction import evict
from storage.drivers import Driver, Entry
from storage.errors import WriteConflict
from storage.metadata import BLOB_BATCH, MANIFEST_BATCH, Blob, ManifestKey, Metadata, RemovedManifest

log = logging.getLogger("registry.gc")

LOCK_TTL_S = 600.0
DELETE_CONCURRENCY = 16
ORPHAN_BATCH = 500  # stored keys checked against the metadata at once
T = TypeVar("T")


async def batches(items: AsyncIterator[T], size: int) -> AsyncIterator[list[T]]:
    """`items` in lists of `size`, the last one shorter (none when there are no items): one list at a
    time in memory, however long the stream."""
    batch: list[T] = []
    async for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


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
    orphans_removed: int = 0  # blobs and upload folders in storage the metadata did not know
    orphan_bytes_removed: int = 0
    leftovers_removed: int = 0  # the driver's leftovers of writes killed mid-way
    leftover_bytes_removed: int = 0
    cached_manifests_evicted: int = 0  # pull-through cache content above its caps, least recently pulled
    manifests_kept: int = 0
    blobs_kept: int = 0
    blob_bytes_kept: int = 0
    seconds: float = 0.0

    def summary(self) -> str:
        verb = "would remove" if self.dry_run else "removed"
        evicted = f" ({self.cached_manifests_evicted} evicted from caches)" if self.cached_manifests_evicted else ""
        return (
            f"{verb} {self.manifests_removed} manifests{evicted}, {self.blobs_removed} blobs "
            f"({_mib(self.blob_bytes_removed)}), {self.uploads_purged} abandoned uploads "
            f"({_mib(self.upload_bytes_purged)}), {self.orphans_removed} orphans in storage "
            f"({_mib(self.orphan_bytes_removed)}), {self.leftovers_removed} leftovers of abandoned writes "
            f"({_mib(self.leftover_bytes_removed)}); kept {self.manifests_kept} manifests, {self.blobs_kept} blobs "
            f"({_mib(self.blob_bytes_kept)}); {self.seconds:.2f}s"
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


def _mib(size: int) -> str:
    return f"{size / (1 << 20):.1f} MiB"


class Collector:
    """Collects garbage of one metadata store and driver; one collection at a time across every
    process sharing the metadata."""

    def __init__(
        self,
        metadata: Metadata,
        driver: Driver,
        grace_s: float,
        purge_after_s: float,
        proxy: ProxySettings | None = None,
    ):
        self.metadata, self.driver = metadata, driver
        self.queries = metadata.garbage
        self.grace_s, self.purge_after_s = grace_s, purge_after_s
        self.proxy = proxy or ProxySettings()

    @classmethod
    def configured(cls, metadata: Metadata, driver: Driver, settings: Settings) -> Collector:
        """The collector `settings` describe (`gc.grace`, `uploads.purge_after`, the caches' caps)."""
        grace, purge_after = parse_duration(settings.gc.grace), parse_duration(settings.uploads.purge_after)
        return cls(metadata, driver, grace, purge_after, settings.proxy)

    async def run(self, *, dry_run: bool = False, delete_untagged: bool = False, storage_only: bool = False) -> Report:
        """Collect (or, dry, only plan); with `storage_only`, only what storage holds and the metadata
        does not know (see `_sweep_storage`). Raises CollectorBusy when another collection is running."""
        holder = uuid.uuid4().hex
        if not await self.queries.lock(holder, LOCK_TTL_S):
            raise CollectorBusy
        try:
            started = time.time()
            report = Report(dry_run, delete_untagged)
            if storage_only:
                await self._sweep_storage(report, started - self.grace_s, holder)
            else:
                await (self._plan(report, started, holder) if dry_run else self._collect(report, started, holder))
            totals = await self.queries.totals()
            report.manifests_kept = totals.manifests - (report.manifests_removed if dry_run else 0)
            report.blobs_kept = totals.blobs - (report.blobs_removed if dry_run else 0)
            report.blob_bytes_kept = totals.blob_bytes - (report.blob_bytes_removed if dry_run else 0)
            report.seconds = time.time() - started
            if not dry_run:
                await self.queries.record_run(started, report.to_json())
            log.info("garbage collection: %s", report.summary())
            return report
        finally:
            await self.queries.unlock(holder)

    async def _plan(self, report: Report, started: float, holder: str) -> None:
        cutoff = started - self.grace_s
        async with self.queries.marked(cutoff, report.delete_untagged) as marks:
            await self._renew(holder)
            removable = await marks.removable()
        report.manifests_removed, report.manifest_bytes_removed = removable.manifests, removable.manifest_bytes
        report.blobs_removed, report.blob_bytes_removed = removable.blobs, removable.blob_bytes
        stale = await self.queries.stale_upload_totals(started - self.purge_after_s)
        report.uploads_purged, report.upload_bytes_purged = stale.uploads, stale.size
        await self._sweep_storage(report, cutoff, holder)

    async def _collect(self, report: Report, started: float, holder: str) -> None:
        cutoff = started - self.grace_s
        evicted = await evict(self.metadata.cache, self.proxy, cutoff)
        report.cached_manifests_evicted = evicted
        report.manifests_removed += evicted
        await self._remove_manifests(report, cutoff, holder)
        await self._remove_blobs(report, cutoff, holder)

        await self._renew(holder)
        stale = await self.queries.stale_uploads(started - self.purge_after_s)
        await self._delete_all([upload_prefix(u.id) for u in stale])
        report.uploads_purged = len(stale)
        report.upload_bytes_purged = sum(u.size for u in stale)

        await self._sweep_storage(report, cutoff, holder)

    async def _remove_manifests(self, report: Report, cutoff: float, holder: str) -> None:
        """Delete the manifests the mark did not keep, a page of MANIFEST_BATCH at a time, each page in
        a write transaction of its own that re-checks every one. A manifest an index of a later page
        still listed is tried again once that page is done, until a pass removes nothing."""
        retry: list[ManifestKey] = []
        async with self.queries.marked(cutoff, report.delete_untagged) as marks:
            after: ManifestKey | None = None
            while page := await marks.unkept(after, MANIFEST_BATCH):
                after = page[-1]
                retry += await self._remove_counted(page, cutoff, report, holder)
        while retry:
            left: list[ManifestKey] = []
            for start in range(0, len(retry), MANIFEST_BATCH):
                left += await self._remove_counted(retry[start : start + MANIFEST_BATCH], cutoff, report, holder)
            if len(left) == len(retry):
                break
            retry = left

    async def _remove_counted(
        self, page: list[ManifestKey], cutoff: float, report: Report, holder: str
    ) -> list[ManifestKey]:
        """Renew the lease of `holder`, remove what `page` may lose and count it in `report`; returns
        the manifests of `page` that stayed."""
        await self._renew(holder)
        removed = await self._remove_page(page, cutoff)
        _count_removed(report, removed)
        gone = {(m.repository, m.digest) for m in removed}
        return [m for m in page if (m.repository, m.digest) not in gone]

    async def _remove_page(self, page: list[ManifestKey], cutoff: float) -> list[RemovedManifest]:
        """Remove what a page of manifests may lose, in one transaction; when that keeps conflicting with
        concurrent pushes (PostgreSQL), one manifest a transaction, leaving one that still conflicts to
        the next collection."""
        try:
            return await self.queries.remove_manifests(page, cutoff)
        except WriteConflict:
            if len(page) == 1:
                log.warning(
                    "garbage collection: %s@%s left for the next run (writes conflicted)",
                    page[0].repository,
                    page[0].digest,
                )
                return []
        removed: list[RemovedManifest] = []
        for manifest in page:
            removed += await self._remove_page([manifest], cutoff)
        return removed

    async def _remove_blobs(self, report: Report, cutoff: float, holder: str) -> None:
        """Walk the blobs by digest, BLOB_BATCH at a time: mark the unreferenced ones `deleting` (one
        transaction), delete their bytes, drop their rows (another). A page whose mark keeps conflicting
        with concurrent pushes (PostgreSQL) is tried again ten times smaller, down to one blob; the rest
        of the walk is then left to the next collection."""
        after, batch = "", BLOB_BATCH
        while True:
            await self._renew(holder)
            try:
                page = await self.queries.mark_blobs(cutoff, after, batch)
            except WriteConflict:
                if batch == 1:
                    log.warning(
                        "garbage collection: the blobs after %s left for the next run (writes conflicted)", after
                    )
                    return
                batch = max(1, batch // 10)
                continue
            batch = BLOB_BATCH
            if page.last is None:
                return
            after = page.last
            await self._delete_all([blob_key(b.digest) for b in page.blobs])
            await self.queries.forget_blobs([b.digest for b in page.blobs])
            report.blobs_removed += len(page.blobs)
            report.blob_bytes_removed += sum(b.size for b in page.blobs)

    async def _sweep_storage(self, report: Report, cutoff: float, holder: str) -> None:
        """Remove (unless `report.dry_run`: count) what storage holds, unchanged since `cutoff`, that
        the metadata does not know: orphan blobs and upload folders, and the driver's leftovers of
        abandoned writes. Streams the storage listing, holds one batch of keys at a time, and renews
        the lease of `holder` for each (raises CollectorBusy once it lost it)."""
        old_entries = (entry async for entry in self.driver.list("blobs/") if entry.modified < cutoff)
        async for entries in batches(old_entries, ORPHAN_BATCH):
            await self._renew(holder)
            await self._orphan_blobs(entries, report)
        old_folders = (
            (upload_id, size) async for upload_id, size, modified in _upload_folders(self.driver) if modified < cutoff
        )
        async for folders in batches(old_folders, ORPHAN_BATCH):
            await self._renew(holder)
            await self._orphan_uploads(folders, report)
        await self._renew(holder)
        async for leftover in self.driver.abandoned(cutoff, remove=not report.dry_run):
            report.leftovers_removed += 1
            report.leftover_bytes_removed += leftover.size

    async def _renew(self, holder: str) -> None:
        if not await self.queries.lock(holder, LOCK_TTL_S):
            raise CollectorBusy

    async def _orphan_blobs(self, entries: list[Entry], report: Report) -> None:
        """Remove those of `entries` (under `blobs/`) that no blob row knows and no upload may be
        finishing into (see `GarbageQueries.mark_orphans`), in two steps: a `deleting` row first (a push
        of the digest meanwhile waits, or fails and uploads again), then the bytes, then the row."""
        by_digest: dict[str, Entry] = {}
        strays: list[Entry] = []  # not a blob's key: no push writes it
        for entry in entries:
            digest = digest_of_key(entry.key)
            if digest is None:
                strays.append(entry)
            else:
                by_digest[digest] = entry
        known = await self.queries.known_blobs(list(by_digest))
        orphans = [Blob(d, e.size) for d, e in by_digest.items() if d not in known]
        if report.dry_run:
            gone = [by_digest[d] for d in await self.queries.markable_orphans(orphans)] + strays
        else:
            marked = await self.queries.mark_orphans(orphans)
            gone = [by_digest[d] for d in marked] + strays
            await self._delete_all([e.key for e in gone])
            await self.queries.forget_blobs(marked)
        report.orphans_removed += len(gone)
        report.orphan_bytes_removed += sum(e.size for e in gone)

    async def _orphan_uploads(self, folders: list[tuple[str, int]], report: Report) -> None:
        """Remove those upload folders whose upload is unknown (ids are never reused, so once the
        row is gone nothing writes there again)."""
        sizes = dict(folders)
        unknown = await self.queries.unknown_uploads(list(sizes))
        if not report.dry_run:
            await self._delete_all([upload_prefix(upload_id) for upload_id in unknown])
        report.orphans_removed += len(unknown)
        report.orphan_bytes_removed += sum(sizes[upload_id] for upload_id in unknown)

    async def _delete_all(self, keys: Iterable[str]) -> None:
        """Delete `keys`, DELETE_CONCURRENCY at a time from as many tasks (not a task a key: one
        collection may free hundreds of thousands, and each task's memory stays with the process)."""
        remaining = iter(keys)

        async def deleter() -> None:
            for key in remaining:  # shared: each deleter takes the next key
                await self.driver.delete(key)

        await asyncio.gather(*(deleter() for _ in range(DELETE_CONCURRENCY)))

    async def last_report(self) -> Report | None:
        """The report of the last collection of this metadata store (by any process), if any."""
        text = await self.queries.last_run()
        return None if text is None else Report(**json.loads(text))


def _count_removed(report: Report, removed: list[RemovedManifest]) -> None:
    report.manifests_removed += len(removed)
    report.manifest_bytes_removed += sum(m.size for m in removed)


def digest_of_key(key: str) -> str | None:
    """The digest whose blob is stored under `key`, or None when `key` is no blob's key."""
    parts = key.split("/")
    if len(parts) != 4:
        return None
    try:
        digest = str(parse_digest(f"{parts[1]}:{parts[3]}"))
    except DigestInvalid:
        return None
    return digest if blob_key(digest) == key else None


async def _upload_folders(driver: Driver) -> AsyncIterator[tuple[str, int, float]]:
    """(upload id, bytes, newest modified time) of every folder under `uploads/`, from the sorted
    listing, one folder at a time."""
    current: tuple[str, int, float] | None = None
    async for entry in driver.list("uploads/"):
        upload_id = entry.key.split("/")[1]
        if current is not None and current[0] == upload_id:
            current = (upload_id, current[1] + entry.size, max(current[2], entry.modified))
            continue
        if current is not None:
            yield current
        current = (upload_id, entry.size, entry.modified)
    if current is not None:
        yield current


def _unobserved(result: str, report: Report | None) -> None:
    pass


async def collect_every(
    collector: Collector, interval_s: float, observe: Callable[[str, Report | None], None] = _unobserved
) -> None:
    """Collect garbage every `interval_s` seconds, forever; a run another process holds is skipped.
    Each run is told to `observe`: ("done", its report), ("busy", None) when skipped, ("failed", None)."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            report = await collector.run()
        except CollectorBusy:
            log.info("garbage collection skipped: another collection is running")
            observe("busy", None)
        except Exception:
            log.exception("garbage collection failed")
            observe("failed", None)
        else:
            observe("done", report)
