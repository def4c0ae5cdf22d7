"""The browsing pages: repositories (with search), a repository's tags, an image, and the storage used.

A repository the visitor may not pull is never listed, counted or summed, and its pages answer 404
exactly like a repository that does not exist.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from registry.errors import DigestInvalid, ManifestUnknown, NameInvalid, NameUnknown
from registry.names import parse_digest, parse_name
from registry.oci import IMAGE_CONFIG_TYPES
from registry.rule_syntax import DELETE, PULL
from registry.ui.images import image_view
from registry.ui.rendering import page_number, pages, registry_of, render
from registry.ui.visitors import Visitor

REPOSITORIES_PER_PAGE = 50
TAGS_PER_PAGE = 50
STORAGE_PER_PAGE = 100
TERM_MAX = 255


def pullable(request: Request, visitor: Visitor) -> str:
    """The repository in the path, when the visitor may pull it; NameUnknown (404) otherwise, also for
    a name that is not a valid repository name."""
    name = request.path_params["name"]
    try:
        parse_name(name)
    except NameInvalid:
        raise NameUnknown({"name": name[:300]}) from None
    if not visitor.principal.may(name, PULL):
        raise NameUnknown({"name": name})
    return str(name)


def may_delete(request: Request, visitor: Visitor, name: str) -> bool:
    """Whether the visitor may delete in `name` and the registry allows deletes at all (and is not read-only)."""
    registry = registry_of(request)
    return registry.delete_enabled and not registry.read_only and visitor.principal.may(name, DELETE)


async def repositories(request: Request, visitor: Visitor) -> Response:
    """`/ui/?q=&page=`: the repositories the visitor may pull whose name or description holds `q`."""
    term = request.query_params.get("q", "")[:TERM_MAX]
    number = page_number(request)
    listing = await registry_of(request).browsing.repositories(
        term, number, REPOSITORIES_PER_PAGE, visitor.principal.pulls()
    )
    return render(
        request,
        "repositories.html",
        {
            "term": term,
            "listing": listing,
            "page": number,
            "pages": pages(listing.total, REPOSITORIES_PER_PAGE),
        },
    )


async def repository(request: Request, visitor: Visitor) -> Response:
    """`/ui/repositories/<name>?sort=name|pushed&order=asc|desc&page=`: the repository's tags."""
    name = pullable(request, visitor)
    sort = request.query_params.get("sort", "pushed")
    sort = sort if sort in ("name", "pushed") else "pushed"
    order = request.query_params.get("order", "desc" if sort == "pushed" else "asc")
    order = order if order in ("asc", "desc") else "asc"
    number = page_number(request)
    listing = await registry_of(request).browsing.tags(name, sort, order == "desc", number, TAGS_PER_PAGE)
    return render(
        request,
        "repository.html",
        {
            "name": name,
            "listing": listing,
            "sort": sort,
            "order": order,
            "page": number,
            "pages": pages(listing.total, TAGS_PER_PAGE),
            "host": request.headers.get("host", "localhost"),
            "may_delete": may_delete(request, visitor, name),
        },
    )


async def image(request: Request, visitor: Visitor) -> Response:
    """`/ui/repositories/<name>/manifests/<digest>`: an image or index, as docker inspect and history show it."""
    name = pullable(request, visitor)
    reference = request.path_params["digest"]
    try:
        digest = parse_digest(reference)
    except DigestInvalid:
        raise ManifestUnknown({"reference": reference[:300]}) from None
    parts = await registry_of(request).browsing.image(name, digest)
    return render(
        request,
        "image.html",
        {
            "name": name,
            "digest": str(digest),
            "record": parts.record,
            "image_configs": IMAGE_CONFIG_TYPES,  # an image's artifact type is its config's: not shown
            "view": image_view(parts),
            "host": request.headers.get("host", "localhost"),
            "may_delete": may_delete(request, visitor, name),
        },
    )


async def storage(request: Request, visitor: Visitor) -> Response:
    """`/ui/storage`: the bytes stored for the repositories the visitor may pull, in all and each."""
    number = page_number(request)
    usage = await registry_of(request).browsing.storage(number, STORAGE_PER_PAGE, visitor.principal.pulls())
    return render(
        request,
        "storage.html",
        {
            "usage": usage,
            "repositories": usage.repositories,
            "count": usage.count,
            "page": number,
            "pages": pages(usage.count, STORAGE_PER_PAGE),
        },
    )
