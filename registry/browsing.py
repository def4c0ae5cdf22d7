"""What the web UI reads, beyond what the API serves: repositories with their stats, a repository's tags
with their platforms, an image's parts, and storage usage. Over the registry (registry/facade.py),
whose `browsing` it is: the UI, like the API handlers, goes through the registry only."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

from registry.errors import ManifestRead, NameUnknown, storage_errors
from registry.layout import blob_key
from registry.names import Digest
from registry.oci import CONFIG_READ_MAX, INDEX_TYPES, Manifest, parse_manifest
from storage.metadata import ManifestRecord, RepositoryStats, RepositoryUsage, StoredTotal, TagRow, Visibility

if TYPE_CHECKING:
    from registry.facade import Registry

__all__ = [
    "Browsing",
    "ImageParts",
    "RepositoryListing",
    "RepositoryStats",
    "RepositoryUsage",
    "StorageUsage",
    "StoredTotal",
    "TagListing",
    "TagRow",
    "TagSummary",
]


class Browsing:
    """The UI's reads over `registry`."""

    def __init__(self, registry: Registry):
        self.registry = registry

    async def repositories(self, term: str, page: int, per_page: int, shown: Visibility) -> RepositoryListing:
        """Page `page` (from 1) of `per_page` repositories that `shown` shows whose name or description
        holds `term` (ignoring case, as `search` matches; every repository for ""), by name, each with
        its stats. The index counts them and reads the page's names in one snapshot (within the ranges
        of `shown`), then the page's stats in one statement."""
        total, found = await self.registry.metadata.search_repositories(term, shown, (page - 1) * per_page, per_page)
        names = [name for name, _ in found]
        stats = await self.registry.metadata.browse.repository_stats(names)
        # A name without stats was deleted since the names were read.
        return RepositoryListing(total, [stats[name] for name in names if name in stats])

    async def tags(self, repository: str, order: str, descending: bool, page: int, per_page: int) -> TagListing:
        """Page `page` (from 1) of `per_page` tags of `repository` by `order` (`name` or `pushed`), each
        with the platforms of a multi-arch image; raises NameUnknown for an unknown repository."""
        if not await self.registry.metadata.repository_exists(repository):
            raise NameUnknown({"name": repository})
        total = await self.registry.metadata.browse.tag_count(repository)
        rows = await self.registry.metadata.browse.tags(repository, order, descending, (page - 1) * per_page, per_page)
        tags = []
        for row in rows:
            platforms: list[str] = []
            if row.media_type in INDEX_TYPES:
                record = await self.registry.metadata.get_manifest(repository, row.digest)
                if record is not None:
                    platforms = index_platforms(await self.registry.manifest_bytes(record))
            tags.append(TagSummary(row, platforms))
        return TagListing(total, tags)

    async def image(self, repository: str, digest: Digest) -> ImageParts:
        """The manifest `digest` of `repository` with what shows it without a pull: its bytes, the parsed
        manifest, its config's bytes (None for an index, or a config over CONFIG_READ_MAX) and its
        referrers; raises ManifestUnknown."""
        record = await self.registry.manifest(repository, str(digest))
        data = await self.registry.manifest_bytes(record)
        manifest = parse_manifest(data, record.media_type)
        config = None
        if manifest.config is not None and manifest.config.size <= CONFIG_READ_MAX:
            with storage_errors(ManifestRead(manifest.config.digest)):  # a config gone: the image is unreadable
                config = await self.registry.driver.get(blob_key(manifest.config.digest))
        referrers = await self.registry.metadata.referrers(repository, record.digest, None)
        return ImageParts(record, data, manifest, config, referrers)

    async def storage(self, page: int, per_page: int, shown: Visibility) -> StorageUsage:
        """The bytes stored in the repositories `shown` shows: their distinct blobs in all (each counted
        once however many of them hold it), how many of them hold blobs, and page `page` (from 1) of
        `per_page` of those, largest first. Reads the index ranges of `shown` only."""
        browse = self.registry.metadata.browse
        count, rows = await browse.usage(shown, (page - 1) * per_page, per_page)
        return StorageUsage(await browse.stored_total(shown), count, rows)


@dataclass(frozen=True, slots=True)
class RepositoryListing:
    """One page of repositories, and how many matched in all."""

    total: int
    repositories: list[RepositoryStats]


@dataclass(frozen=True, slots=True)
class TagSummary:
    """A tag's row, and the platforms (`os/architecture[/variant]`) of the index it names ([] for an image)."""

    row: TagRow
    platforms: list[str]


@dataclass(frozen=True, slots=True)
class TagListing:
    """One page of a repository's tags, and how many it has in all."""

    total: int
    tags: list[TagSummary]


@dataclass(frozen=True, slots=True)
class ImageParts:
    """A manifest as the UI shows it: its record and bytes, the parsed manifest, the bytes of its config
    (None for an index or a config too large to read) and the manifests whose subject it is."""

    record: ManifestRecord
    data: bytes
    manifest: Manifest
    config: bytes | None
    referrers: list[ManifestRecord]


@dataclass(frozen=True, slots=True)
class StorageUsage:
    """The distinct blobs of the repositories shown, how many of them hold blobs, and one page of those
    repositories' usage, largest first."""

    total: StoredTotal
    count: int
    repositories: list[RepositoryUsage]


def index_platforms(data: bytes) -> list[str]:
    """`os/architecture[/variant]` of each manifest the index `data` lists ("unknown" where none is given)."""
    found = []
    for entry in json.loads(data).get("manifests", []):
        platform = entry.get("platform") if isinstance(entry, dict) else None
        if not isinstance(platform, dict):
            found.append("unknown")
            continue
        parts = [platform.get("os"), platform.get("architecture"), platform.get("variant")]
        found.append("/".join(str(p) for p in parts if p) or "unknown")
    return found
