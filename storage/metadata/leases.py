"""Leases by name in the `locks` table: one holder at a time across every process and replica, until
the lease expires unless renewed (the collector's, and the pull-through cache's single-flight fetches)."""

from __future__ import annotations

import time

from storage.metadata.database import Connection, Database


def _take(c: Connection, name: str, holder: str, ttl_s: float, now: float) -> bool:
    row = c.execute("SELECT holder, expires_at FROM locks WHERE name = ?", (name,)).fetchone()
    if row is None:
        c.execute("INSERT INTO locks (name, holder, expires_at) VALUES (?, ?, ?)", (name, holder, now + ttl_s))
        return True
    if row[0] != holder and row[1] > now:
        return False
    c.execute("UPDATE locks SET holder = ?, expires_at = ? WHERE name = ?", (holder, now + ttl_s, name))
    return True


class Leases:
    """Named leases over `db`."""

    def __init__(self, db: Database):
        self.db = db

    async def take(self, name: str, holder: str, ttl_s: float) -> bool:
        """Take or renew lease `name` for `holder` for `ttl_s` seconds; False while another holder has
        it (an expired lease is anyone's)."""
        now = time.time()
        return await self.db.write(lambda c: _take(c, name, holder, ttl_s, now))

    async def release(self, name: str, holder: str) -> None:
        """Give up lease `name` if `holder` has it."""
        await self.db.write(lambda c: c.execute("DELETE FROM locks WHERE name = ? AND holder = ?", (name, holder)))

    async def held(self, name: str) -> bool:
        """Whether someone holds lease `name` now (a read: it may change at once)."""
        now = time.time()
        row = await self.db.read(lambda c: c.execute("SELECT expires_at FROM locks WHERE name = ?", (name,)).fetchone())
        return row is not None and row[0] > now
