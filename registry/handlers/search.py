"""`docker search HOST/term`: the registry API v1 endpoints the Docker engine calls for it
(`GET /v1/_ping`, then `GET /v1/search?q=&n=&page=`), answered from the metadata index."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from registry.handlers.base import json_response, query_number, registry_of

PAGE_SIZE = 25  # the engine's default `n`
PAGE_SIZE_MAX = 100  # the engine's largest `--limit`


async def ping(request: Request) -> Response:
    """`GET /v1/_ping`: a standalone registry (the engine then sends the credentials `docker login`
    stored for it with the search)."""
    return json_response({}, headers={"X-Docker-Registry-Standalone": "true"})


def _number(request: Request, name: str, default: int, maximum: int) -> int:
    """Query parameter `name` as a number from 1 to `maximum` (clamped), `default` when missing."""
    value = query_number(request, name)
    return default if value is None else max(1, min(value, maximum))


async def search(request: Request) -> Response:
    """`GET /v1/search`: the repositories the caller may pull whose name or description holds `q`
    (ignoring case), in the format the Docker CLI reads."""
    term = request.query_params.get("q", "")
    size = _number(request, "n", PAGE_SIZE, PAGE_SIZE_MAX)
    page = _number(request, "page", 1, 1 << 31)
    principal = request.state.principal
    found = await registry_of(request).search(term, page, size, principal.pulls())
    results = [
        {"name": name, "description": about or "", "star_count": 0, "is_official": False, "is_automated": False}
        for name, about in found.repositories
    ]
    return json_response(
        {
            "num_results": found.total,
            "num_pages": (found.total + size - 1) // size,
            "page": page,
            "page_size": size,
            "query": term,
            "results": results,
        }
    )
