"""Users and their bcrypt password hashes in an Apache-style htpasswd file.

The file is re-read when it changes, so `registry user add` takes effect on a running server.
Password checks run off the event loop on a small pool of their own (so they never hold up file
reads, which use the default one), take the same time for unknown users, and a successful check is
remembered for a short while so a `docker push` does not pay bcrypt on every request. Like Apache's
htpasswd, bcrypt looks at the first 72 bytes of a password only.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import re
import secrets
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import bcrypt

from registry.errors import TooManyRequests
from registry.files import write_private_file

USER_RE = re.compile(r"[a-z0-9]+(?:[._-][a-z0-9]+)*")
USER_MAX_LENGTH = 64
BCRYPT_ROUNDS = 12
REMEMBER_S = 300.0
REMEMBER_MAX = 4096
BCRYPT_MAX_BYTES = 72  # bcrypt reads no further; bcrypt 5 raises on longer passwords instead
RESTAT_S = 1.0  # `has_user` looks at the file at most this often

T = TypeVar("T")


class UserError(ValueError):
    """A user name or password that cannot be stored."""


def check_user_name(name: str) -> str:
    if len(name) > USER_MAX_LENGTH or not USER_RE.fullmatch(name):
        raise UserError(f"invalid user name {name!r}: lower-case letters, digits and . _ - between them")
    return name


class Htpasswd:
    """The users of the htpasswd file at `path` (it may not exist yet: then there are none).

    At most `threads` password checks run at once, with up to `queue` more waiting; beyond that,
    `verify` raises TooManyRequests."""

    def __init__(self, path: str, threads: int = 2, queue: int = 32):
        self.path = path
        self._hashes: dict[str, bytes] = {}
        self._stamp: tuple[float, int] | None = None
        self._checked_at = -RESTAT_S
        self._threads, self._queue = threads, queue
        self._pool: ThreadPoolExecutor | None = None
        self._running = 0
        self._remembered: dict[bytes, float] = {}
        self._salt = secrets.token_bytes(16)
        self._dummy: bytes | None = None  # checked for unknown users, so they cost the same

    def _current(self) -> dict[str, bytes]:
        self._checked_at = time.monotonic()
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self._hashes, self._stamp = {}, None
            return self._hashes
        stamp = (st.st_mtime, st.st_size)
        if stamp != self._stamp:
            hashes = {}
            with open(self.path, "rb") as f:
                for line in f.read().decode().splitlines():
                    user, sep, hashed = line.strip().partition(":")
                    if sep and user and hashed.startswith("$2"):
                        hashes[user] = hashed.encode()
            self._hashes, self._stamp = hashes, stamp
            self._remembered.clear()
        return self._hashes

    def users(self) -> list[str]:
        return sorted(self._current())

    def has_user(self, user: str) -> bool:
        """Whether `user` exists, as of at most RESTAT_S ago (cheap enough for every request)."""
        hashes = self._current() if time.monotonic() - self._checked_at >= RESTAT_S else self._hashes
        return user in hashes

    def fingerprint(self, user: str) -> str | None:
        """A value that changes whenever the user's password does (None for unknown users)."""
        hashed = self._current().get(user)
        return None if hashed is None else hashlib.sha256(hashed).hexdigest()[:16]

    def _key(self, user: str, password: str) -> bytes:
        return hmac.new(self._salt, f"{user}\0{password}".encode(), hashlib.sha256).digest()

    def remembered(self, user: str, password: str) -> bool:
        """Whether `password` was found right for `user` within REMEMBER_S (and the file is unchanged)."""
        return user in self._current() and self._remembered.get(self._key(user, password), 0.0) > time.monotonic()

    async def _hashing(self, fn: Callable[..., T], *args: object) -> T:
        """`fn(*args)` on the password threads; TooManyRequests when too many already wait."""
        if self._running >= self._threads + self._queue:
            raise TooManyRequests(
                {"reason": "too many password checks at once"},
                message="too many logins at once; try again shortly",
                headers={"Retry-After": "1"},
            )
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self._threads, thread_name_prefix="password-hash")
        self._running += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)
        finally:
            self._running -= 1

    async def verify(self, user: str, password: str) -> bool:
        """Whether `password` is `user`'s, in constant time and off the event loop (its first 72
        bytes, as bcrypt reads them). Raises TooManyRequests when too many checks are queued."""
        if self.remembered(user, password):
            return True
        hashed = self._current().get(user)
        if hashed is None and self._dummy is None:
            self._dummy = await self._hashing(bcrypt.hashpw, secrets.token_bytes(16), bcrypt.gensalt(BCRYPT_ROUNDS))
        secret = password.encode()[:BCRYPT_MAX_BYTES]
        ok = await self._hashing(bcrypt.checkpw, secret, hashed or self._dummy)
        ok = ok and hashed is not None
        if ok:
            if len(self._remembered) >= REMEMBER_MAX:
                self._remembered.clear()
            self._remembered[self._key(user, password)] = time.monotonic() + REMEMBER_S
        return ok

    def _write(self, hashes: dict[str, bytes]) -> None:
        write_private_file(self.path, b"".join(f"{u}:{hashes[u].decode()}\n".encode() for u in sorted(hashes)))

    def set_password(self, user: str, password: str) -> None:
        """Add `user` or change their password (stored as a `$2y$` bcrypt hash, like htpasswd -B)."""
        check_user_name(user)
        if not password:
            raise UserError("the password is empty")
        if len(password.encode()) > BCRYPT_MAX_BYTES:
            raise UserError(f"the password is longer than {BCRYPT_MAX_BYTES} bytes, more than bcrypt can use")
        hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(BCRYPT_ROUNDS))
        hashes = dict(self._current())
        hashes[user] = b"$2y$" + hashed[4:]
        self._write(hashes)

    def remove(self, user: str) -> bool:
        """Remove `user`; False when there was no such user."""
        hashes = dict(self._current())
        if hashes.pop(user, None) is None:
            return False
        self._write(hashes)
        return True
