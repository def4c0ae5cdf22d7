"""The contract between the metadata queries and a SQL database (SQLite or PostgreSQL).

The queries are functions of a `Connection`, written once in SQL with `?` placeholders that both
databases accept; a `Database` runs them in transactions. `SQLiteDatabase` (sqlite.py) and
`PostgresDatabase` (postgres.py) implement it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol, TypeVar

T = TypeVar("T")
Row = tuple[Any, ...]
# Names a file to which every write transaction appends how long it held the database (benchmarks only).
WRITE_TIMINGS_ENV = "METADATA_WRITE_TIMINGS"


class Cursor(Protocol):
    """The result of one statement."""

    @property
    def rowcount(self) -> int:
        """Rows the statement changed (for INSERT, UPDATE, DELETE)."""
        ...

    def fetchone(self) -> Row | None:
        """The next row (a tuple of the selected columns), or None when there is none."""
        ...

    def fetchall(self) -> list[Row]:
        """The remaining rows, each a tuple of the selected columns."""
        ...


class Connection(Protocol):
    """What a query function may do with the connection it is given: run statements (`?` placeholders,
    positional parameters) inside the transaction the database opened for it. It must not commit,
    roll back or keep the connection beyond the call."""

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> Cursor: ...

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> Cursor: ...


class Session(Protocol):
    """One connection held for a series of long reads that share its temporary tables (created by the
    caller, dropped when the session ends), for work too big for the process's memory."""

    async def run(self, fn: Callable[[Connection], T]) -> T:
        """Run `fn` in one transaction of the session's connection, in a worker thread: one consistent
        view of the tables. `fn` may write temporary tables only (they take no write lock)."""
        ...


class Database(Protocol):
    """A SQL database holding the metadata schema. `fn` is a function of a `Connection`, run in a
    worker thread or on the event loop (see each method); it must only touch the database, since it
    may run more than once, and its result is returned as it is."""

    dialect: str  # "sqlite" or "postgresql", for the migrations that differ

    async def open(self) -> None:
        """Connect, and bring the schema up to date (one process at a time)."""
        ...

    async def close(self) -> None:
        """Release connections and threads; nothing may run afterwards."""
        ...

    async def read(self, fn: Callable[[Connection], T]) -> T:
        """Run `fn`, a short read (a statement or two on indexed tables): it sees committed data, not
        necessarily one snapshot across statements. On SQLite it runs on the event loop."""
        ...

    async def scan(self, fn: Callable[[Connection], T]) -> T:
        """Run `fn` in one read-only snapshot, in a worker thread: for reads too long for the loop."""
        ...

    async def write(self, fn: Callable[[Connection], T]) -> T:
        """Run `fn` as one transaction, as if alone: committed when this returns, rolled back (and the
        exception raised again) when `fn` raises. PostgreSQL runs it SERIALIZABLE and runs it again
        from scratch on a serialization conflict; SQLite runs writes one at a time on one thread, and
        writes that queue meanwhile share one commit (each in a savepoint of its own)."""
        ...

    async def write_locking(self, fn: Callable[[Connection], T]) -> T:
        """Run `fn` as one transaction that orders itself against concurrent writes with the row locks
        it takes (`row_lock`), not as if alone: on PostgreSQL READ COMMITTED (each statement sees what
        committed before it began; a lock waits for its holder), so it makes no serialization conflict
        with `write`s, which must lock (`row_lock`) the rows whose presence they rely on. On SQLite
        the same as `write`."""
        ...

    def session(self) -> AbstractAsyncContextManager[Session]:
        """A `Session` on a connection of its own until the block ends (then its temporary tables go)."""
        ...


def one(cursor: Cursor) -> Row:
    """The row an aggregate query (`SELECT COUNT(*) ...`) always returns."""
    row = cursor.fetchone()
    assert row is not None, "an aggregate query returned no row"
    return row


def placeholders(n: int) -> str:
    """`?, ?, ...` for an `IN (...)` of `n` values."""
    return ",".join("?" * n)


def pairs_in(pairs: Sequence[tuple[str, str]]) -> tuple[str, list[str]]:
    """A subquery of `pairs` for a `(a, b) IN (...)`, and its parameters: a SELECT over VALUES, which
    both databases look up through an index on (a, b) (a bare VALUES list makes SQLite scan)."""
    rows = ",".join(["(?, ?)"] * len(pairs))
    return f"SELECT column1, column2 FROM (VALUES {rows}) AS pairs", [v for pair in pairs for v in pair]


class WriteTimings:
    """An opt-in record of write transactions, for benchmarks: one line `seconds name,name...` per
    transaction (from BEGIN to the end of COMMIT), appended to the file `path`, which processes may share."""

    def __init__(self, path: str):
        self.path = path

    @classmethod
    def from_environment(cls) -> WriteTimings | None:
        """The record the METADATA_WRITE_TIMINGS environment variable asks for; None (the default) when unset."""
        path = os.environ.get(WRITE_TIMINGS_ENV)
        return cls(path) if path else None

    def record(self, started: float, fns: Iterable[Callable[..., Any]]) -> None:
        """Append the transaction that began at `started` (time.perf_counter()) and ran `fns`."""
        held = time.perf_counter() - started
        names = ",".join(getattr(fn, "__qualname__", "?").replace(" ", "") for fn in fns)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, f"{held:.6f} {names}\n".encode())
        finally:
            os.close(fd)


def row_lock(dialect: str, mode: str) -> str:
    """The clause that makes a SELECT lock the rows it reads on PostgreSQL (`mode`: UPDATE, KEY SHARE,
    ...); empty on SQLite, whose writes run one at a time."""
    return f" FOR {mode}" if dialect == "postgresql" else ""
