"""Signing in and out of the UI with the registry's own users (auth modes htpasswd and token)."""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from registry.errors import NameUnknown
from registry.ui.rendering import render
from registry.ui.visitors import Visitor, read_form, visitors_of

USER_MAX = 255
PASSWORD_MAX = 1024


def _next(value: str | None) -> str:
    """Where to go after signing in: a path under /ui/ of this site, else the repository list."""
    if value and value.startswith("/ui/") and not value.startswith("//") and not urlsplit(value).netloc:
        return value
    return "/ui/"


def _require_sign_in(request: Request) -> None:
    if not visitors_of(request).sign_in:
        raise NameUnknown({"page": "login"}, message="this registry has no sign-in (auth mode none)")


async def login_form(request: Request, visitor: Visitor) -> Response:
    """`GET /ui/login?next=`: the sign-in form."""
    _require_sign_in(request)
    return render(request, "login.html", {"next": _next(request.query_params.get("next")), "error": None})


async def login(request: Request, visitor: Visitor) -> Response:
    """`POST /ui/login` (username, password, csrf, next): a new session for the user when the password is
    right, else the form again with 401; 429 when the login limits are reached (as for the API)."""
    _require_sign_in(request)
    form = await read_form(request, visitor)
    user, password = form.get("username", "")[:USER_MAX], form.get("password", "")[:PASSWORD_MAX]
    target = _next(form.get("next"))
    session = await visitors_of(request).check_password(request, user, password) if user else None
    if session is None:
        context = {"next": target, "error": "Incorrect username or password.", "username": user}
        return render(request, "login.html", context, status=401)
    response = RedirectResponse(target, 303)
    visitors_of(request).set_cookie(request, response, session)
    return response


async def logout(request: Request, visitor: Visitor) -> Response:
    """`POST /ui/logout` (csrf): end the session; the visitor is anonymous again."""
    await read_form(request, visitor)
    visitors = visitors_of(request)
    response = RedirectResponse("/ui/", 303)
    visitors.set_cookie(request, response, visitors.sessions.new(None))
    return response
