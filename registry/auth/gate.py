"""The gate every API request passes: who is calling, and may they have the access the route needs.

Three modes: `none` lets everything through; `htpasswd` checks HTTP Basic credentials on each
request against the access rules; `token` (token_gate.py) checks a Bearer token (ours or a trusted
issuer's) and its `access` claim. A caller without enough access gets 401 with a challenge naming the scope to ask
for, or 403 DENIED when they are known and the rules do not allow it.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass

from starlette.requests import Request

from registry.auth.access import Access
from registry.auth.clients import ClientAddresses
from registry.auth.limiter import LoginLimiter
from registry.auth.rules import Rules
from registry.auth.users import Htpasswd
from registry.errors import Denied, TooManyRequests, Unauthorized
from registry.rule_syntax import PULL
from storage.metadata import EVERYTHING, Visibility


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller of a request: `user` (None: anonymous), `may(repository, action)`, and `pulls()`: the
    repositories they may pull as a filter for the index (exactly those `may(name, PULL)` admits)."""

    user: str | None
    may: Callable[[str, str], bool]
    pulls: Callable[[], Visibility]


ANYONE = Principal(None, lambda repository, action: True, lambda: EVERYTHING)


class MalformedCredentials(ValueError):
    """An `Authorization: Basic` header that does not hold `user:password` in base64."""


def parse_basic(header: str | None) -> tuple[str, str] | None:
    """(user, password) of an HTTP Basic `Authorization` header; None without one (or with another
    scheme); raises MalformedCredentials when it is Basic but unreadable."""
    if not header or header.split(" ", 1)[0].lower() != "basic":
        return None
    try:
        user, sep, password = base64.b64decode(header[6:].strip(), validate=True).decode().partition(":")
    except ValueError:  # binascii.Error, UnicodeDecodeError, or non-ASCII characters in the header
        raise MalformedCredentials("not base64 of UTF-8 text") from None
    if not sep:
        raise MalformedCredentials("no `:` between user and password")
    return user, password


class Passwords:
    """Password checks with failed-login limits (see limiter.py) and the client address they count by."""

    def __init__(self, htpasswd: Htpasswd, limiter: LoginLimiter, addresses: ClientAddresses):
        self.htpasswd, self.limiter, self.addresses = htpasswd, limiter, addresses

    def address(self, request: Request) -> str:
        return self.addresses.of(request)

    async def check(self, user: str, password: str, address: str) -> bool:
        """Whether the password is right; raises TooManyRequests after too many failures, or when
        too many password checks are waiting. A password remembered as right costs no metadata write."""
        if self.htpasswd.remembered(user, password):
            return True
        attempt = await self.limiter.reserve(user, address)
        try:
            ok = await self.htpasswd.verify(user, password)
        except TooManyRequests:
            await self.limiter.abandoned(attempt)
            raise
        if ok:
            await self.limiter.succeeded(attempt, user, address)
        return ok


def rules_allow(rules: Rules, user: str | None, needed: Access) -> bool:
    if needed.type == "repository":
        return set(needed.actions) <= rules.actions(user, needed.name)
    return needed.type == "registry" and needed.name == "catalog"  # listings are filtered instead


def rules_principal(rules: Rules, user: str | None) -> Principal:
    return Principal(
        user, lambda repository, action: action in rules.actions(user, repository), lambda: rules.visibility(user, PULL)
    )


class OpenGate:
    """Mode `none`: no authentication at all."""

    async def admit(self, request: Request, needed: list[Access]) -> Principal:
        return ANYONE

    async def identify(self, request: Request) -> Principal:
        return ANYONE


class BasicGate:
    """Mode `htpasswd`: HTTP Basic credentials on every request, then the rules."""

    def __init__(self, passwords: Passwords, rules: Rules, realm: str):
        self.passwords, self.rules, self.realm = passwords, rules, realm

    def _challenge(self, message: str | None = None) -> Unauthorized:
        return Unauthorized(message=message, headers={"WWW-Authenticate": f'Basic realm="{self.realm}"'})

    async def admit(self, request: Request, needed: list[Access]) -> Principal:
        user = await self._user(request)
        if user is None and not needed:
            raise self._challenge()  # `GET /v2/` asks for credentials so `docker login` has a challenge
        for access in needed:
            if not rules_allow(self.rules, user, access):
                raise self._challenge() if user is None else Denied({"scope": str(access)})
        return rules_principal(self.rules, user)

    async def identify(self, request: Request) -> Principal:
        """The caller, anonymous without credentials; 401 for wrong ones."""
        return rules_principal(self.rules, await self._user(request))

    async def _user(self, request: Request) -> str | None:
        """The user whose Basic credentials came with `request` (None: none came); 401 when wrong."""
        return await basic_user(self.passwords, request, self._challenge)


async def basic_user(passwords: Passwords, request: Request, challenge: Callable[[str], Unauthorized]) -> str | None:
    """The user of the request's HTTP Basic credentials, None without any; raises `challenge(reason)`
    when they are malformed or wrong."""
    try:
        credentials = parse_basic(request.headers.get("authorization"))
    except MalformedCredentials as e:
        raise challenge(f"malformed Basic credentials: {e}") from None
    if credentials is None:
        return None
    user, password = credentials
    if not await passwords.check(user, password, passwords.address(request)):
        raise challenge("incorrect username or password")
    return user
