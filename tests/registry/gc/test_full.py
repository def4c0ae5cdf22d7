"""The full mark-and-sweep (`registry gc --full`) at scale: its memory does not grow with the index, and
no write transaction it runs holds more than a batch of rows, on indexes seeded straight with rows."""

from __future__ import annotations

import os
import re
import resource
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, TypeVar

import pytest

from registry.gc import Collector
from storage.drivers.memory import MemoryDriver
from storage.metadata import BLOB_BATCH, MANIFEST_BATCH, Connection, Cursor, Database, Metadata, Session
from storage.metadata.sqlite import SQLiteDatabase
from tests.support.seeded_index import Shape, seed

pytestmark = pytest.mark.anyio

T = TypeVar("T")
DML = re.compile(r"^\s*(?:INSERT\s+INTO|UPDATE|DELETE\s+FROM)\s+(\w+)", re.IGNORECASE)

# 125,020 blobs: the collection before this one read every manifest, reference and blob into the
# process and needed 160-200 MiB of data segment for this index (MemoryError at 160 MiB); this one
# runs in under 60 MiB.
CAPPED = Shape(repositories=5000, tags=5, untagged=1, orphans=1)
DATA_CAP_MIB = 100


class CountingConnection:
    """A connection noting the rows each statement changed, by table."""

    def __init__(self, conn: Connection, changed: Counter[str]):
        self.conn, self.changed = conn, changed

    def _note(self, sql: str, cursor: Cursor) -> Cursor:
        match = DML.match(sql)
        if match and cursor.rowcount > 0:
            self.changed[match.group(1).lower()] += cursor.rowcount
        return cursor

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> Cursor:
        return self._note(sql, self.conn.execute(sql, parameters))

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> Cursor:
        return self._note(sql, self.conn.executemany(sql, parameters))


class CountingDatabase:
    """A real database whose write transactions each note the rows they changed, by table."""

    def __init__(self, db: Database):
        self.db, self.dialect = db, db.dialect
        self.writes: list[Counter[str]] = []

    async def open(self) -> None:
        await self.db.open()

    async def close(self) -> None:
        await self.db.close()

    async def read(self, fn: Callable[[Connection], T]) -> T:
        return await self.db.read(fn)

    async def scan(self, fn: Callable[[Connection], T]) -> T:
        return await self.db.scan(fn)

    def session(self) -> AbstractAsyncContextManager[Session]:
        return self.db.session()

    async def write(self, fn: Callable[[Connection], T]) -> T:
        def counted(c: Connection) -> T:
            changed: Counter[str] = Counter()  # anew on each attempt (PostgreSQL retries conflicts)
            result = fn(CountingConnection(c, changed))
            self.writes.append(changed)
            return result

        return await self.db.write(counted)


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


def _capped() -> None:
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
