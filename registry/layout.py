"""Where the registry keeps bytes in a storage driver: the same keys on disk and in S3."""

from __future__ import annotations


def blob_key(digest: str) -> str:
    """`blobs/<algorithm>/<first 2 hex>/<hex>`: every layer, config and manifest, stored once."""
    algorithm, _, encoded = digest.partition(":")
    return f"blobs/{algorithm}/{encoded[:2]}/{encoded}"


def upload_prefix(upload_id: str) -> str:
    """The folder of an upload in progress: everything stored for it is a key below."""
    return f"uploads/{upload_id}"


def upload_data_key(upload_id: str) -> str:
    """The growing object an upload's chunks append to (the driver keeps their pieces beside it)."""
    return f"{upload_prefix(upload_id)}/data"


def upload_staging_key(upload_id: str) -> str:
    """Where an upload's bytes are sealed to be hashed once more, when no hash state was saved."""
    return f"{upload_prefix(upload_id)}/staged"
