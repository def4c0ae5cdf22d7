"""Rows that several query modules write alike: a manifest's record, and the writes that link a stored
blob or record a manifest (the registry's pushes and the pull-through cache's fetches)."""

from __future__ import annotations

from dataclasses import dataclass

from storage.errors import BlobCollecting
from storage.metadata.database import Connection
from storage.metadata.schema import PRESENT


@dataclass(frozen=True, slots=True)
class ManifestRecord:
    """What the metadata keeps of a manifest; its bytes are the blob `digest` in storage."""

    digest: str
    media_type: str
    size: int
    artifact_type: str | None = None
    subject: str | None = None
    annotations: str | None = None  # JSON text of the manifest's annotations


def ensure_repository(conn: Connection, repository: str, now: float) -> None:
    conn.execute(
        "INSERT INTO repositories (name, created_at) VALUES (?, ?) ON CONFLICT (name) DO NOTHING",
        (repository, now),
    )


def link_blob(conn: Connection, repository: str, digest: str, size: int, now: float) -> None:
    """Record the stored blob as present and visible in `repository`; raises BlobCollecting when the
    collector is deleting it (a blob never goes back from `deleting` to present)."""
    conn.execute(
        "INSERT INTO blobs (digest, size, state, created_at, last_used_at) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT (digest) DO NOTHING",
        (digest, size, PRESENT, now, now),
    )
    cursor = conn.execute("UPDATE blobs SET last_used_at = ? WHERE digest = ? AND state = ?", (now, digest, PRESENT))
    if cursor.rowcount == 0:
        raise BlobCollecting(digest)
    ensure_repository(conn, repository, now)
    conn.execute(
        "INSERT INTO repository_blobs (repository, digest, linked_at) VALUES (?, ?, ?) "
        "ON CONFLICT (repository, digest) DO UPDATE SET linked_at = excluded.linked_at",
        (repository, digest, now),
    )


def put_manifest_rows(
    c: Connection,
    repository: str,
    manifest: ManifestRecord,
    blobs: dict[str, int],
    children: dict[str, int],
    tag: str | None,
    now: float,
    checked_at: float | None = None,
    description: str | None = None,
) -> None:
    """Record a manifest whose bytes are stored, its references, and `tag` pointing at it (confirmed by
    an upstream at `checked_at`, for a cached tag; None for a pushed one); a tag makes `description`
    (the image's) the repository's. Checks no reference."""
    link_blob(c, repository, manifest.digest, manifest.size, now)
    c.execute(
        "INSERT INTO manifests (repository, digest, media_type, artifact_type, subject, annotations, size, "
        "created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (repository, digest) DO NOTHING",
        (
            repository,
            manifest.digest,
            manifest.media_type,
            manifest.artifact_type,
            manifest.subject,
            manifest.annotations,
            manifest.size,
            now,
        ),
    )
    references = [(repository, manifest.digest, d, "blob") for d in blobs]
    references += [(repository, manifest.digest, d, "manifest") for d in children]
    c.executemany(
        "INSERT INTO manifest_references (repository, manifest, child, kind) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (repository, manifest, child) DO NOTHING",
        references,
    )
    if tag is not None:
        c.execute(
            "INSERT INTO tags (repository, name, digest, updated_at, checked_at) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (repository, name) DO UPDATE SET digest = excluded.digest, "
            "updated_at = excluded.updated_at, checked_at = excluded.checked_at",
            (repository, tag, manifest.digest, now, checked_at),
        )
        c.execute("UPDATE repositories SET description = ? WHERE name = ?", (description, repository))
