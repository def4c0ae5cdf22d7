"""Manifests by tag or digest: `GET`/`HEAD` with content negotiation, `PUT`, `DELETE`."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from registry.errors import ManifestTooLarge, ManifestUnknown
from registry.facade import ManifestRecord
from registry.handlers.base import cache_headers, empty_response, namespace, read_body, registry_of, repository
from registry.handlers.callers import caller
from registry.urls import manifest_path


def _acceptable(media_type: str, request: Request) -> bool:
    """Whether the client's `Accept` headers admit `media_type` (no header admits anything)."""
    accepted = {
        item.split(";", 1)[0].strip()
        for header in request.headers.getlist("accept")
        for item in header.split(",")
        if item.strip()
    }
    return not accepted or media_type in accepted or "*/*" in accepted


def _headers(record: ManifestRecord) -> dict[str, str]:
    return {
        "Content-Type": record.media_type,
        "Content-Length": str(record.size),
        "Docker-Content-Digest": record.digest,
        "ETag": f'"{record.digest}"',
    }


async def get_manifest(request: Request) -> Response:
    """`GET`/`HEAD` a manifest by tag or digest, if the `Accept` headers admit its media type."""
    name, reference = repository(request), request.path_params["reference"]
    registry = registry_of(request)
    who = caller(request) if request.method == "GET" else None
    pulled = await registry.pull_manifest(name, reference, namespace(request), who)
    record = pulled.record
    if not _acceptable(record.media_type, request):
        raise ManifestUnknown(
            {"reference": reference, "media_type": record.media_type},
            message=f"the manifest is a {record.media_type}, which the Accept header does not admit",
        )
    body = None if request.method == "HEAD" else await registry.manifest_bytes(record)
    return Response(body, 200, _headers(record) | cache_headers(pulled.cache))


async def put_manifest(request: Request) -> Response:
    """`PUT` a manifest under a tag or its digest."""
    name, reference = repository(request), request.path_params["reference"]
    registry = registry_of(request)
    limit = registry.manifest_max_bytes
    body = await read_body(request, limit, lambda: ManifestTooLarge({"limit": limit}))
    record = await registry.put_manifest(name, reference, body, request.headers.get("content-type"), caller(request))
    headers = {"Location": manifest_path(name, record.digest), "Docker-Content-Digest": record.digest}
    if record.subject:
        headers["OCI-Subject"] = record.subject
    return empty_response(201, headers)


async def delete_manifest(request: Request) -> Response:
    """`DELETE` a manifest by digest (with its tags), or only a tag."""
    name, reference = repository(request), request.path_params["reference"]
    await registry_of(request).delete_manifest(name, reference, caller(request))
    return empty_response(202, {})
