"""Who is looking at a page: the session of the request, the rights it gives, and signing in.

The UI decides as the API does: by the registry's access rules for the session's user (anonymous
without one), with the passwords and the login limiter the API's gate uses. In auth mode `none` there
is no sign-in and every visitor may do everything the API allows.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import Response

from registry.auth.gate import ANYONE, BasicGate, OpenGate, Passwords, Principal, rules_principal
from registry.auth.rules import Rules
from registry.errors import RegistryError
from registry.ui.sessions import COOKIE, Session, Sessions

if TYPE_CHECKING:
    from registry.auth.token_gate import TokenGate

FORM_MAX_BYTES = 16 << 10


@dataclass(frozen=True, slots=True)
class Visitor:
    """The visitor of one request: their session, what they may do, and whether the session is new
    (its cookie is then set on the answer)."""

    session: Session
    principal: Principal
    fresh: bool

    @property
    def user(self) -> str | None:
        return self.session.user


class Visitors:
    """Sessions and rights of the UI's visitors, by the rules and passwords of the API's `gate`."""

    def __init__(self, sessions: Sessions, gate: OpenGate | BasicGate | TokenGate):
        self.sessions = sessions
        self.rules: Rules | None = None
        self.passwords: Passwords | None = None
        if not isinstance(gate, OpenGate):
            self.rules, self.passwords = gate.rules, gate.passwords

    @property
    def sign_in(self) -> bool:
        """Whether visitors can sign in (not in auth mode `none`)."""
        return self.passwords is not None

    def visitor(self, request: Request) -> Visitor:
        """The visitor of `request`: their cookie's session while it is valid and its user's password
        unchanged, else a new anonymous session."""
        session = self.sessions.decode(request.cookies.get(COOKIE))
        if session is not None and session.user is not None and not self._current(session):
            session = None
        fresh = session is None
        if session is None:
            session = self.sessions.new(None)
        return Visitor(session, self.principal(session.user), fresh)

    def _current(self, session: Session) -> bool:
        """Whether a signed-in session still holds: sign-in exists, and the user is there with the same password."""
        if self.passwords is None or session.user is None:
            return False
        return self.passwords.htpasswd.fingerprint(session.user) == session.fingerprint

    def principal(self, user: str | None) -> Principal:
        return ANYONE if self.rules is None else rules_principal(self.rules, user)

    async def check_password(self, request: Request, user: str, password: str) -> Session | None:
        """A new session of `user` when the password is right, else None; raises TooManyRequests (429)
        as the API's logins do, after too many failures or with too many checks waiting."""
        if self.passwords is None:
            return None
        if not await self.passwords.check(user, password, self.passwords.address(request)):
            return None
        return self.sessions.new(user, self.passwords.htpasswd.fingerprint(user))

    def set_cookie(self, request: Request, response: Response, session: Session) -> None:
        """Put `session` in the answer's cookie: signed, HttpOnly, SameSite=Lax, for /ui only."""
        response.set_cookie(
            COOKIE,
            self.sessions.encode(session),
            max_age=self.sessions.lifetime_s,
            path="/ui",
            httponly=True,
            samesite="lax",
            secure=request.url.scheme == "https",
        )


class FormInvalid(RegistryError):
    """A form the UI cannot accept: no valid CSRF token, another site's origin, or a malformed body."""

    code, status, message = "DENIED", 403, "the form cannot be accepted; reload the page and try again"


def visitors_of(request: Request) -> Visitors:
    visitors: Visitors = request.app.state.visitors
    return visitors


async def read_form(request: Request, visitor: Visitor) -> dict[str, str]:
    """The fields of a POSTed urlencoded form (first value each), once it proves it came from our own
    page: its `csrf` field is the session's token, and its Origin, when sent, is this host."""
    origin = request.headers.get("origin")
    if origin is not None and origin.split("://", 1)[-1] != request.headers.get("host"):
        raise FormInvalid({"reason": "cross-origin form"})
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > FORM_MAX_BYTES:
            raise FormInvalid({"reason": "form too large"})
    try:
        parsed = parse_qs(body.decode(), keep_blank_values=True, max_num_fields=16)
    except (UnicodeDecodeError, ValueError):
        raise FormInvalid({"reason": "malformed form"}) from None
    fields = {key: values[0] for key, values in parsed.items()}
    if visitor.fresh or fields.get("csrf") != visitor.session.csrf:
        raise FormInvalid({"reason": "missing or wrong CSRF token"})
    return fields


Page = Callable[[Request, Visitor], Awaitable[Response]]


def page(endpoint: Page) -> Callable[[Request], Awaitable[Response]]:
    """A route of `endpoint`, called with the request's visitor; a new session's cookie is set on its answer."""

    async def handler(request: Request) -> Response:
        visitors = visitors_of(request)
        visitor = visitors.visitor(request)
        request.state.visitor = visitor
        response = await endpoint(request, visitor)
        if visitor.fresh and COOKIE not in response.headers.get("set-cookie", ""):
            visitors.set_cookie(request, response, visitor.session)
        return response

    handler.__name__ = endpoint.__name__
    return handler
