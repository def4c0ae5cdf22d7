"""Deleting a tag, or a manifest with its tags: a confirmation page, then a POST carrying the session's
CSRF token. Only for visitors whose rules allow delete on the repository, and only when the registry
allows deletes at all; the delete goes through the facade as the API's does, so pulls see it at once."""

from __future__ import annotations

from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from registry.errors import Denied, ManifestUnknown
from registry.handlers.callers import caller
from registry.names import Digest, lookup_reference
from registry.ui.pages import may_delete, pullable
from registry.ui.rendering import registry_of, render
from registry.ui.visitors import Visitor, read_form


def _target(request: Request, visitor: Visitor, reference: str) -> tuple[str, str, bool]:
    """(repository, reference, whether it is a digest) of a delete the visitor may make; 404 for a
    repository they may not pull or a reference that is neither a tag nor a digest, 403 without the
    right to delete (or with deletes disabled), 405 in read-only mode."""
    name = pullable(request, visitor)
    registry_of(request).refuse_if_read_only()
    target = lookup_reference(reference)
    if target is None:
        raise ManifestUnknown({"reference": reference[:300]})
    if not may_delete(request, visitor, name):
        raise Denied({"repository": name}, message="you may not delete in this repository")
    return name, reference, isinstance(target, Digest)


async def confirm_delete(request: Request, visitor: Visitor) -> Response:
    """`GET /ui/delete/<name>?reference=`: what would be deleted, and the button that does it."""
    name, reference, by_digest = _target(request, visitor, request.query_params.get("reference", ""))
    record = await registry_of(request).manifest(name, reference)  # 404 when it is not there
    tags: list[str] = []
    if by_digest:
        listing = await registry_of(request).browsing.tags(name, "name", False, 1, 1000)
        tags = [t.row.name for t in listing.tags if t.row.digest == record.digest]
    context = {"name": name, "reference": reference, "by_digest": by_digest, "record": record, "tags": tags}
    return render(request, "delete.html", context)


async def delete(request: Request, visitor: Visitor) -> Response:
    """`POST /ui/delete/<name>` (reference, csrf): delete, then back to the repository's page."""
    form = await read_form(request, visitor)
    name, reference, _ = _target(request, visitor, form.get("reference", ""))
    await registry_of(request).delete_manifest(name, reference, caller(request, visitor.user))
    return RedirectResponse(f"/ui/repositories/{name}?{urlencode({'deleted': reference})}", 303)
