"""Blob uploads: `POST` (start, monolithic, mount), `PATCH`, `PUT`, `GET` status and `DELETE`."""

from __future__ import annotations

import re

from starlette.requests import Request
from starlette.responses import Response

from registry.errors import DigestInvalid, RangeInvalid
from registry.facade import ByteRange
from registry.handlers.base import empty_response, registry_of, repository
from registry.handlers.callers import caller
from registry.names import Digest, parse_digest, parse_name
from registry.numbers import NumberInvalid, parse_number
from registry.rule_syntax import PULL
from registry.urls import blob_path, upload_path, upload_range

_CONTENT_RANGE = re.compile(r"(?:bytes[ =])?([0-9]+)-([0-9]+)")


def _content_range(request: Request) -> ByteRange | None:
    """The chunk's `Content-Range`; a malformed one, or one past any possible size, raises RangeInvalid."""
    header = request.headers.get("content-range")
    if header is None:
        return None
    match = _CONTENT_RANGE.fullmatch(header.strip())
    try:
        first, last = (parse_number(match.group(1)), parse_number(match.group(2))) if match else (0, -1)
    except NumberInvalid:
        first, last = 0, -1
    if last < first:
        raise RangeInvalid({"content_range": header[:100]})
    return ByteRange(first, last)


def _has_body(request: Request) -> bool:
    return request.headers.get("content-length", "0") != "0" or "transfer-encoding" in request.headers


def _query_digest(request: Request) -> Digest:
    value = request.query_params.get("digest")
    if not value:
        raise DigestInvalid({"reason": "the digest query parameter is required"}, message="digest missing")
    return parse_digest(value)


def _blob_created(name: str, digest: Digest) -> Response:
    return empty_response(201, {"Location": blob_path(name, str(digest)), "Docker-Content-Digest": str(digest)})


def _upload_progress(status: int, name: str, upload_id: str, size: int) -> Response:
    return empty_response(
        status,
        {"Location": upload_path(name, upload_id), "Range": upload_range(size), "Docker-Upload-UUID": upload_id},
    )


async def start_upload(request: Request) -> Response:
    """`POST`: mount a blob from another repository (`mount`, `from`), push a whole blob (`digest`),
    or else open an upload session."""
    name = repository(request)
    registry = registry_of(request)
    params = request.query_params
    if "mount" in params:
        source = params.get("from")
        digest = parse_digest(params["mount"])
        principal = request.state.principal
        source_name = parse_name(source) if source else None
        if await registry.mount_blob(
            name, digest, source_name, lambda repo: principal.may(repo, PULL), caller(request)
        ):
            return _blob_created(name, digest)
    elif "digest" in params:
        digest = _query_digest(request)
        await registry.push_blob(name, digest, request.stream(), caller(request))
        return _blob_created(name, digest)
    upload_id = await registry.start_upload(name)
    return _upload_progress(202, name, upload_id, 0)


async def patch_upload(request: Request) -> Response:
    """`PATCH`: append a chunk to the upload."""
    name, upload_id = repository(request), request.path_params["upload_id"]
    size = await registry_of(request).append_upload(name, upload_id, request.stream(), _content_range(request))
    return _upload_progress(202, name, upload_id, size)


async def put_upload(request: Request) -> Response:
    """`PUT`: close the upload as the blob `digest`, with a last chunk or none."""
    name, upload_id = repository(request), request.path_params["upload_id"]
    digest = _query_digest(request)
    body, content_range = (request.stream(), _content_range(request)) if _has_body(request) else (None, None)
    await registry_of(request).finish_upload(name, upload_id, digest, body, content_range, caller(request))
    return _blob_created(name, digest)


async def upload_status(request: Request) -> Response:
    """`GET`: how far the upload is."""
    name, upload_id = repository(request), request.path_params["upload_id"]
    size = await registry_of(request).upload_size(name, upload_id)
    return _upload_progress(204, name, upload_id, size)


async def cancel_upload(request: Request) -> Response:
    """`DELETE`: abandon the upload."""
    name, upload_id = repository(request), request.path_params["upload_id"]
    await registry_of(request).cancel_upload(name, upload_id)
    return empty_response(204, {})
