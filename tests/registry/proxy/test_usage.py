"""Pull times recorded in batches (registry/proxy/usage.py) over a real SQLite index: nothing is written at a
pull, one transaction at a flush, and a flush that fails keeps its batch for the next."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from registry.proxy.usage import PullLog
from storage.metadata import ManifestRecord, Metadata, open_metadata

pytestmark = pytest.mark.anyio

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
D = ["sha256:" + str(i) * 64 for i in range(1, 6)]
REFUSE = "CREATE TRIGGER refuse BEFORE UPDATE OF pulled_at ON manifests BEGIN SELECT RAISE(ABORT, 'refused'); END"


@asynccontextmanager
async def cached_two(directory: Path) -> AsyncIterator[Metadata]:
    """An open SQLite index in `directory` with two cached manifests in `a/app`, D[0] (tag 1) and D[1]
    (tag 2), each with the layer D[2]."""
    metadata = open_metadata(f"sqlite:///{directory}/index.db")
    await metadata.open()
    try:
        for digest, tag in [(D[0], "1"), (D[1], "2")]:
            await metadata.link_blob("a/app", D[2], 64)
            await metadata.cache.put_manifest("a/app", ManifestRecord(digest, MANIFEST, 300), {D[2]: 64}, {}, tag)
        yield metadata
    finally:
        await metadata.close()


async def pulled_at(metadata: Metadata, digest: str) -> float | None:
    sql = "SELECT pulled_at FROM manifests WHERE repository = 'a/app' AND digest = ?"
    return (await metadata.db.read(lambda c: c.execute(sql, (digest,)).fetchone()))[0]


async def last_used_at(metadata: Metadata, digest: str) -> float:
    sql = "SELECT last_used_at FROM blobs WHERE digest = ?"
    return (await metadata.db.read(lambda c: c.execute(sql, (digest,)).fetchone()))[0]


async def test_pulls_are_written_only_at_the_flush_in_one_transaction(tmp_path) -> None:
    async with cached_two(tmp_path) as metadata:
        used = await last_used_at(metadata, D[2])
        log = PullLog(metadata.cache)
        writes = []
        real_write = metadata.db.write

        async def counted(fn):
            writes.append(fn)
            return await real_write(fn)

        metadata.db.write = counted  # counts each transaction, and runs it for real
        await asyncio.sleep(0.01)
        log.manifest("a/app", D[0])
        log.manifest("a/app", D[1])
        log.blob(D[2])
        log.manifest("a/app", D[0])
        assert writes == []
        assert (await pulled_at(metadata, D[0]), await pulled_at(metadata, D[1])) == (None, None)

        await log.flush()
        assert len(writes) == 1
        first, second = await pulled_at(metadata, D[0]), await pulled_at(metadata, D[1])
        assert first is not None and second is not None and second <= first <= time.time()
        assert await last_used_at(metadata, D[2]) > used

        await log.flush()
        assert len(writes) == 1, "nothing pending, nothing written"


async def test_a_failed_flush_keeps_its_batch_for_the_next_and_newer_pulls_win(tmp_path) -> None:
    async with cached_two(tmp_path) as metadata:
        log = PullLog(metadata.cache)
        # The index refuses the write (as a full disk or a lost database would), then takes it again.
        await metadata.db.write(lambda c: c.execute(REFUSE))
        log.manifest("a/app", D[0])
        log.manifest("a/app", D[1])
        with pytest.raises(Exception, match="refused"):
            await log.flush()
        assert await pulled_at(metadata, D[0]) is None
        await asyncio.sleep(0.01)
        log.manifest("a/app", D[1])  # pulled again meanwhile
        newer = time.time()

        await metadata.db.write(lambda c: c.execute("DROP TRIGGER refuse"))
        await log.flush()
        first, second = await pulled_at(metadata, D[0]), await pulled_at(metadata, D[1])
        assert first is not None, "the failed batch was written with the next"
        assert second is not None and second > first and abs(second - newer) < 0.01


async def test_flush_every_goes_on_after_a_failed_flush(tmp_path) -> None:
    async with cached_two(tmp_path) as metadata:
        log = PullLog(metadata.cache)
        await metadata.db.write(lambda c: c.execute(REFUSE))
        log.manifest("a/app", D[0])
        task = asyncio.create_task(log.flush_every(0.05))
        try:
            await asyncio.sleep(0.2)
            assert not task.done(), "a failed flush does not end the loop"
            assert await pulled_at(metadata, D[0]) is None
            await metadata.db.write(lambda c: c.execute("DROP TRIGGER refuse"))
            await asyncio.sleep(0.2)
            assert await pulled_at(metadata, D[0]) is not None
        finally:
            task.cancel()


async def test_a_pull_time_never_goes_back(tmp_path) -> None:
    async with cached_two(tmp_path) as metadata:
        now = time.time()
        await metadata.cache.record_pulls({("a/app", D[0]): now}, {D[2]: now})
        await metadata.cache.record_pulls({("a/app", D[0]): now - 100}, {D[2]: now - 100})
        assert await pulled_at(metadata, D[0]) == now
        assert await last_used_at(metadata, D[2]) == now
