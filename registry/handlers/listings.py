"""Listings: tags of a repository, the catalog of repositories, and the referrers of a manifest."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from registry.handlers.base import (
    json_response,
    namespace,
    next_link,
    pagination,
    path_digest,
    registry_of,
    repository,
)
from registry.oci import OCI_INDEX

CATALOG_PAGE = 100
CATALOG_PAGE_MAX = 1000
TAGS_PAGE_MAX = 1000  # no `n` lists every tag; a larger `n` gets pages of this size and a `Link`


async def list_tags(request: Request) -> Response:
    """`GET` the tags of a repository, a page at a time."""
    name = repository(request)
    last, limit = pagination(request, None, TAGS_PAGE_MAX)
    page = await registry_of(request).tags(name, last, limit, namespace(request))
    headers = next_link(request.url.path, page.items[-1], limit) if page.more and page.items else None
    return json_response({"name": name, "tags": page.items}, headers=headers)


async def catalog(request: Request) -> Response:
    """`GET` the repositories the caller may pull from, a page at a time."""
    last, limit = pagination(request, CATALOG_PAGE, CATALOG_PAGE_MAX)
    principal = request.state.principal
    page = await registry_of(request).repositories(last, limit, principal.pulls())
    headers = next_link(request.url.path, page.items[-1], limit) if page.more and page.items else None
    return json_response({"repositories": page.items}, headers=headers)


async def referrers(request: Request) -> Response:
    """`GET` the manifests whose subject is the digest, as an image index."""
    name, digest = repository(request), path_digest(request)
    artifact_type = request.query_params.get("artifactType") or None
    index = await registry_of(request).referrers(name, digest, artifact_type)
    headers = {"OCI-Filters-Applied": "artifactType"} if artifact_type else None
    return json_response(index, headers=headers, media_type=OCI_INDEX)
