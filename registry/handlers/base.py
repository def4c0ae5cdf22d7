"""What every handler shares: the registry, path and query parameters, response shapes (error ones
included), and the two endpoints outside any resource (`/v2/` and the health check)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from starlette.convertors import Convertor
from starlette.requests import Request
from starlette.responses import Response

from registry.errors import PaginationNumberInvalid, RegistryError
from registry.facade import Registry
from registry.names import Digest, parse_digest, parse_name
from registry.numbers import NumberInvalid, parse_number

API_VERSION_HEADER = ("Docker-Distribution-API-Version", "registry/2.0")


class RepositoryConvertor(Convertor[str]):
    """The `{name:repository}` part of a route: like Starlette's `path`, but its regex also spans line
    breaks, so a name holding one reaches `repository()` (400 NAME_INVALID) instead of matching no route."""

    regex = "(?s:.*)"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


def registry_of(request: Request) -> Registry:
    """The registry the app serves."""
    registry: Registry = request.app.state.registry
    return registry


def repository(request: Request) -> str:
    """The repository named in the path, checked against the grammar."""
    return parse_name(request.path_params["name"])


def namespace(request: Request) -> str | None:
    """The registry host a containerd mirror request is for (`?ns=docker.io`), or None."""
    return request.query_params.get("ns") or None


def cache_headers(status: str | None) -> dict[str, str]:
    """The headers saying how a pull-through cache served a response (none outside a cache)."""
    if status is None:
        return {}
    headers = {"X-Registry-Cache": status}
    if status == "stale":
        headers["Warning"] = '110 - "Response is Stale"'
    return headers


def path_digest(request: Request) -> Digest:
    """The digest named in the path, checked against the grammar."""
    return parse_digest(request.path_params["digest"])


def pagination(request: Request, default: int | None = None, maximum: int | None = None) -> tuple[str, int | None]:
    """(`last`, `n`) from the query; `n` is clamped to `maximum`; raises PaginationNumberInvalid when
    `n` is not a plain number of at most 2**63-1."""
    last = request.query_params.get("last", "")
    limit = query_number(request, "n")
    if limit is None:
        return last, default
    return last, limit if maximum is None else min(limit, maximum)


def query_number(request: Request, name: str) -> int | None:
    """Query parameter `name` as a number (None when missing or empty); raises PaginationNumberInvalid
    when it is not a plain number of at most 2**63-1."""
    value = request.query_params.get(name)
    if not value:
        return None
    try:
        return parse_number(value)
    except NumberInvalid:
        raise PaginationNumberInvalid({name: value[:50]}) from None


def next_link(path: str, last: str, limit: int | None) -> dict[str, str]:
    """The `Link` header of the page after `last`."""
    return {"Link": f'<{path}?{urlencode({"last": last, "n": limit})}>; rel="next"'}


def _declared_length(declared: str, limit: int) -> int:
    """A `Content-Length` as a number, any value over `limit` read as `limit + 1`; 0 when it is not a
    number (the server refuses those before the app sees them)."""
    try:
        return parse_number(declared, limit + 1, saturate=True)
    except NumberInvalid:
        return 0


async def read_body(request: Request, limit: int, too_large: Callable[[], Exception]) -> bytes:
    """The whole request body, refused with `too_large()` as soon as it (or its declared length)
    passes `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and _declared_length(declared, limit) > limit:
        raise too_large()
    body = bytearray()
    async for data in request.stream():
        body += data
        if len(body) > limit:
            raise too_large()
    return bytes(body)


def json_response(
    body: Any, status: int = 200, headers: dict[str, str] | None = None, media_type: str = "application/json"
) -> Response:
    return Response(json.dumps(body, separators=(",", ":")).encode(), status, headers, media_type)


def empty_response(status: int, headers: dict[str, str]) -> Response:
    """A response with no body (Content-Length 0) and the given headers."""
    return Response(b"", status, headers)


def error_response(error: RegistryError) -> Response:
    """The response of every error: its body as JSON, its status and its headers."""
    return json_response(error.body(), error.status, error.headers or None)


async def version_check(request: Request) -> Response:
    """`GET /v2/`: this server speaks the registry API."""
    return json_response({})


async def health(request: Request) -> Response:
    """`GET /healthz`, liveness and readiness: 200 once the metadata store answers."""
    await registry_of(request).ready()
    return json_response({"status": "ok"})
