"""The login limiter's queries: recent failed password checks, shared by every worker and replica.

An attempt that needs a password check is reserved first, in one short write transaction that also
prunes rows older than the window, counts the recent failures and, when no limit is reached, records
the attempt as a failure. A right password releases it again. Reserving before the (slow) check and
deciding in the same transaction is what keeps a burst of parallel attempts within the limits.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

from storage.metadata.database import Connection, Database, one


@dataclass(frozen=True, slots=True)
class Limits:
    """Failures allowed within `window_s`: per (user, address), per address over all users, and per
    user over all addresses, each address counting at most `per_pair` towards the last."""

    per_pair: int
    per_address: int
    per_user: int
    window_s: float


@dataclass(frozen=True, slots=True)
class Reservation:
    """The outcome of `reserve`: the attempt's id when it may go ahead, else the seconds to wait."""

    attempt: str | None
    retry_after_s: int


def _wait(oldest: float | None, window_s: float, now: float) -> int:
    """Seconds until the oldest counted failure leaves the window (at least 1)."""
    return max(1, int((oldest if oldest is not None else now) + window_s - now + 1))


def _reserve(c: Connection, user: str, address: str, limits: Limits, now: float) -> Reservation:
    c.execute("DELETE FROM login_failures WHERE at <= ?", (now - limits.window_s,))
    count, oldest = one(
        c.execute("SELECT COUNT(*), MIN(at) FROM login_failures WHERE username = ? AND address = ?", (user, address))
    )
    if count >= limits.per_pair:
        return Reservation(None, _wait(oldest, limits.window_s, now))
    count, oldest = one(c.execute("SELECT COUNT(*), MIN(at) FROM login_failures WHERE address = ?", (address,)))
    if count >= limits.per_address:
        return Reservation(None, _wait(oldest, limits.window_s, now))
    rows = c.execute(
        "SELECT COUNT(*), MIN(at) FROM login_failures WHERE username = ? GROUP BY address", (user,)
    ).fetchall()
    if sum(min(n, limits.per_pair) for n, _ in rows) >= limits.per_user:
        return Reservation(None, _wait(min(at for _, at in rows), limits.window_s, now))
    attempt = secrets.token_hex(12)
    c.execute(
        "INSERT INTO login_failures (id, username, address, at) VALUES (?, ?, ?, ?)", (attempt, user, address, now)
    )
    return Reservation(attempt, 0)


class Logins:
    """Queries of the login limiter over `db` (`Metadata.logins` gives those of its database)."""

    def __init__(self, db: Database):
        self.db = db

    async def reserve(self, user: str, address: str, limits: Limits) -> Reservation:
        """Count an attempt of `user` from `address` as a failure, unless a limit is already reached
        (then nothing is recorded and the reservation says how long to wait). Both are stored as
        given: the caller keeps them to text the database holds (registry/auth/limiter.py)."""
        now = time.time()
        return await self.db.write(lambda c: _reserve(c, user, address, limits, now))

    async def release(self, attempt: str, user: str, address: str) -> None:
        """The reserved attempt succeeded: forget it and the earlier failures of `user` from `address`."""

        def forget(c: Connection) -> None:
            c.execute("DELETE FROM login_failures WHERE id = ?", (attempt,))
            c.execute("DELETE FROM login_failures WHERE username = ? AND address = ?", (user, address))

        await self.db.write(forget)

    async def cancel(self, attempt: str) -> None:
        """The reserved attempt never got its password check: forget just it."""
        await self.db.write(lambda c: c.execute("DELETE FROM login_failures WHERE id = ?", (attempt,)))
