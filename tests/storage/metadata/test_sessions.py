"""`Database.session` on SQLite and PostgreSQL: one connection whose temporary tables last across its
transactions, take no write lock, and go with the session."""

from __future__ import annotations

import asyncio
import sqlite3
import threading

import psycopg
import pytest

from storage.metadata import Connection, Metadata
from storage.metadata.database import one

pytestmark = pytest.mark.anyio


def count(c: Connection) -> int:
    counted: int = one(c.execute("SELECT COUNT(*) FROM scratch"))[0]
    return counted


async def test_a_session_keeps_its_temporary_tables_takes_no_write_lock_and_drops_them(metadata: Metadata) -> None:
    inside, release = threading.Event(), threading.Event()

    def fill_and_hold(c: Connection) -> int:
        c.execute("INSERT INTO scratch (n) SELECT 1 FROM repositories")
        c.execute("INSERT INTO scratch (n) VALUES (2)")
        inside.set()
        release.wait(10)
        return count(c)

    async with metadata.db.session() as session:
        await session.run(lambda c: c.execute("CREATE TEMPORARY TABLE scratch (n INTEGER)"))
        holding = asyncio.create_task(session.run(fill_and_hold))
        assert await asyncio.to_thread(inside.wait, 10)
        # The session's open transaction wrote its temporary table: writers go on meanwhile.
        insert = "INSERT INTO repositories (name, created_at) VALUES ('team/app', 0)"
        await asyncio.wait_for(metadata.db.write(lambda c: c.execute(insert)), 5)
        release.set()
        assert await holding == 1
        assert await session.run(count) == 1  # committed: the next transaction sees it
    async with metadata.db.session() as other:
        with pytest.raises((sqlite3.OperationalError, psycopg.errors.UndefinedTable)):
            await other.run(count)
