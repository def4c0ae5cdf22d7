"""The gate every API request passes: who is calling, and may they have the access the route needs.

Three modes: `none` lets everything through; `htpasswd` checks HTTP Basic credentials on each
request against the access rules; `token` (token_gate.py) checks a Bearer token (ours or a trusted
issuer's) and its `access` claim. A caller without enough access gets 401 with a challenge naming the scope to ask
for, or 403 DENIED when they are known and the rules do not allow it.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from dataclasses import dataclass

from starlette.requests import Request

from registry.auth.access import Access
from registry.auth.limiter import LoginLimiter
from registry.auth.rules import Rules
from registry.auth.users import Htpasswd
from registry.errors import Denied, TooManyRequests, Unauthorized


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller of a request: `user` (None: anonymous) and `may(repository, action)`."""

    user: str | None
    may: Callable[[str, str], bool]


ANYONE = Principal(None, lambda repository, action: True)


def parse_basic(header: str | None) -> tuple[str, str] | None:
    """(user, password) of an HTTP Basic `Authorization` header, or None."""
    if not header or header[:6].lower() != "basic ":
        return None
    try:
        user, sep, password = base64.b64decode(header[6:].strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return (user, password) if sep else None


def client_address(request: Request) -> str:
    return request.client.host if request.client else "-"


class Passwords:
    """Password checks with failed-login limits per user and address."""

    def __init__(self, htpasswd: Htpasswd, limiter: LoginLimiter):
        self.htpasswd, self.limiter = htpasswd, limiter

    async def check(self, user: str, password: str, address: str) -> bool:
        """Whether the password is right; raises TooManyRequests after too many failures."""
        wait = self.limiter.retry_after(user, address)
        if wait:
            raise TooManyRequests(
                {"retry_after_s": wait},
                message="too many failed logins; try again later",
                headers={"Retry-After": str(wait)},
            )
        if await self.htpasswd.verify(user, password):
            self.limiter.succeeded(user, address)
            return True
        self.limiter.failed(user, address)
        return False


def rules_allow(rules: Rules, user: str | None, needed: Access) -> bool:
    if needed.type == "repository":
        return set(needed.actions) <= rules.actions(user, needed.name)
    return needed.type == "registry" and needed.name == "catalog"  # listings are filtered instead


def rules_principal(rules: Rules, user: str | None) -> Principal:
    return Principal(user, lambda repository, action: action in rules.actions(user, repository))


class OpenGate:
    """Mode `none`: no authentication at all."""

    async def admit(self, request: Request, needed: list[Access]) -> Principal:
        return ANYONE


class BasicGate:
    """Mode `htpasswd`: HTTP Basic credentials on every request, then the rules."""

    def __init__(self, passwords: Passwords, rules: Rules, realm: str):
        self.passwords, self.rules, self.realm = passwords, rules, realm

    def _challenge(self, message: str | None = None) -> Unauthorized:
        return Unauthorized(message=message, headers={"WWW-Authenticate": f'Basic realm="{self.realm}"'})

    async def admit(self, request: Request, needed: list[Access]) -> Principal:
        credentials = parse_basic(request.headers.get("authorization"))
        user = None
        if credentials is not None:
            user, password = credentials
            if not await self.passwords.check(user, password, client_address(request)):
                raise self._challenge("incorrect username or password")
        elif not needed:
            raise self._challenge()  # `GET /v2/` asks for credentials so `docker login` has a challenge
        for access in needed:
            if not rules_allow(self.rules, user, access):
                raise self._challenge() if user is None else Denied({"scope": str(access)})
        return rules_principal(self.rules, user)
