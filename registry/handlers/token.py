"""The token endpoint: `GET` with Basic credentials (Docker token spec) and the OAuth2 `POST` form."""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import Response

from registry.auth.access import TokenRequestInvalid, requested_scopes
from registry.auth.gate import MalformedCredentials, parse_basic
from registry.handlers.base import json_response, read_body

if TYPE_CHECKING:
    from registry.auth.token_server import TokenServer

FORM_MAX_BYTES = 64 << 10


def _service(request: Request) -> TokenServer:
    return request.app.state.token_server


def _check_audience(service: TokenServer, asked: str | None) -> None:
    if asked and asked != service.audience:
        raise TokenRequestInvalid({"service": asked[:100]}, message=f"this token service serves {service.audience!r}")


async def get_token(request: Request) -> Response:
    service = _service(request)
    params = request.query_params
    _check_audience(service, params.get("service"))
    scopes = requested_scopes(params.getlist("scope"))
    try:
        credentials = parse_basic(request.headers.get("authorization"))
    except MalformedCredentials as e:
        raise service.refuse(f"malformed Basic credentials: {e}") from None
    user = None
    if credentials is not None:
        user = await service.sign_in(*credentials, service.passwords.address(request))
    offline = params.get("offline_token", "").lower() == "true"
    return json_response(service.respond(user, scopes, offline))


async def _form(request: Request) -> dict[str, str]:
    body = await read_body(request, FORM_MAX_BYTES, lambda: TokenRequestInvalid(message="form too large"))
    return {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}


async def post_token(request: Request) -> Response:
    service = _service(request)
    form = await _form(request)
    _check_audience(service, form.get("service"))
    scopes = requested_scopes([form.get("scope", "")])
    grant = form.get("grant_type")
    if grant == "password":
        address = service.passwords.address(request)
        user = await service.sign_in(form.get("username", ""), form.get("password", ""), address)
    elif grant == "refresh_token":
        user = service.redeem(form.get("refresh_token", ""))
    else:
        raise TokenRequestInvalid(
            {"grant_type": (grant or "")[:50]}, message="grant_type must be password or refresh_token"
        )
    offline = form.get("access_type") == "offline"
    return json_response(service.respond(user, scopes, offline))
