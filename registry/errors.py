"""Every error the registry answers with, one class per OCI / Distribution error code with its HTTP
status, and the one place where storage exceptions become them (`storage_errors`).

RegistryError
├── BlobUnknown                404 BLOB_UNKNOWN
├── BlobUploadInvalid          400 BLOB_UPLOAD_INVALID
├── BlobUploadUnknown          404 BLOB_UPLOAD_UNKNOWN
├── DigestInvalid              400 DIGEST_INVALID
├── ManifestBlobUnknown        400 MANIFEST_BLOB_UNKNOWN
├── ManifestInvalid            400 MANIFEST_INVALID
│   └── ManifestTooLarge       413 MANIFEST_INVALID
├── ManifestUnknown            404 MANIFEST_UNKNOWN
├── NameInvalid                400 NAME_INVALID
├── NameUnknown                404 NAME_UNKNOWN
├── SizeInvalid                400 SIZE_INVALID
├── TagInvalid                 400 TAG_INVALID
├── Unauthorized               401 UNAUTHORIZED
├── Denied                     403 DENIED
├── Unsupported                405 UNSUPPORTED
├── TokenRequestInvalid        400 UNSUPPORTED
├── RangeInvalid               416 RANGE_INVALID
├── HostInvalid                400 HOST_INVALID
├── PaginationNumberInvalid    400 PAGINATION_NUMBER_INVALID
├── EndpointUnknown            404 NOT_FOUND
├── TooManyRequests            429 TOOMANYREQUESTS
└── Unavailable                503 UNAVAILABLE

A RegistryError itself is UNKNOWN, 500 unless told another status. The app renders every error a
request meets through one exception handler (registry.app): a RegistryError as it is, a storage
exception through `translate`, anything else as UNKNOWN.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from storage.errors import BackendUnavailable, BlobCollecting, MissingReferences, NotFound, StorageError


class RegistryError(Exception):
    """An error the client sees as `{"errors": [{"code", "message", "detail"}]}` with `status`."""

    code = "UNKNOWN"
    status = 500
    message = "unknown error"

    def __init__(
        self,
        detail: Any = None,
        *,
        message: str | None = None,
        headers: dict[str, str] | None = None,
        status: int | None = None,
    ):
        super().__init__(message or self.message)
        self.detail = detail
        if message:
            self.message = message
        if status is not None:
            self.status = status
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.detail is not None:
            error["detail"] = self.detail
        return {"errors": [error]}


class BlobUnknown(RegistryError):
    code, status, message = "BLOB_UNKNOWN", 404, "blob unknown to registry"


class BlobUploadInvalid(RegistryError):
    code, status, message = "BLOB_UPLOAD_INVALID", 400, "blob upload invalid"


class BlobUploadUnknown(RegistryError):
    code, status, message = "BLOB_UPLOAD_UNKNOWN", 404, "blob upload unknown to registry"


class DigestInvalid(RegistryError):
    code, status, message = "DIGEST_INVALID", 400, "provided digest did not match uploaded content"


class ManifestBlobUnknown(RegistryError):
    code, status, message = "MANIFEST_BLOB_UNKNOWN", 400, "manifest references a manifest or blob unknown to registry"


class ManifestInvalid(RegistryError):
    code, status, message = "MANIFEST_INVALID", 400, "manifest invalid"


class ManifestTooLarge(ManifestInvalid):
    status, message = 413, "manifest too large"


class ManifestUnknown(RegistryError):
    code, status, message = "MANIFEST_UNKNOWN", 404, "manifest unknown to registry"


class NameInvalid(RegistryError):
    code, status, message = "NAME_INVALID", 400, "invalid repository name"


class NameUnknown(RegistryError):
    code, status, message = "NAME_UNKNOWN", 404, "repository name not known to registry"


class SizeInvalid(RegistryError):
    code, status, message = "SIZE_INVALID", 400, "provided length did not match content length"


class TagInvalid(RegistryError):
    code, status, message = "TAG_INVALID", 400, "manifest tag did not match URI"


class Unauthorized(RegistryError):
    code, status, message = "UNAUTHORIZED", 401, "authentication required"


class Denied(RegistryError):
    code, status, message = "DENIED", 403, "requested access to the resource is denied"


class Unsupported(RegistryError):
    code, status, message = "UNSUPPORTED", 405, "the operation is unsupported"


class TokenRequestInvalid(RegistryError):
    """A request to the token endpoint the token server cannot serve (Docker's token spec names no code)."""

    code, status, message = "UNSUPPORTED", 400, "invalid token request"


class RangeInvalid(RegistryError):
    code, status, message = "RANGE_INVALID", 416, "invalid content range"


class HostInvalid(RegistryError):
    """A `Host` header that is not an RFC 3986 host: no OCI code names a malformed request header, so
    this one says exactly what was wrong rather than borrowing UNSUPPORTED (an unsupported operation)."""

    code, status, message = "HOST_INVALID", 400, "invalid Host header"


class PaginationNumberInvalid(RegistryError):
    code, status, message = "PAGINATION_NUMBER_INVALID", 400, "invalid number of results requested"


class EndpointUnknown(RegistryError):
    """A path no route serves."""

    code, status, message = "NOT_FOUND", 404, "no such endpoint"


class TooManyRequests(RegistryError):
    code, status, message = "TOOMANYREQUESTS", 429, "too many requests"


class Unavailable(RegistryError):
    code, status, message = "UNAVAILABLE", 503, "service unavailable"


# -- storage exceptions, translated ---------------------------------------------------------------
#
# Code that calls storage names what it is doing with `storage_errors(...)`; the storage exceptions
# that mean something to the client there become the RegistryError `translate` gives. Each context
# below says which.

RETRY_AFTER = {"Retry-After": "5"}
REFUSED_DIGESTS_SHOWN = 50
UPLOAD_DATA_GONE = {"reason": "the upload's data is gone; start a new upload"}


@dataclass(frozen=True, slots=True)
class BlobBytes:
    """A blob's bytes being written, reserved or linked into a repository (a push, the end of an
    upload). BlobCollecting: Unavailable (503, retry). NotFound, which a write meets only when the
    collector took it for abandoned: BlobUploadInvalid."""

    digest: str


@dataclass(frozen=True, slots=True)
class ManifestPut:
    """A manifest being stored. BlobCollecting: Unavailable (503, retry). MissingReferences:
    ManifestBlobUnknown, or ManifestInvalid for references of the wrong size."""

    digest: str


@dataclass(frozen=True, slots=True)
class ManifestRead:
    """A manifest's bytes being read. NotFound: ManifestUnknown."""

    digest: str


@dataclass(frozen=True, slots=True)
class UploadData:
    """An upload session's stored data being written, read or sealed as its blob. NotFound:
    BlobUploadInvalid (the data is gone; the client starts again)."""

    repository: str
    upload_id: str


Context = BlobBytes | ManifestPut | ManifestRead | UploadData


def translate(exc: StorageError, context: Context | None = None) -> RegistryError | None:
    """The error the client gets for `exc`, raised by storage while doing `context`; None when it
    means nothing the client can act on there (it stays a server error). BackendUnavailable is
    Unavailable (503, retry) whatever the context."""
    match exc, context:
        case BackendUnavailable(), _:
            return Unavailable({"reason": "the storage backend is unavailable; retry shortly"}, headers={**RETRY_AFTER})
        case BlobCollecting(), BlobBytes(digest) | ManifestPut(digest):
            return collecting(digest)
        case MissingReferences(), ManifestPut():
            return _refused(exc)
        case NotFound(), ManifestRead(digest):
            return ManifestUnknown({"digest": digest})
        case NotFound(), BlobBytes():
            return BlobUploadInvalid(
                {"reason": "the upload stalled longer than the garbage collector's grace period and was discarded"}
            )
        case NotFound(), UploadData():
            return BlobUploadInvalid({**UPLOAD_DATA_GONE})
    return None


@contextmanager
def storage_errors(context: Context) -> Iterator[None]:
    """Run the block, raising instead of a storage exception the RegistryError `translate` gives
    for it in `context` (an exception without one there propagates unchanged)."""
    try:
        yield
    except StorageError as e:
        error = translate(e, context)
        if error is None:
            raise
        raise error from None


def collecting(digest: str) -> Unavailable:
    """The error of a push that meets a blob the collector is deleting."""
    return Unavailable(
        {"digest": digest, "reason": "the garbage collector is deleting this blob; push it again shortly"},
        headers={**RETRY_AFTER},
    )


def _refused(e: MissingReferences) -> ManifestBlobUnknown | ManifestInvalid:
    """The error of a manifest whose references the repository lacks; its detail names at most
    REFUSED_DIGESTS_SHOWN digests, and how many there are in all."""
    if e.missing:
        return ManifestBlobUnknown({"missing": e.missing[:REFUSED_DIGESTS_SHOWN], "count": len(e.missing)})
    return ManifestInvalid(
        {
            "reason": "descriptor sizes do not match the stored blobs",
            "digests": e.wrong_size[:REFUSED_DIGESTS_SHOWN],
            "count": len(e.wrong_size),
        }
    )
