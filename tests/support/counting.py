"""Metadata databases that count what their queries do, the real database underneath: the statements
reads run (to show that a page of a listing is one statement), and the rows each write transaction
changes, by table (to show that a collector's transactions stay short)."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, TypeVar

from storage.metadata import Connection, Cursor, Database, Metadata, Session

T = TypeVar("T")
DML = re.compile(r"^\s*(?:INSERT\s+INTO|UPDATE|DELETE\s+FROM)\s+(\w+)", re.IGNORECASE)


class DelegatingDatabase:
    """`db` as it is: every call passed through. The databases below override what they observe."""

    def __init__(self, db: Database):
        self.db, self.dialect = db, db.dialect

    async def open(self) -> None:
        await self.db.open()

    async def close(self) -> None:
        await self.db.close()

    async def read(self, fn: Callable[[Connection], T]) -> T:
        return await self.db.read(fn)

    async def scan(self, fn: Callable[[Connection], T]) -> T:
        return await self.db.scan(fn)

    async def write(self, fn: Callable[[Connection], T]) -> T:
        return await self.db.write(fn)

    async def write_locking(self, fn: Callable[[Connection], T]) -> T:
        return await self.db.write_locking(fn)

    def session(self) -> AbstractAsyncContextManager[Session]:
        return self.db.session()


class _CountingConnection:
    def __init__(self, conn: Connection, counter: CountedDatabase):
        self.conn, self.counter = conn, counter

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> Cursor:
        self.counter.statements.append(sql)
        return self.conn.execute(sql, parameters)


class CountedDatabase(DelegatingDatabase):
    """`db` with `statements`: the SQL of every statement its reads and scans ran, in order."""

    def __init__(self, db: Database):
        super().__init__(db)
        self.statements: list[str] = []

    def _counting(self, fn: Callable[[Connection], T]) -> Callable[[Connection], T]:
        return lambda conn: fn(_CountingConnection(conn, self))  # type: ignore[arg-type]

    async def read(self, fn: Callable[[Connection], T]) -> T:
        return await self.db.read(self._counting(fn))

    async def scan(self, fn: Callable[[Connection], T]) -> T:
        return await self.db.scan(self._counting(fn))


def counted(metadata: Metadata) -> CountedDatabase:
    """Make `metadata`'s own statements (not those of its browse, cache... parts) counted; returns the
    counter. `uncounted(metadata)` puts the database back."""
    counter = CountedDatabase(metadata.db)
    metadata.db = counter  # type: ignore[assignment]
    return counter


def uncounted(metadata: Metadata) -> None:
    if isinstance(metadata.db, CountedDatabase):
        metadata.db = metadata.db.db


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


class CountingDatabase(DelegatingDatabase):
    """A real database whose write transactions each note the rows they changed, by table."""

    def __init__(self, db: Database):
        super().__init__(db)
        self.writes: list[Counter[str]] = []

    def _counted(self, fn: Callable[[Connection], T]) -> Callable[[Connection], T]:
        def counted(c: Connection) -> T:
            changed: Counter[str] = Counter()  # anew on each attempt (PostgreSQL retries conflicts)
            result = fn(CountingConnection(c, changed))
            self.writes.append(changed)
            return result

        return counted

    async def write(self, fn: Callable[[Connection], T]) -> T:
        return await self.db.write(self._counted(fn))

    async def write_locking(self, fn: Callable[[Connection], T]) -> T:
        return await self.db.write_locking(self._counted(fn))
