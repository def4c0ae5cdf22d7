"""Registry errors: one class per OCI / Distribution error code, each with its HTTP status."""

from __future__ import annotations

from typing import Any


class RegistryError(Exception):
    """An error the client sees as `{"errors": [{"code", "message", "detail"}]}` with `status`."""

    code = "UNKNOWN"
    status = 500
    message = "unknown error"

    def __init__(self, detail: Any = None, *, message: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message or self.message)
        self.detail = detail
        if message:
            self.message = message
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


class RangeInvalid(RegistryError):
    code, status, message = "RANGE_INVALID", 416, "invalid content range"


class HostInvalid(RegistryError):
    """A `Host` header that is not an RFC 3986 host: no OCI code names a malformed request header, so
    this one says exactly what was wrong rather than borrowing UNSUPPORTED (an unsupported operation)."""

    code, status, message = "HOST_INVALID", 400, "invalid Host header"


class PaginationNumberInvalid(RegistryError):
    code, status, message = "PAGINATION_NUMBER_INVALID", 400, "invalid number of results requested"


class TooManyRequests(RegistryError):
    code, status, message = "TOOMANYREQUESTS", 429, "too many requests"


class Unavailable(RegistryError):
    code, status, message = "UNAVAILABLE", 503, "service unavailable"
