"""PostgreSQL behind the metadata, for replicas sharing one database: psycopg 3 in a thread pool.

Writes run as SERIALIZABLE transactions, retried on serialization failures, so each behaves as if
it ran alone, as it does on SQLite. Connections come from a pool that replaces broken ones, so the
registry reconnects by itself after a database restart; while the database is unreachable,
operations raise BackendUnavailable.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from typing import Any, TypeVar

import psycopg
from psycopg import errors
from psycopg.rows import TupleRow
from psycopg_pool import ConnectionPool, PoolTimeout

from storage.errors import BackendUnavailable, WriteConflict
from storage.metadata.database import Connection, WriteTimings
from storage.metadata.schema import migrate

T = TypeVar("T")
MIGRATION_LOCK = 0x72656769  # pg_advisory_xact_lock key: one migrating replica at a time
# Tries of a write transaction that conflicts with others (SERIALIZABLE) before WriteConflict; each waits a
# random pause up to 2 ms x 2^attempt, at most 128 ms (about 2.5 s in all at worst).
WRITE_ATTEMPTS = 40
CONNECT_TIMEOUT_S = 10.0


@lru_cache(maxsize=512)
def _pg_sql(sql: str) -> str:
    """The queries' `?` placeholders as psycopg's `%s`."""
    return re.sub(r"\?", "%s", sql)


class _Connection:
    """A psycopg connection as a `Connection`: it takes the queries' `?` placeholders."""

    def __init__(self, conn: psycopg.Connection[TupleRow]):
        self._conn = conn

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> psycopg.Cursor[TupleRow]:
        return self._conn.execute(_pg_sql(sql), parameters)

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> psycopg.Cursor[TupleRow]:
        cursor = self._conn.cursor()
        cursor.executemany(_pg_sql(sql), list(parameters))
        return cursor


class _Session:
    """A `Session` on one pooled connection of `db`."""

    def __init__(self, db: PostgresDatabase, conn: psycopg.Connection[TupleRow]):
        self.db, self.conn = db, conn

    async def run(self, fn: Callable[[Connection], T]) -> T:
        """Run `fn(conn)` in one REPEATABLE READ transaction (one snapshot) of the session's connection."""

        def run() -> T:
            with self.conn.transaction():
                self.conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                return fn(_Connection(self.conn))

        try:
            return await asyncio.get_running_loop().run_in_executor(self.db._threads, run)
        except psycopg.OperationalError as e:
            raise BackendUnavailable(f"the metadata database is unavailable: {e}") from e


class PostgresDatabase:
    """The database at `url` (postgresql://user:password@host:port/name?options); a `Database`."""

    dialect = "postgresql"

    def __init__(self, url: str, max_connections: int = 16):
        self.url = url
        self._pool = ConnectionPool(
            url,
            min_size=1,
            max_size=max_connections,
            open=False,
            kwargs={"autocommit": True},
            check=ConnectionPool.check_connection,
            reconnect_timeout=3600,
        )
        self._threads = ThreadPoolExecutor(max_workers=max_connections, thread_name_prefix="metadata-pg")
        self._timings = WriteTimings.from_environment()

    async def _run(self, fn: Callable[[], T]) -> T:
        """Run `fn` in the pool's threads; once more on a fresh connection if the first one broke (as
        pooled connections do when the database restarts)."""
        loop = asyncio.get_running_loop()
        for attempt in range(2):
            try:
                return await loop.run_in_executor(self._threads, fn)
            except PoolTimeout as e:
                raise BackendUnavailable(f"the metadata database is unavailable: {e}") from e
            except psycopg.OperationalError as e:
                if attempt == 1:
                    raise BackendUnavailable(f"the metadata database is unavailable: {e}") from e
        raise AssertionError("unreachable")

    async def open(self) -> None:
        """Connect and apply pending migrations (one replica at a time)."""

        def start() -> None:
            self._pool.open(wait=True, timeout=CONNECT_TIMEOUT_S)
            with self._pool.connection() as conn, conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
                migrate(_Connection(conn), self.dialect)

        await self._run(start)

    async def read(self, fn: Callable[[Connection], T]) -> T:
        """Run `fn(conn)` with each statement in its own snapshot (autocommit)."""

        def run() -> T:
            with self._pool.connection(timeout=CONNECT_TIMEOUT_S) as conn:
                return fn(_Connection(conn))

        return await self._run(run)

    async def scan(self, fn: Callable[[Connection], T]) -> T:
        """Run `fn(conn)` in one read-only snapshot."""

        def run() -> T:
            with self._pool.connection(timeout=CONNECT_TIMEOUT_S) as conn, conn.transaction():
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                return fn(_Connection(conn))

        return await self._run(run)

    async def write(self, fn: Callable[[Connection], T]) -> T:
        """Run `fn(conn)` in one SERIALIZABLE transaction, again from scratch when it conflicts with
        another; committed when it returns, rolled back if it raises. `fn` must only touch the
        database."""
        return await self._run(lambda: self._transaction(fn, "SERIALIZABLE"))

    async def write_locking(self, fn: Callable[[Connection], T]) -> T:
        """Run `fn(conn)` in one READ COMMITTED transaction that orders itself against others with the
        row locks it takes (`SELECT ... FOR UPDATE`): each statement sees what committed before it
        began, so a statement after a lock sees what the lock's holder committed. Run again from
        scratch on a deadlock. It makes no serialization conflict with SERIALIZABLE writes."""
        return await self._run(lambda: self._transaction(fn, "READ COMMITTED"))

    def _transaction(self, fn: Callable[[Connection], T], isolation: str) -> T:
        for attempt in range(WRITE_ATTEMPTS):
            try:
                with self._pool.connection(timeout=CONNECT_TIMEOUT_S) as conn:
                    started = time.perf_counter()
                    try:
                        with conn.transaction():
                            conn.execute(f"SET TRANSACTION ISOLATION LEVEL {isolation}")
                            return fn(_Connection(conn))
                    finally:
                        if self._timings is not None:
                            self._timings.record(started, (fn,))
            except (errors.SerializationFailure, errors.DeadlockDetected) as e:
                if attempt == WRITE_ATTEMPTS - 1:
                    raise WriteConflict(f"a write kept conflicting with others: {e}") from e
                time.sleep(random.uniform(0, 0.002 * 2 ** min(attempt, 6)))
        raise AssertionError("unreachable")

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[_Session]:
        """A connection taken from the pool until the block ends; its temporary tables are dropped
        before it goes back."""
        conn = await self._run(lambda: self._pool.getconn(timeout=CONNECT_TIMEOUT_S))
        try:
            yield _Session(self, conn)
        finally:

            def give_back() -> None:
                with contextlib.suppress(psycopg.Error):
                    conn.execute("DISCARD TEMP")
                self._pool.putconn(conn)

            await asyncio.get_running_loop().run_in_executor(self._threads, give_back)

    async def close(self) -> None:
        """Close the pool's connections and stop its threads."""
        await asyncio.get_running_loop().run_in_executor(self._threads, self._pool.close)
        self._threads.shutdown(wait=False)
