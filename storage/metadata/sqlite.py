"""The embedded SQLite database behind the metadata: WAL mode, one writer thread, reads on the loop.

Reads are single short statements on an indexed table, so they run directly on the event loop on a
read-only connection (WAL readers never wait for the writer). Writes run one at a time on a
dedicated thread in `BEGIN IMMEDIATE` transactions; writes that queue up while one commits share
the next commit (group commit). Processes sharing the file take turns through an advisory lock on
`<file>.write-lock` first: the kernel hands it over the moment it is released, where SQLite's own
busy handler would poll with sleeps of up to 100 ms. The WAL's pages are copied into the file (a
checkpoint) after commits on a thread of their own, outside that lock, so that no write waits for
one (SQLite's automatic checkpoint runs inside the commit that fills the WAL). Under steady writes
such a checkpoint never catches up, and the WAL can only start over once one has: when it has
grown past WAL_RESTART_PAGES, the checkpoint thread goes on until a pass finds only a few new
pages (CATCH_UP_PAGES), then takes the write lock for one last pass over the frames of those last
milliseconds, which also waits (up to RESTART_WAIT_MS) for readers of older frames to finish, so
that the next write starts the WAL over; the pages the passes before it copied are flushed to disk
first, outside the lock, so that the one under it flushes only its own. When writes come too fast
for that, it tries again at the next checkpoint, until the WAL is WAL_FORCE times that long and the
pass under the lock copies the rest. The file, its lock file (and so SQLite's journal files, which
take the file's mode) are private to the registry's user: 0600, in a new directory 0700.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from storage.metadata.database import Connection, WriteTimings
from storage.metadata.schema import migrate
from storage.metadata.visibility import regexp

T = TypeVar("T")
BUSY_TIMEOUT_S = 30.0
CHECKPOINT_EVERY_S = 0.5  # after a commit, a checkpoint at most this often
WAL_RESTART_PAGES = 65536  # a WAL past this many pages (256 MiB) is checkpointed whole, so that it starts over
CATCH_UP_PAGES = 256  # ... under the write lock, once a pass outside it found no more new pages than this,
CATCH_UP_PASSES = 8  # ... within this many passes; else the next checkpoint tries again,
WAL_FORCE = 4  # ... unless the WAL is this many times WAL_RESTART_PAGES: then the locked pass copies what is left
RESTART_WAIT_MS = 20  # how long that last pass waits for readers of older frames (then the next one tries)
WAL_SIZE_LIMIT = 256 << 20  # a WAL that starts over is cut to this size (PRAGMA journal_size_limit)
FILE_MODE = 0o600
DIR_MODE = 0o700


def _private_directory(path: str) -> None:
    """Create directory `path` and its missing parents, each DIR_MODE whatever the umask."""
    if os.path.isdir(path):
        return
    _private_directory(os.path.dirname(path))
    try:
        os.mkdir(path, DIR_MODE)
    except FileExistsError:
        if not os.path.isdir(path):
            raise


def _private_file(path: str) -> int:
    """Open `path` read-write, created FILE_MODE when missing and made FILE_MODE when it exists
    (older versions left it readable to every local user); returns the descriptor."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, FILE_MODE)
    with contextlib.suppress(PermissionError):  # not ours: left as it is
        os.fchmod(fd, FILE_MODE)
    return fd


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
    conn.execute("PRAGMA wal_autocheckpoint=0")  # SQLiteDatabase checkpoints outside the write lock
    conn.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
    conn.create_function("regexp", 2, regexp, deterministic=True)  # `name REGEXP ?` (visibility.py)
    return conn


def _settle(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if future.cancelled():
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)


class _Session:
    """A `Session` over the file at `path`: one connection, used from one thread."""

    def __init__(self, path: str):
        self.path = path
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="metadata-session")
        self._conn: sqlite3.Connection | None = None

    def _run(self, fn: Callable[[Connection], T]) -> T:
        if self._conn is None:
            self._conn = _connect(self.path)
            self._conn.execute("PRAGMA temp_store=FILE")
        conn = self._conn
        conn.execute("BEGIN")  # deferred: one snapshot of the file, no write lock (temporary tables take none)
        try:
            result = fn(conn)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return result

    async def run(self, fn: Callable[[Connection], T]) -> T:
        """Run `fn(conn)` in one transaction of the session's connection, on its thread."""
        return await asyncio.get_running_loop().run_in_executor(self._thread, self._run, fn)

    async def close(self) -> None:
        def close() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        await asyncio.get_running_loop().run_in_executor(self._thread, close)
        self._thread.shutdown(wait=False)


class SQLiteDatabase:
    """A database file at `path` (created with its directory when missing); a `Database`."""

    dialect = "sqlite"

    def __init__(self, path: str):
        self.path = path
        self._writer_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="metadata-writer")
        self._write_conn: sqlite3.Connection | None = None
        self._write_lock: int | None = None  # fd of the file whose lock the writing process holds
        self._checkpoint_lock: int | None = None  # the same file, open apart: a lock of its own
        self._file: int | None = None  # the database file, to flush it; closed last (see `close`)
        self._read_conn: sqlite3.Connection | None = None
        self._queued: list[tuple[Callable[[Connection], Any], asyncio.Future[Any]]] = []
        self._timings = WriteTimings.from_environment()
        self._checkpoint_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="metadata-checkpoint")
        self._checkpoint_conn: sqlite3.Connection | None = None
        self._checkpoint_due = 0.0  # time.monotonic() of the earliest next checkpoint
        self._checkpointing = False

    async def open(self) -> None:
        """Connect and apply pending migrations."""
        _private_directory(os.path.dirname(os.path.abspath(self.path)))
        self._file = _private_file(self.path)  # before SQLite creates it with the umask's mode
        loop = asyncio.get_running_loop()
        self._write_lock = _private_file(f"{self.path}.write-lock")
        self._checkpoint_lock = _private_file(f"{self.path}.write-lock")
        self._write_conn = await loop.run_in_executor(self._writer_thread, _connect, self.path)
        await self.write(migrate)
        self._read_conn = _connect(self.path)
        self._read_conn.execute("PRAGMA query_only=1")

    def _commit_batch(self) -> None:
        """Run every queued write in one transaction (group commit: one fsync for all of them), each
        in a savepoint of its own, so that one that raises undoes only its own changes."""
        conn, lock = self._write_conn, self._write_lock
        assert conn is not None and lock is not None, "database not open"
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            self._commit_locked(conn)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
        now = time.monotonic()
        if not self._checkpointing and now >= self._checkpoint_due:
            self._checkpointing, self._checkpoint_due = True, now + CHECKPOINT_EVERY_S
            self._checkpoint_thread.submit(self._checkpoint)

    def _checkpoint(self) -> None:
        """Copy the WAL's committed pages into the file, as far as no reader still needs them (PASSIVE:
        it waits for nobody, and writers go on meanwhile); a busy or failed one is left to the next.
        A WAL past WAL_RESTART_PAGES is then caught up and started over (`_start_wal_over`)."""
        try:
            if self._checkpoint_conn is None:
                self._checkpoint_conn = _connect(self.path)
                self._checkpoint_conn.execute(f"PRAGMA busy_timeout = {RESTART_WAIT_MS}")
            busy, pages, _ = self._checkpoint_conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            if not busy and pages > WAL_RESTART_PAGES:
                self._start_wal_over(self._checkpoint_conn, pages)
        except sqlite3.Error:
            pass
        finally:
            self._checkpointing = False

    def _start_wal_over(self, conn: sqlite3.Connection, pages: int) -> None:
        """Catch up with a WAL of `pages` until a pass finds few new ones, then checkpoint the rest
        holding the write lock, so that the next write starts the WAL over (see the module)."""
        for _ in range(CATCH_UP_PASSES):
            busy, now, _ = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            if busy:
                return
            new, pages = now - pages, now
            if new <= CATCH_UP_PAGES:  # fewer when another process started the WAL over meanwhile
                break
        else:  # writes too busy for a short pass under the lock: a later checkpoint tries again
            if pages <= WAL_FORCE * WAL_RESTART_PAGES:
                return
        lock, file = self._checkpoint_lock, self._file
        assert lock is not None and file is not None, "database not open"
        # The passes copied the WAL's pages into the file without flushing it (SQLite flushes the file
        # only after a pass that copied every frame): left to the pass under the lock, that flush took
        # hundreds of milliseconds at a WAL of WAL_RESTART_PAGES. Flushed here, then caught up again.
        os.fsync(file)
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        fcntl.flock(lock, fcntl.LOCK_EX)
        started = time.perf_counter()
        try:  # RESTART: all of it, and the readers on the WAL gone (or, busy, as far as PASSIVE goes)
            conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchall()
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
            if self._timings is not None:  # writes wait for it as for a write
                self._timings.record(started, (self._checkpoint,))

    def _commit_locked(self, conn: sqlite3.Connection) -> None:
        batch, self._queued = self._queued, []  # taken once the lock is ours: writes queued meanwhile join
        if not batch:
            return
        outcomes: list[tuple[asyncio.Future[Any], bool, Any]] = []
        started = time.perf_counter()
        try:
            conn.execute("BEGIN IMMEDIATE")
            for fn, future in batch:
                conn.execute("SAVEPOINT write")
                try:
                    outcomes.append((future, True, fn(conn)))
                except BaseException as e:
                    if not conn.in_transaction:  # SQLite undid the whole transaction (disk full, I/O error)
                        raise
                    conn.execute("ROLLBACK TO write")
                    outcomes.append((future, False, e))
                conn.execute("RELEASE write")
            conn.execute("COMMIT")
        except BaseException as e:  # the transaction itself failed: every write in it did
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            outcomes = [(future, False, e) for _, future in batch]
        if self._timings is not None:
            self._timings.record(started, (fn for fn, _ in batch))
        for future, ok, value in outcomes:
            future.get_loop().call_soon_threadsafe(_settle, future, ok, value)

    async def write(self, fn: Callable[[Connection], T]) -> T:
        """Run `fn(conn)` atomically in a write transaction on the writer thread; committed when this
        returns, rolled back if `fn` raises. Writes queued meanwhile share one commit."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queued.append((fn, future))
        if len(self._queued) == 1:
            loop.run_in_executor(self._writer_thread, self._commit_batch)
        return await future

    async def write_locking(self, fn: Callable[[Connection], T]) -> T:
        """As `write`: writes run one at a time, so the row locks PostgreSQL takes are not needed."""
        return await self.write(fn)

    async def read(self, fn: Callable[[Connection], T]) -> T:
        """Run `fn(conn)` on a read-only connection; `fn` must be short (it runs on the loop)."""
        assert self._read_conn is not None, "database not open"
        return fn(self._read_conn)

    async def scan(self, fn: Callable[[Connection], T]) -> T:
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

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[_Session]:
        """A connection of its own, on a thread of its own, until the block ends; its temporary tables
        live in temporary files (SQLite's page cache bounds their memory), not in the process."""
        session = _Session(self.path)
        try:
            yield session
        finally:
            await session.close()

    async def close(self) -> None:
        """Close the connections and stop the writer and checkpoint threads."""
        loop = asyncio.get_running_loop()
        if self._read_conn is not None:
            self._read_conn.close()
            self._read_conn = None
        if self._write_conn is not None:
            conn, self._write_conn = self._write_conn, None
            await loop.run_in_executor(self._writer_thread, conn.close)
        if self._write_lock is not None:
            os.close(self._write_lock)
            self._write_lock = None
        self._writer_thread.shutdown(wait=False)
        await loop.run_in_executor(self._checkpoint_thread, self._close_checkpoint_connection)
        self._checkpoint_thread.shutdown(wait=False)

    def _close_checkpoint_connection(self) -> None:
        if self._checkpoint_conn is not None:
            self._checkpoint_conn.close()
            self._checkpoint_conn = None
        if self._checkpoint_lock is not None:
            os.close(self._checkpoint_lock)
            self._checkpoint_lock = None
        if self._file is not None:  # after every connection: closing a descriptor of the file drops the
            os.close(self._file)  # process's POSIX locks on it, SQLite's included
            self._file = None
