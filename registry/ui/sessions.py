"""The web UI's sessions: a cookie signed with HMAC-SHA256 holding the user, an expiry and a CSRF token.

The signing key is a file in the data directory, created on first use by whichever worker comes first
(the others read it), so every worker and every replica sharing the directory accepts the same cookies.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import os
import secrets
import tempfile
import time
from dataclasses import dataclass

KEY_BYTES = 32
COOKIE = "registry_ui_session"
COOKIE_MAX = 1024  # a longer cookie is not one of ours: refused unread


@dataclass(frozen=True, slots=True)
class Session:
    """A visitor's session: `user` (None: anonymous), when it ends (Unix seconds), the token every form
    that changes something must carry (`csrf`), and the fingerprint of the user's password at sign-in
    (a changed password ends the session)."""

    user: str | None
    expires: int
    csrf: str
    fingerprint: str | None = None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def load_or_create_key(path: str) -> bytes:
    """The key in file `path`, created there (KEY_BYTES random bytes, mode 0600) when missing. Creation
    is atomic and never replaces a file: of workers starting together, one writes it and all read it."""
    try:
        with open(path, "rb") as f:
            key = f.read()
    except FileNotFoundError:
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, mode=0o700, exist_ok=True)  # the data directory: private, as the drivers make it
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(secrets.token_bytes(KEY_BYTES))
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o600)
            with contextlib.suppress(FileExistsError):  # another worker created it first: theirs counts
                os.link(tmp, path)
        finally:
            os.unlink(tmp)
        with open(path, "rb") as f:
            key = f.read()
    if len(key) < KEY_BYTES:
        raise ValueError(f"the UI session key in {path} is shorter than {KEY_BYTES} bytes")
    return key


class Sessions:
    """Issues and reads session cookies signed with `key`, each lasting `lifetime_s`."""

    def __init__(self, key: bytes, lifetime_s: int):
        self.key, self.lifetime_s = key, lifetime_s

    def new(self, user: str | None, fingerprint: str | None = None) -> Session:
        """A fresh session of `user` (None: anonymous), with a new CSRF token."""
        return Session(user, int(time.time()) + self.lifetime_s, secrets.token_urlsafe(24), fingerprint)

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self.key, payload.encode(), hashlib.sha256).digest())

    def encode(self, session: Session) -> str:
        """The cookie value of `session`: its fields as JSON, base64url, a dot, and their HMAC."""
        fields = [session.user, session.expires, session.csrf, session.fingerprint]
        payload = _b64(json.dumps(fields, separators=(",", ":")).encode())
        return f"{payload}.{self._sign(payload)}"

    def decode(self, value: str | None) -> Session | None:
        """The session of a cookie value, None when there is none, or it is not signed with our key,
        malformed, or expired."""
        if not value or len(value) > COOKIE_MAX:
            return None
        payload, _, signature = value.partition(".")
        if not hmac.compare_digest(signature.encode(), self._sign(payload).encode()):
            return None
        try:
            user, expires, csrf, fingerprint = json.loads(_unb64(payload))
        except (ValueError, TypeError):
            return None
        if not (
            (user is None or isinstance(user, str))
            and type(expires) is int
            and isinstance(csrf, str)
            and (fingerprint is None or isinstance(fingerprint, str))
        ):
            return None
        if expires <= time.time():
            return None
        return Session(user, expires, csrf, fingerprint)
