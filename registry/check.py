"""`registry check`: do the metadata and the storage agree? Reads both, changes nothing.

It streams: the metadata is read a page of keys at a time and the storage listing a batch at a time,
so its memory does not grow with the index (the problems it reports are kept)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from registry.gc import ORPHAN_BATCH, batches, digest_of_key
from registry.layout import blob_key
from registry.names import parse_digest
from storage.drivers import Driver, NotFound
from storage.metadata import Blob, Metadata, Reference

CONCURRENCY = 32
PAGE = 1000  # rows of the metadata read at once


@dataclass
class CheckReport:
    """What `check` found: counts, and the problems, orphans and leftovers by key or description."""

    blobs: int = 0
    manifests: int = 0
    not_yet_cached: int = 0  # blobs that cached manifests refer to and no pull fetched yet (not problems)
    problems: list[str] = field(default_factory=list)  # the metadata promises what storage lacks
    orphans: list[str] = field(default_factory=list)  # bytes in storage the metadata does not know
    leftovers: list[str] = field(default_factory=list)  # the driver's own, of writes abandoned mid-way

    @property
    def ok(self) -> bool:
        """No problems (orphans and leftovers are not)."""
        return not self.problems


async def check(
    metadata: Metadata, driver: Driver, verify_digests: bool = False, cache_prefixes: Sequence[str] = ()
) -> CheckReport:
    """Every present blob has its bytes at the recorded size (and, with `verify_digests`, content
    that hashes to its digest); every manifest's bytes and every blob a manifest refers to are
    present, except in the pull-through caches under `cache_prefixes`, which fetch a manifest's blobs
    only when they are pulled (those are counted); every stored blob and upload folder is known to
    the metadata. Also lists the driver's
    leftovers of writes abandoned mid-way (on S3 that includes writes in progress that have not
    sent a part for a while: see `Driver.abandoned`)."""
    queries = metadata.garbage
    report = CheckReport(manifests=(await queries.totals()).manifests)
    for m in await queries.manifests_without_bytes():
        report.problems.append(f"manifest {m.repository}@{m.digest}: its bytes are not a present blob")
    cached = tuple(f"{prefix}/" for prefix in cache_prefixes)
    after: Reference | None = None
    while page := await queries.missing_blob_references(after, PAGE):
        after = page[-1]
        for ref in page:
            if ref.repository.startswith(cached):
                report.not_yet_cached += 1
            else:
                report.problems.append(
                    f"manifest {ref.repository}@{ref.manifest} refers to {ref.child}, which is not present"
                )

    gate = asyncio.Semaphore(CONCURRENCY)

    async def check_blob(blob: Blob) -> None:
        async with gate:
            try:
                entry = await driver.stat(blob_key(blob.digest))
            except NotFound:
                report.problems.append(f"blob {blob.digest}: no bytes in storage")
                return
            if entry.size != blob.size:
                report.problems.append(f"blob {blob.digest}: {entry.size} bytes stored, {blob.size} recorded")
            elif verify_digests:
                expected = parse_digest(blob.digest)
                hasher = expected.hasher()
                async for data in driver.reader(blob_key(blob.digest)):
                    hasher.update(data)
                if hasher.hexdigest() != expected.encoded:
                    report.problems.append(f"blob {blob.digest}: the stored bytes hash to another digest")

    last = ""
    while blobs := await queries.present_blobs(last, PAGE):
        last = blobs[-1].digest
        report.blobs += len(blobs)
        await asyncio.gather(*(check_blob(b) for b in blobs))

    async for keys in batches((entry.key async for entry in driver.list("blobs/")), ORPHAN_BATCH):
        report.orphans += await _unknown_blob_keys(metadata, keys)
    uploads = set(await queries.upload_ids())
    async for entry in driver.list("uploads/"):
        if entry.key.split("/")[1] not in uploads:
            report.orphans.append(entry.key)
    async for leftover in driver.abandoned(time.time()):
        report.leftovers.append(leftover.key)
    report.problems.sort()
    return report


async def _unknown_blob_keys(metadata: Metadata, keys: list[str]) -> list[str]:
    """Those of `keys` (under `blobs/`) that are no known blob's key (a row in any state)."""
    digests = {key: digest_of_key(key) for key in keys}
    known = await metadata.garbage.known_blobs([d for d in digests.values() if d is not None])
    return [key for key, digest in digests.items() if digest not in known]
