"""Users and their bcrypt password hashes in an Apache-style htpasswd file.

The file is re-read when it changes, so `registry user add` takes effect on a running server.
Password checks run off the event loop, take the same time for unknown users, and a successful
check is remembered for a short while so a `docker push` does not pay bcrypt on every request.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import re
import secrets
import time

import bcrypt

from registry.files import write_private_file

USER_RE = re.compile(r"[a-z0-9]+(?:[._-][a-z0-9]+)*")
USER_MAX_LENGTH = 64
BCRYPT_ROUNDS = 12
REMEMBER_S = 300.0
REMEMBER_MAX = 4096


class UserError(ValueError):
    """A user name or password that cannot be stored."""


def check_user_name(name: str) -> str:
    if len(name) > USER_MAX_LENGTH or not USER_RE.fullmatch(name):
        raise UserError(f"invalid user name {name!r}: lower-case letters, digits and . _ - between them")
    return name


class Htpasswd:
    """The users of the htpasswd file at `path` (it may not exist yet: then there are none)."""

    def __init__(self, path: str):
        self.path = path
        self._hashes: dict[str, bytes] = {}
        self._stamp: tuple[float, int] | None = None
        self._remembered: dict[bytes, float] = {}
        self._salt = secrets.token_bytes(16)
        self._dummy: bytes | None = None  # checked for unknown users, so they cost the same

    def _current(self) -> dict[str, bytes]:
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

    def fingerprint(self, user: str) -> str | None:
        """A value that changes whenever the user's password does (None for unknown users)."""
        hashed = self._current().get(user)
        return None if hashed is None else hashlib.sha256(hashed).hexdigest()[:16]

    async def verify(self, user: str, password: str) -> bool:
        """Whether `password` is `user`'s, in constant time and off the event loop."""
        hashed = self._current().get(user)
        key = hmac.new(self._salt, f"{user}\0{password}".encode(), hashlib.sha256).digest()
        now = time.monotonic()
        if hashed is not None and self._remembered.get(key, 0.0) > now:
            return True
        if hashed is None and self._dummy is None:
            self._dummy = await asyncio.to_thread(bcrypt.hashpw, secrets.token_bytes(16), bcrypt.gensalt(BCRYPT_ROUNDS))
        ok = await asyncio.to_thread(bcrypt.checkpw, password.encode(), hashed or self._dummy)
        ok = ok and hashed is not None
        if ok:
            if len(self._remembered) >= REMEMBER_MAX:
                self._remembered.clear()
            self._remembered[key] = now + REMEMBER_S
        return ok

    def _write(self, hashes: dict[str, bytes]) -> None:
        write_private_file(self.path, b"".join(f"{u}:{hashes[u].decode()}\n".encode() for u in sorted(hashes)))

    def set_password(self, user: str, password: str) -> None:
        """Add `user` or change their password (stored as a `$2y$` bcrypt hash, like htpasswd -B)."""
        check_user_name(user)
        if not password:
            raise UserError("the password is empty")
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
