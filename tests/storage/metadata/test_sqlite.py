"""storage/metadata/sqlite.py's own duties: commits reach the database file through checkpoints of its own,
taken after commits on a thread of their own (SQLite's automatic checkpoint, inside a commit, is off)."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import time
from pathlib import Path

import pytest

from storage.metadata import Connection, Metadata, SQLiteDatabase, sqlite
from storage.metadata.sqlite import CHECKPOINT_EVERY_S

pytestmark = pytest.mark.anyio


def rows_in_the_file_alone(path: Path, copy: Path) -> int:
    """The blob rows of the database file without its WAL: what checkpoints have copied into it."""
    shutil.copyfile(path, copy)
    conn = sqlite3.connect(copy)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM blobs").fetchone()[0])
    finally:
        conn.close()


async def test_commits_reach_the_file_through_checkpoints_after_them(tmp_path: Path) -> None:
    path = tmp_path / "index.db"
    metadata = Metadata(SQLiteDatabase(str(path)))
    await metadata.open()
    try:
        autocheckpoint = await metadata.db.read(lambda c: c.execute("PRAGMA wal_autocheckpoint").fetchone())
        assert autocheckpoint is not None and autocheckpoint[0] == 0, "no checkpoint inside a commit"
        for i in range(20):
            await metadata.link_blob("r", f"sha256:{i:064x}", 10)
        await asyncio.sleep(CHECKPOINT_EVERY_S + 0.1)
        await metadata.link_blob("r", "sha256:" + "f" * 64, 10)  # its commit is followed by a checkpoint
        found = 0
        for _ in range(100):
            found = rows_in_the_file_alone(path, tmp_path / "copy.db")
            if found == 21:
                break
            await asyncio.sleep(0.05)
        assert found == 21, "the last commit was never checkpointed into the file"
        assert (tmp_path / "index.db-wal").exists(), "while open, the WAL stays"
    finally:
        await metadata.close()
    assert not (tmp_path / "index.db-wal").exists(), "closed: the last connection checkpointed and removed it"


async def test_a_write_the_disk_cannot_hold_fails_with_its_own_error_and_changes_nothing(tmp_path: Path) -> None:
    metadata = Metadata(SQLiteDatabase(str(tmp_path / "index.db")))
    await metadata.open()
    try:
        await metadata.link_blob("r", "sha256:" + "0" * 64, 10)

        def fill(c: Connection) -> None:  # as when the disk is full: SQLite undoes the whole transaction
            pages = c.execute("PRAGMA page_count").fetchone()[0]
            c.execute(f"PRAGMA max_page_count = {pages}")
            names = [(f"r{i}" * 50,) for i in range(5000)]
            c.executemany("INSERT INTO repositories (name, created_at) VALUES (?, 0)", names)

        with pytest.raises(sqlite3.OperationalError, match="full"):
            await metadata.db.write(fill)
        assert await metadata.list_repositories("", None) == ["r"]
    finally:
        await metadata.close()


async def test_the_wal_starts_over_under_steady_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Small limits, so that a second of writes crosses them many times over.
    monkeypatch.setattr(sqlite, "WAL_RESTART_PAGES", 64)
    monkeypatch.setattr(sqlite, "WAL_SIZE_LIMIT", 64 * 4096)
    monkeypatch.setattr(sqlite, "CHECKPOINT_EVERY_S", 0.02)
    database = SQLiteDatabase(str(tmp_path / "index.db"))
    metadata = Metadata(database)
    await metadata.open()
    # The pass under the write lock only flushes its own pages: the file is flushed before the lock.
    events: list[str] = []
    fsync, flock = sqlite.os.fsync, sqlite.fcntl.flock

    def flushing(fd: int) -> None:
        events.append("flush" if fd == database._file else "other")
        fsync(fd)

    def locking(fd: int, operation: int) -> None:
        if fd == database._checkpoint_lock and operation == sqlite.fcntl.LOCK_EX:
            events.append("lock")
        flock(fd, operation)

    monkeypatch.setattr(sqlite.os, "fsync", flushing)
    monkeypatch.setattr(sqlite.fcntl, "flock", locking)
    written = 0
    try:

        def insert(c: Connection, n: int) -> None:
            rows = [(f"r{n}-{i}-" + "x" * 400,) for i in range(50)]  # about 5 pages a commit
            c.executemany("INSERT INTO repositories (name, created_at) VALUES (?, 0)", rows)

        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            await asyncio.gather(*(metadata.db.write(lambda c, n=written + k: insert(c, n)) for k in range(4)))
            written += 4
        wal = (tmp_path / "index.db-wal").stat().st_size
    finally:
        await metadata.close()
    print(f"{written} commits, {written * 50 * 400 / 2**20:.0f} MiB of rows, the WAL at {wal / 2**20:.1f} MiB")
    assert written * 50 * 400 > 20 * 2**20, "too few writes to show anything"
    assert wal < 4 * 2**20, "the WAL kept growing"
    restarts = [i for i, event in enumerate(events) if event == "lock"]
    assert restarts, "the WAL never started over under the checkpoint's lock"
    assert all(events[i - 1] == "flush" for i in restarts), events
