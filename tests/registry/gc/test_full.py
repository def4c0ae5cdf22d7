"""The full mark-and-sweep (`registry gc --full`) at scale: its memory does not grow with the index, and
no write transaction it runs holds more than a batch of rows, on indexes seeded straight with rows."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TypeVar

import pytest

from registry.gc import Collector
from storage.drivers.memory import MemoryDriver
from storage.errors import WriteConflict
from storage.metadata import BLOB_BATCH, MANIFEST_BATCH, Connection, Metadata
from storage.metadata.sqlite import SQLiteDatabase
from tests.support.counting import CountingConnection, CountingDatabase
from tests.support.seeded_index import Shape, seed

pytestmark = pytest.mark.anyio

T = TypeVar("T")

# 125,020 blobs: the collection before this one read every manifest, reference and blob into the
# process and needed 160-200 MiB of data segment for this index (MemoryError at 160 MiB); this one
# runs its dry run in 50 MiB.
CAPPED = Shape(repositories=5000, tags=5, untagged=1, orphans=1)
DATA_CAP_MIB = 100
STACK_MIB = 2


@pytest.fixture
async def counted(metadata: Metadata) -> AsyncIterator[tuple[Metadata, CountingDatabase]]:
    """The `metadata` fixture's database (SQLite, then PostgreSQL) with its writes counted."""
    db = CountingDatabase(metadata.db)
    yield Metadata(db), db


async def test_no_write_transaction_of_a_full_collection_holds_more_than_a_batch(counted) -> None:
    metadata, db = counted
    shape = Shape(repositories=1000, tags=1, untagged=1, orphans=3)
    await seed(metadata, shape)
    db.writes.clear()
    report = await Collector(metadata, MemoryDriver(), grace_s=3600, purge_after_s=86400).run(delete_untagged=True)
    garbage_blobs = shape.repositories * (4 * shape.untagged + shape.orphans)
    assert (report.manifests_removed, report.blobs_removed) == (1000, garbage_blobs)
    assert (report.manifests_kept, report.blobs_kept) == (1000, shape.blobs - garbage_blobs)
    assert max(w["manifests"] for w in db.writes) == MANIFEST_BATCH  # 1000 in two transactions
    assert max(w["blobs"] for w in db.writes) <= BLOB_BATCH
    assert max(sum(w.values()) for w in db.writes) <= 2 * BLOB_BATCH  # a batch of blobs and their links
    assert sum(1 for w in db.writes if w["blobs"]) >= 2 * garbage_blobs // BLOB_BATCH  # marked, then forgotten
    again = await Collector(metadata, MemoryDriver(), grace_s=3600, purge_after_s=86400).run(delete_untagged=True)
    assert (again.manifests_removed, again.blobs_removed) == (0, 0)


class ConflictingDatabase(CountingDatabase):
    """A real database where a write that would change more than one manifest or blob row fails as
    PostgreSQL's do under many concurrent pushes: rolled back, WriteConflict."""

    async def write(self, fn: Callable[[Connection], T]) -> T:
        def refused_when_large(c: Connection) -> T:
            changed: Counter[str] = Counter()
            result = fn(CountingConnection(c, changed))
            if changed["manifests"] > 1 or changed["blobs"] > 1:
                raise WriteConflict("a write kept conflicting with others")
            return result

        return await self.db.write(refused_when_large)


async def test_a_collection_whose_batches_keep_conflicting_finishes_one_row_at_a_time(metadata: Metadata) -> None:
    shape = Shape(repositories=30, tags=1, untagged=1, orphans=2)
    await seed(metadata, shape)
    conflicting = Metadata(ConflictingDatabase(metadata.db))
    collector = Collector(conflicting, MemoryDriver(), grace_s=3600, purge_after_s=86400)
    planned = await collector.run(dry_run=True, delete_untagged=True)
    done = await collector.run(delete_untagged=True)
    assert (done.manifests_removed, done.blobs_removed) == (planned.manifests_removed, planned.blobs_removed)
    assert (done.manifests_removed, done.blobs_removed) == (30, 30 * (4 + 2))
    again = await Collector(metadata, MemoryDriver(), grace_s=3600, purge_after_s=86400).run(dry_run=True)
    assert (again.manifests_removed, again.blobs_removed) == (0, 0)


def _digest(first: str, n: int = 0) -> str:
    """A digest starting with hex digit `first`: the keyset order of the collector's pages."""
    return f"sha256:{first}{n:063x}"


async def test_indexes_and_referrers_across_pages_dry_run_and_collection_agree(metadata: Metadata) -> None:
    """Untagged indexes whose children come first by digest (so a child's page is done before its
    parent's), referrers of referrers, a referrer of a missing subject, a tagged index, a young manifest."""
    old, young = time.time() - 86400, time.time()
    pairs = MANIFEST_BATCH + 10
    parents, children = [_digest("f", n) for n in range(pairs)], [_digest("0", n) for n in range(pairs)]
    tagged, child, signature, its_signature = _digest("e"), _digest("1"), _digest("2"), _digest("3")
    referrer, its_referrer, orphaned, newest = _digest("4"), _digest("5"), _digest("6"), _digest("8")
    manifests = [(d, None, old) for d in [*parents, *children, tagged, child]]
    manifests += [(signature, child, old), (its_signature, signature, old), (referrer, parents[0], old)]
    manifests += [(its_referrer, referrer, old), (orphaned, _digest("7"), old), (newest, None, young)]

    def insert(c: Connection) -> None:
        c.executemany(
            "INSERT INTO manifests (repository, digest, media_type, subject, size, created_at) "
            "VALUES ('team/app', ?, 'application/vnd.oci.image.index.v1+json', ?, 10, ?)",
            manifests,
        )
        c.executemany(
            "INSERT INTO blobs (digest, size, state, created_at, last_used_at) VALUES (?, 10, 'present', ?, ?)",
            [(d, at, at) for d, _, at in manifests],
        )
        c.executemany(
            "INSERT INTO manifest_references (repository, manifest, child, kind) VALUES ('team/app', ?, ?, 'manifest')",
            [*zip(parents, children, strict=True), (tagged, child)],
        )
        c.execute("INSERT INTO tags (repository, name, digest, updated_at) VALUES ('team/app', 'v1', ?, 0)", (tagged,))

    await metadata.db.write(insert)
    collector = Collector(metadata, MemoryDriver(), grace_s=3600, purge_after_s=86400)
    for delete_untagged, removed in [(False, 1), (True, 2 * pairs + 2)]:  # the orphaned referrer; then the rest
        planned = await collector.run(dry_run=True, delete_untagged=delete_untagged)
        done = await collector.run(delete_untagged=delete_untagged)
        assert (planned.manifests_removed, planned.blobs_removed) == (removed, removed)
        assert (done.manifests_removed, done.blobs_removed) == (removed, removed)
    left = await metadata.db.read(lambda c: {row[0] for row in c.execute("SELECT digest FROM manifests").fetchall()})
    assert left == {tagged, child, signature, its_signature, newest}


def _capped() -> None:
    # Thread stacks count in the data segment: 2 MiB each (not 8) keeps the cap about the heap.
    resource.setrlimit(resource.RLIMIT_STACK, (STACK_MIB << 20, STACK_MIB << 20))
    resource.setrlimit(resource.RLIMIT_DATA, (DATA_CAP_MIB << 20, DATA_CAP_MIB << 20))


def _registry(*args: str, data_dir: Path) -> str:
    """Run the `registry` command with its data segment capped at DATA_CAP_MIB; its output."""
    command = [sys.executable, "-c", "import sys; from registry.cli import main; main(sys.argv[1:])", *args]
    done = subprocess.run(
        [*command, "--data-dir", str(data_dir)],
        preexec_fn=_capped,
        capture_output=True,
        text=True,
        env={**os.environ, "REGISTRY_GC_GRACE": "1h"},
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


async def test_a_full_collection_runs_in_a_memory_cap_the_index_would_not_fit_in(tmp_path: Path) -> None:
    metadata = Metadata(SQLiteDatabase(str(tmp_path / "index.db")))
    await metadata.open()
    try:
        await seed(metadata, CAPPED)
    finally:
        await metadata.close()
    removed = "5000 manifests, 25000 blobs (23.8 MiB)"
    planned = _registry("gc", "--full", "--dry-run", "--delete-untagged", data_dir=tmp_path)
    assert f"would remove {removed}" in planned and "kept 25000 manifests, 100020 blobs" in planned
    done = _registry("gc", "--full", "--delete-untagged", data_dir=tmp_path)
    assert f"removed {removed}" in done and "kept 25000 manifests, 100020 blobs" in done
    after = _registry("gc", "--full", "--dry-run", "--delete-untagged", data_dir=tmp_path)
    assert "would remove 0 manifests, 0 blobs" in after
