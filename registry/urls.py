"""The URL paths the registry hands out (in `Location` headers), built in one place.

Each function builds the path of one named route of `registry.app` (tests/api/test_base.py checks that
they agree with `url_path_for`); they need no request, so the facade and blob ingest use them too.
A repository name holds only `a-z0-9._/-` and a digest or an upload id no character a path must escape.
"""

from __future__ import annotations


def blob_path(repository: str, digest: str) -> str:
    """The path of a blob (route `get_blob`)."""
    return f"/v2/{repository}/blobs/{digest}"


def manifest_path(repository: str, reference: str) -> str:
    """The path of a manifest by tag or digest (route `get_manifest`)."""
    return f"/v2/{repository}/manifests/{reference}"


def upload_path(repository: str, upload_id: str) -> str:
    """The path of an upload session (route `upload_status`)."""
    return f"/v2/{repository}/blobs/uploads/{upload_id}"


def upload_range(size: int) -> str:
    """The `Range` header an upload of `size` bytes reports beside its path (Distribution answers
    `0-0` while it is empty)."""
    return f"0-{max(size - 1, 0)}"
