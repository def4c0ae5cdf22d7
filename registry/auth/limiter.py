"""Failed-login limits, kept in the metadata store so every worker and replica counts the same failures.

Each password check is reserved (counted as a failure) before it runs and released when the password
was right, so a burst of parallel attempts gets no more checks than the limit allows. Limits apply
per (user, address), per address over all users (spraying), and per user over all addresses, where
each address counts at most its own limit: one address alone never locks a user out for everyone.
"""

from __future__ import annotations

import hashlib

from registry.errors import TooManyRequests
from storage.metadata import Limits, Logins

KEY_MAX_LENGTH = 128


def stored_key(value: str) -> str:
    """`value` (a user name or an address, as the client sent it) as the metadata store keeps it: itself when
    it is short printable text, else `#` and its SHA-256, since the store cannot hold every string
    (PostgreSQL refuses a NUL) and an unbounded one would let a client grow it."""
    if len(value) <= KEY_MAX_LENGTH and value.isprintable() and not value.startswith("#"):
        return value
    return "#" + hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()


class LoginLimiter:
    """Reserves and releases password checks against the limits; see the module docstring."""

    def __init__(self, logins: Logins, limits: Limits):
        self.logins, self.limits = logins, limits

    async def reserve(self, user: str, address: str) -> str:
        """Count an attempt of `user` from `address` as failed until released; returns its id.
        Raises TooManyRequests (with Retry-After) when a limit is reached."""
        reservation = await self.logins.reserve(stored_key(user), stored_key(address), self.limits)
        if reservation.attempt is None:
            wait = reservation.retry_after_s
            raise TooManyRequests(
                {"retry_after_s": wait},
                message="too many failed logins; try again later",
                headers={"Retry-After": str(wait)},
            )
        return reservation.attempt

    async def succeeded(self, attempt: str, user: str, address: str) -> None:
        """The password was right: the attempt and earlier failures of the pair no longer count."""
        await self.logins.release(attempt, stored_key(user), stored_key(address))

    async def abandoned(self, attempt: str) -> None:
        """The attempt never got its password check (the checks were too busy): it does not count."""
        await self.logins.cancel(attempt)
