"""The registry's rules: what may be pulled, pushed and deleted, and what a manifest must satisfy.

The service speaks in names, digests and bytes; it never sees an HTTP object. Blob uploads are in
uploads.py.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from registry.cache import DEFAULT_CACHE_BYTES, DigestCache
from registry.errors import (
    BlobUnknown,
    DigestInvalid,
    ManifestBlobUnknown,
    ManifestInvalid,
    ManifestTooLarge,
    ManifestUnknown,
    NameUnknown,
    Unsupported,
)
from registry.ingest import Uploads, collecting
from registry.layout import blob_key
from registry.names import Digest, is_digest, lookup_reference, parse_digest, parse_tag, sha256_digest
from registry.oci import OCI_INDEX, is_type_name, parse_manifest
from storage.drivers import Driver, NotFound
from storage.metadata import BlobCollecting, ManifestRecord, Metadata, MissingReferences

DEFAULT_MANIFEST_MAX_BYTES = 4 << 20


@dataclass(frozen=True, slots=True)
class BlobInfo:
    digest: str
    size: int


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a listing; `more` tells whether a next page exists."""

    items: list[str]
    more: bool


class Registry:
    """The registry over one index and one driver."""

    def __init__(
        self,
        metadata: Metadata,
        driver: Driver,
        *,
        delete_enabled: bool = True,
        manifest_max_bytes: int = DEFAULT_MANIFEST_MAX_BYTES,
        manifest_cache_bytes: int = DEFAULT_CACHE_BYTES,
        redirect_expiry_s: int | None = None,
    ):
        self.metadata, self.driver = metadata, driver
        self.redirect_expiry_s = redirect_expiry_s
        self.uploads = Uploads(metadata, driver)
        self.manifest_cache = DigestCache(manifest_cache_bytes)
        self.delete_enabled = delete_enabled
        self.manifest_max_bytes = manifest_max_bytes

    def _require_delete(self) -> None:
        if not self.delete_enabled:
            raise Unsupported({"reason": "deletes are disabled in this registry's configuration"})

    # -- blobs ----------------------------------------------------------------------------------

    async def blob(self, repository: str, digest: Digest) -> BlobInfo:
        """The blob if it is visible in `repository`; raises BlobUnknown."""
        size = await self.metadata.blob_size(repository, str(digest))
        if size is None:
            raise BlobUnknown({"digest": str(digest)})
        return BlobInfo(str(digest), size)

    def blob_chunks(self, blob: BlobInfo, offset: int, length: int) -> AsyncIterator[bytes]:
        """Stream `length` bytes of a blob from `offset`."""
        return self.driver.reader(blob_key(blob.digest), offset, length)

    async def blob_redirect(self, blob: BlobInfo) -> str | None:
        """A presigned URL to send the client to for the blob's bytes, when redirects are on and the
        driver can give one."""
        if self.redirect_expiry_s is None:
            return None
        return await self.driver.url(blob_key(blob.digest), self.redirect_expiry_s)

    async def delete_blob(self, repository: str, digest: Digest) -> None:
        """Remove the blob from `repository` (its bytes go when the collector finds them unused)."""
        self._require_delete()
        if not await self.metadata.unlink_blob(repository, str(digest)):
            raise BlobUnknown({"digest": str(digest)})

    # -- manifests ------------------------------------------------------------------------------

    async def put_manifest(
        self, repository: str, reference: str, body: bytes, content_type: str | None
    ) -> ManifestRecord:
        """Store a manifest under a tag or its digest; returns what was stored.

        The stored bytes are exactly `body`, so its digest is the one the client computed. Every blob
        and child manifest it refers to must be present in `repository`.
        """
        if len(body) > self.manifest_max_bytes:
            raise ManifestTooLarge({"size": len(body), "limit": self.manifest_max_bytes})
        tag = None
        if is_digest(reference):
            digest = parse_digest(reference)
            computed = hashlib.new(digest.algorithm, body).hexdigest()
            if computed != digest.encoded:
                raise DigestInvalid({"expected": reference, "computed": f"{digest.algorithm}:{computed}"})
        else:
            tag = parse_tag(reference)
            digest = sha256_digest(body)
        manifest = parse_manifest(body, content_type)
        annotations = json.dumps(manifest.annotations, sort_keys=True) if manifest.annotations else None
        record = ManifestRecord(
            str(digest),
            manifest.media_type,
            len(body),
            manifest.artifact_type,
            manifest.subject.digest if manifest.subject else None,
            annotations,
        )
        blobs, children = manifest.required_blobs, {m.digest: m.size for m in manifest.manifests}
        try:
            # Checked before the bytes are stored, so that a refused manifest leaves nothing behind;
            # the index checks again in the transaction that records it.
            await self.metadata.check_references(repository, blobs, children)
            if not await self.uploads.stored(record.digest):
                await self.driver.put(blob_key(record.digest), body)
            await self.metadata.put_manifest(repository, record, blobs, children, tag)
        except BlobCollecting:
            raise collecting(record.digest) from None
        except MissingReferences as e:
            raise _refused(e) from None
        return record

    async def manifest(self, repository: str, reference: str) -> ManifestRecord:
        """The manifest a tag or digest names in `repository`; raises ManifestUnknown, also for a
        reference that is neither a tag nor a supported digest (clients probe with those)."""
        target = lookup_reference(reference)
        record = None
        if isinstance(target, Digest):
            record = await self.metadata.get_manifest(repository, str(target))
        elif target is not None:
            record = await self.metadata.get_tagged_manifest(repository, target)
        if record is None:
            raise ManifestUnknown({"reference": reference[:300]})
        return record

    async def manifest_bytes(self, record: ManifestRecord) -> bytes:
        """The stored bytes of a manifest."""
        data = self.manifest_cache.get(record.digest)
        if data is None:
            try:
                data = await self.driver.get(blob_key(record.digest))
            except NotFound:
                raise ManifestUnknown({"digest": record.digest}) from None
            self.manifest_cache.put(record.digest, data)
        return data

    async def delete_manifest(self, repository: str, reference: str) -> None:
        """By digest: delete the manifest and its tags. By tag: delete only the tag."""
        self._require_delete()
        target = lookup_reference(reference)
        deleted = False
        if isinstance(target, Digest):
            deleted = await self.metadata.delete_manifest(repository, str(target))
        elif target is not None:
            deleted = await self.metadata.delete_tag(repository, target)
        if not deleted:
            raise ManifestUnknown({"reference": reference[:300]})

    # -- listings -------------------------------------------------------------------------------

    async def tags(self, repository: str, last: str, limit: int | None) -> Page:
        """Tags of `repository` after `last`, lexically; raises NameUnknown for an unknown repository."""
        if not await self.metadata.repository_exists(repository):
            raise NameUnknown({"name": repository})
        last = _without_nul(last)
        return _page(await self.metadata.list_tags(repository, last, None if limit is None else limit + 1), limit)

    async def repositories(self, last: str, limit: int | None, visible: Callable[[str], bool]) -> Page:
        """Repository names after `last`, lexically, leaving out those `visible` rejects."""
        batch = 1000 if limit is None else max(limit + 1, 100)
        last = _without_nul(last)
        found: list[str] = []
        while True:
            names = await self.metadata.list_repositories(last, batch)
            found += [n for n in names if visible(n)]
            if len(names) < batch or (limit is not None and len(found) > limit):
                return _page(found, limit)
            last = names[-1]

    async def referrers(self, repository: str, subject: Digest, artifact_type: str | None) -> dict:
        """The OCI image index of the manifests in `repository` whose subject is `subject`."""
        descriptors = []
        if artifact_type is not None and not is_type_name(artifact_type):
            return {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": descriptors}  # no manifest has one
        for record in await self.metadata.referrers(repository, str(subject), artifact_type):
            descriptor = {"mediaType": record.media_type, "digest": record.digest, "size": record.size}
            if record.artifact_type:
                descriptor["artifactType"] = record.artifact_type
            if record.annotations:
                descriptor["annotations"] = json.loads(record.annotations)
            descriptors.append(descriptor)
        return {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": descriptors}


REFUSED_DIGESTS_SHOWN = 50


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


def _without_nul(last: str) -> str:
    """`last` cut at its first NUL, which lists the same page: no tag or name holds a NUL, and NUL sorts
    before every other character, so a name comes after `X` + NUL + `Y` exactly when it comes after `X`
    (and a database need not store a NUL to compare with it; PostgreSQL cannot)."""
    return last.partition("\x00")[0]


def _page(items: list[str], limit: int | None) -> Page:
    if limit is not None and len(items) > limit:
        return Page(items[:limit], True)
    return Page(items, False)
