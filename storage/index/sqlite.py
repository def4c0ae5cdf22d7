"""The embedded SQLite database behind the index: WAL mode, one writer thread, reads on the loop.

Reads are single short statements on an indexed table, so they run directly on the event loop on a
read-only connection (WAL readers never wait for the writer). Writes run one at a time on a
dedicated thread, each as one `BEGIN IMMEDIATE` transaction, which also serializes them with other
processes sharing the file.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from storage.index.schema import migrate

T = TypeVar("T")
BUSY_TIMEOUT_S = 30.0


def _connect(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_S)
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while True:  # switching a new file to WAL takes a lock that the busy timeout does not wait for
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            break
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)
    conn.execute("PRAGMA synchronous=FULL")
    return conn


class SQLiteDatabase:
    """A database file at `path` (created with its directory when missing)."""

    dialect = "sqlite"

    def __init__(self, path: str):
        self.path = path
        self._writer_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="index-writer")
        self._write_conn: sqlite3.Connection | None = None
        self._read_conn: sqlite3.Connection | None = None

    async def open(self) -> None:
        """Connect and apply pending migrations."""
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        loop = asyncio.get_running_loop()
        self._write_conn = await loop.run_in_executor(self._writer_thread, _connect, self.path)
        await self.write(migrate)
        self._read_conn = _connect(self.path)
        self._read_conn.execute("PRAGMA query_only=1")

    def _transaction(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._write_conn
        assert conn is not None, "database not open"
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = fn(conn)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return result

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn(conn)` in one write transaction; committed when it returns, rolled back if it raises."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._writer_thread, self._transaction, fn)

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn(conn)` on a read-only connection; `fn` must be short (it runs on the loop)."""
        assert self._read_conn is not None, "database not open"
        return fn(self._read_conn)

    async def scan(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn(conn)` in one read transaction (a consistent snapshot) in a worker thread, for
        reads too long for the event loop."""

        def run() -> T:
            conn = _connect(self.path)
            try:
                conn.execute("BEGIN")
                try:
                    return fn(conn)
                finally:
                    conn.execute("COMMIT")
            finally:
                conn.close()

        return await asyncio.to_thread(run)

    async def close(self) -> None:
        if self._read_conn is not None:
            self._read_conn.close()
            self._read_conn = None
        if self._write_conn is not None:
            conn, self._write_conn = self._write_conn, None
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self._writer_thread, conn.close)
        self._writer_thread.shutdown(wait=False)
