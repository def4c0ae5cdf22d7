"""The token endpoint: `GET` with Basic credentials (Docker token spec) and the OAuth2 `POST` form."""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import Response

from registry.auth.access import requested_scopes
from registry.auth.gate import MalformedCredentials, parse_basic
from registry.errors import TokenRequestInvalid
from registry.handlers.base import json_response, read_body

if TYPE_CHECKING:
    from registry.auth.token_server import TokenServer

FORM_MAX_BYTES = 64 << 10


def _token_server(request: Request) -> TokenServer:
    """The token server the app runs (only routed to when `auth.mode` is `token`)."""
    server: TokenServer = request.app.state.token_server
    return server


def _check_audience(server: TokenServer, asked: str | None) -> None:
    if asked and asked != server.audience:
        raise TokenRequestInvalid({"service": asked[:100]}, message=f"this token service serves {server.audience!r}")


async def get_token(request: Request) -> Response:
    """`GET`: a token for the scopes asked, to the user of the Basic credentials (or anonymous)."""
    server = _token_server(request)
    params = request.query_params
    _check_audience(server, params.get("service"))
    scopes = requested_scopes(params.getlist("scope"))
    try:
        credentials = parse_basic(request.headers.get("authorization"))
    except MalformedCredentials as e:
        raise server.refuse(f"malformed Basic credentials: {e}") from None
    user = None
    if credentials is not None:
        user = await server.sign_in(*credentials, server.passwords.address(request))
    offline = params.get("offline_token", "").lower() == "true"
    return json_response(server.respond(user, scopes, offline))


async def _form(request: Request) -> dict[str, str]:
    body = await read_body(request, FORM_MAX_BYTES, lambda: TokenRequestInvalid(message="form too large"))
    return {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}


async def post_token(request: Request) -> Response:
    """`POST` (OAuth2 form): a token for a password or a refresh token."""
    server = _token_server(request)
    form = await _form(request)
    _check_audience(server, form.get("service"))
    scopes = requested_scopes([form.get("scope", "")])
    grant = form.get("grant_type")
    if grant == "password":
        address = server.passwords.address(request)
        user = await server.sign_in(form.get("username", ""), form.get("password", ""), address)
    elif grant == "refresh_token":
        user = server.redeem(form.get("refresh_token", ""))
    else:
        raise TokenRequestInvalid(
            {"grant_type": (grant or "")[:50]}, message="grant_type must be password or refresh_token"
        )
    offline = form.get("access_type") == "offline"
    return json_response(server.respond(user, scopes, offline))
