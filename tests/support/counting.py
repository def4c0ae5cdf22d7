"""A metadata database that counts the statements its queries run: the real database underneath, each
query's connection wrapped to count `execute` calls (to show that a page of a listing is one statement)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from storage.metadata import Connection, Cursor, Database, Metadata

T = TypeVar("T")


class _CountingConnection:
    def __init__(self, conn: Connection, counter: CountedDatabase):
        self.conn, self.counter = conn, counter

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> Cursor:
        self.counter.statements.append(sql)
        return self.conn.execute(sql, parameters)


class CountedDatabase:
    """`db` with `statements`: the SQL of every statement its reads and scans ran, in order."""

    def __init__(self, db: Database):
        self.db, self.dialect = db, db.dialect
        self.statements: list[str] = []

    def _counting(self, fn: Callable[[Connection], T]) -> Callable[[Connection], T]:
        return lambda conn: fn(_CountingConnection(conn, self))  # type: ignore[arg-type]

    async def read(self, fn: Callable[[Connection], T]) -> T:
        return await self.db.read(self._counting(fn))

    async def scan(self, fn: Callable[[Connection], T]) -> T:
        return await self.db.scan(self._counting(fn))

    async def write(self, fn: Callable[[Connection], T]) -> T:
        return await self.db.write(fn)


def counted(metadata: Metadata) -> CountedDatabase:
    """Make `metadata`'s own statements (not those of its browse, cache... parts) counted; returns the
    counter. `uncounted(metadata)` puts the database back."""
    counter = CountedDatabase(metadata.db)
    metadata.db = counter  # type: ignore[assignment]
    return counter


def uncounted(metadata: Metadata) -> None:
    if isinstance(metadata.db, CountedDatabase):
        metadata.db = metadata.db.db
