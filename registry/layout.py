"""Where the registry keeps bytes in a storage driver: the same keys on disk and in S3."""

from __future__ import annotations


def blob_key(digest: str) -> str:
    """`blobs/<algorithm>/<first 2 hex>/<hex>`: every layer, config and manifest, stored once."""
    algorithm, _, encoded = digest.partition(":")
    return f"blobs/{algorithm}/{encoded[:2]}/{encoded}"


def upload_prefix(upload_id: str) -> str:
    """The folder of an upload in progress; every chunk of it is a key below."""
    return f"uploads/{upload_id}"


def chunk_key(upload_id: str, start: int, nonce: str) -> str:
    """A chunk's key; `nonce` keeps two racing writers of the same offset apart."""
    return f"{upload_prefix(upload_id)}/{start:020d}-{nonce}"


def upload_data_key(upload_id: str) -> str:
    """The key of an upload's bytes where the driver appends (every chunk goes there)."""
    return f"{upload_prefix(upload_id)}/data"
