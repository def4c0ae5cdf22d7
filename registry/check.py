"""`registry check`: do the metadata and the storage agree? Reads both, changes nothing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from registry.layout import blob_key
from registry.names import parse_digest
from storage.drivers import Driver, NotFound
from storage.metadata import PRESENT, Metadata

CONCURRENCY = 32


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
    snapshot = await queries.snapshot()
    report = CheckReport(manifests=len(snapshot.manifests))
    present = {b.digest: b.size for b in snapshot.blobs if b.state == PRESENT}
    report.blobs = len(present)
    for m in snapshot.manifests:
        if m.digest not in present:
            report.problems.append(f"manifest {m.repository}@{m.digest}: its bytes are not a present blob")
    cached = tuple(f"{prefix}/" for prefix in cache_prefixes)
    for ref in snapshot.blob_refs:
        if ref.child in present:
            continue
        if ref.repository.startswith(cached):
            report.not_yet_cached += 1
        else:
            report.problems.append(
                f"manifest {ref.repository}@{ref.manifest} refers to {ref.child}, which is not present"
            )

    gate = asyncio.Semaphore(CONCURRENCY)

    async def check_blob(digest: str, size: int) -> None:
        async with gate:
            try:
                entry = await driver.stat(blob_key(digest))
            except NotFound:
                report.problems.append(f"blob {digest}: no bytes in storage")
                return
            if entry.size != size:
                report.problems.append(f"blob {digest}: {entry.size} bytes stored, {size} recorded")
            elif verify_digests:
                expected = parse_digest(digest)
                hasher = expected.hasher()
                async for data in driver.reader(blob_key(digest)):
                    hasher.update(data)
                if hasher.hexdigest() != expected.encoded:
                    report.problems.append(f"blob {digest}: the stored bytes hash to another digest")

    await asyncio.gather(*(check_blob(d, s) for d, s in present.items()))
    known_keys = {blob_key(b.digest) for b in snapshot.blobs}
    async for entry in driver.list("blobs/"):
        if entry.key not in known_keys:
            report.orphans.append(entry.key)
    uploads = set(await queries.upload_ids())
    async for entry in driver.list("uploads/"):
        if entry.key.split("/")[1] not in uploads:
            report.orphans.append(entry.key)
    async for leftover in driver.abandoned(time.time()):
        report.leftovers.append(leftover.key)
    report.problems.sort()
    return report
