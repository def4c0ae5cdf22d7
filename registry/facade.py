"""The registry's one door: what may be pulled, pushed and deleted, and what a manifest must satisfy.

The facade speaks in names, digests and bytes; it never sees an HTTP object. Every handler and the
CLI go through `Registry`; blob uploads are delegated to registry/ingest.py. Storage exceptions
become RegistryErrors through `registry.errors.storage_errors`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from registry.browsing import Browsing
from registry.cache import DEFAULT_CACHE_BYTES, DigestCache
from registry.errors import (
    BlobUnknown,
    Denied,
    DigestInvalid,
    ManifestPut,
    ManifestRead,
    ManifestTooLarge,
    ManifestUnknown,
    NameUnknown,
    Unsupported,
    storage_errors,
)
from registry.events import Caller, Outbox, Target
from registry.events.records import BLOB_MEDIA_TYPE
from registry.ingest import Announce, Body, ByteRange, Uploads
from registry.layout import blob_key, upload_prefix
from registry.names import Digest, is_digest, lookup_reference, parse_digest, parse_tag, sha256_digest
from registry.oci import (
    CONFIG_READ_MAX,
    OCI_INDEX,
    Manifest,
    annotated_description,
    is_type_name,
    labelled_description,
    manifest_record,
    parse_manifest,
)
from registry.proxy.pull_through import MISS, PullThrough
from registry.proxy.routing import Route, Routes
from storage.drivers import Driver
from storage.metadata import Blob, ManifestRecord, Metadata, OutboxEvent, RemovedRepository, Visibility

# The types of the facade's methods, for its callers (no handler imports `storage`).
__all__ = [
    "Blob",
    "Body",
    "ByteRange",
    "Caller",
    "Found",
    "ManifestRecord",
    "Page",
    "PulledBlob",
    "PulledManifest",
    "Registry",
    "RemovedRepository",
    "Visibility",
]

DEFAULT_MANIFEST_MAX_BYTES = 4 << 20

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a listing; `more` tells whether a next page exists."""

    items: list[str]
    more: bool


@dataclass(frozen=True, slots=True)
class Found:
    """One page of a search: how many repositories matched in all, and this page's (name, description)."""

    total: int
    repositories: list[tuple[str, str | None]]


@dataclass(frozen=True, slots=True)
class PulledManifest:
    """A manifest a pull reads, and how a cache served it (None: from a repository pushed here)."""

    record: ManifestRecord
    cache: str | None = None


@dataclass(frozen=True, slots=True)
class PulledBlob:
    """A blob a pull reads, and how a cache served it (None: from a repository pushed here). `live`,
    when set, is its bytes as they arrive from the upstream (the size is then unknown when 0)."""

    blob: Blob
    cache: str | None = None
    live: AsyncIterator[bytes] | None = None
    stored: bool = True  # False when only the upstream knows the blob yet (its size, for a HEAD)


class Registry:
    """The registry over one metadata store and one driver, with the pull-through caches of `routes`
    (registry/proxy/) when given. `read_only` refuses every write with Unsupported (405) and makes the
    caches serve only what they hold: nothing stored changes. With an `events` outbox, each change a
    `caller` made is reported in the transaction that makes it (registry/events/); the methods take the
    caller for that."""

    def __init__(
        self,
        metadata: Metadata,
        driver: Driver,
        *,
        delete_enabled: bool = True,
        manifest_max_bytes: int = DEFAULT_MANIFEST_MAX_BYTES,
        manifest_cache_bytes: int = DEFAULT_CACHE_BYTES,
        redirect_expiry_s: int | None = None,
        routes: Routes | None = None,
        read_only: bool = False,
        events: Outbox | None = None,
    ):
        self.metadata, self.driver = metadata, driver
        self.read_only = read_only
        self.events = events
        self.redirect_expiry_s = redirect_expiry_s
        self._uploads = Uploads(metadata, driver)
        self.pull_through = (
            None
            if routes is None
            else PullThrough(routes, metadata, driver, self._uploads, manifest_max_bytes, read_only=read_only)
        )
        self.manifest_cache = DigestCache(manifest_cache_bytes)
        self.browsing = Browsing(self)  # what the web UI reads
        self.delete_enabled = delete_enabled
        self.manifest_max_bytes = manifest_max_bytes

    def refuse_if_read_only(self) -> None:
        """Raise Unsupported (405) in read-only mode, for every write."""
        if self.read_only:
            raise Unsupported(
                {"reason": "read-only"},
                message="the registry is read-only for maintenance: pulls work, pushes and deletes do not",
            )

    def _events(self, action: str, target: Target, caller: Caller | None) -> list[OutboxEvent]:
        """The outbox rows reporting `action` on `target` (none without events or a caller)."""
        return [] if self.events is None else self.events.rows(action, target, caller)

    def _blob_events(
        self, repository: str, caller: Caller | None, written: list[OutboxEvent], action: str = "push"
    ) -> Announce | None:
        """What registry/ingest.py calls, once a blob's size (and a mount's source) is known, for the
        rows reporting it, kept in `written` too; None when nothing is reported."""
        if self.events is None or caller is None:
            return None
        events = self.events

        def rows(digest: str, size: int, source: str | None) -> list[OutboxEvent]:
            target = Target(repository, "blobs", digest, BLOB_MEDIA_TYPE, size, from_repository=source)
            found = events.rows(action, target, caller)
            written[:] = found
            return found

        return rows

    def _written(self, rows: list[OutboxEvent]) -> None:
        if rows and self.events is not None:
            self.events.written(rows)

    async def _pull_event(self, target: Target, caller: Caller | None) -> None:
        """Report a pull, when pulls are reported (a write of its own: a pull changes nothing), and
        not in read-only mode (nothing is written then)."""
        if self.events is not None and self.events.pulls and caller is not None and not self.read_only:
            rows = self.events.rows("pull", target, caller)
            await self.metadata.events.enqueue(rows)
            self._written(rows)

    def _require_delete(self) -> None:
        self.refuse_if_read_only()
        if not self.delete_enabled:
            raise Unsupported({"reason": "deletes are disabled in this registry's configuration"})

    def _require_writable(self, repository: str) -> None:
        """Raise Unsupported in read-only mode, Denied when `repository` is a pull-through cache (only
        pulls fill it)."""
        self.refuse_if_read_only()
        route = None if self.pull_through is None else self.pull_through.routes.by_prefix(repository)
        if route is not None:
            url = route.cached.upstream.url
            raise Denied(
                {"repository": repository, "upstream": url},
                message=f"{repository} is in a pull-through cache of {url}: only pulls fill it, it cannot be pushed to",
            )

    async def _pulled(
        self,
        repository: str,
        namespace: str | None,
        here: Callable[[], Awaitable[T]],
        cached: Callable[[PullThrough, Route], Awaitable[T]],
    ) -> T:
        """What a pull of `repository` (with containerd's `?ns=namespace`) reads: `cached(...)` for a
        name in a cache by its host or prefix, else `here()`, else, when that found nothing and no
        repository here has the name, `cached(...)` of the mirror. The mirror's lookup comes only after
        a miss, so a pull from a repository here costs no metadata read more."""
        pull_through = self.pull_through
        if pull_through is None:
            return await here()
        route = pull_through.named(repository, namespace)
        if route is None:
            try:
                return await here()
            except (BlobUnknown, ManifestUnknown, NameUnknown):
                route = await pull_through.mirrored(repository)
                if route is None:
                    raise
        return await cached(pull_through, route)

    async def close(self) -> None:
        """Release the upstreams' connections and record pending pulls (at shutdown)."""
        if self.pull_through is not None:
            await self.pull_through.close()

    async def ready(self) -> None:
        """Return once the metadata store answers (raises BackendUnavailable while it cannot)."""
        await self.metadata.repository_exists("")

    # -- blobs ----------------------------------------------------------------------------------

    async def blob(self, repository: str, digest: Digest) -> Blob:
        """The blob if it is visible in `repository`; raises BlobUnknown."""
        key = str(digest)
        size = await self.metadata.blob_size(repository, key)
        if size is None:
            raise BlobUnknown({"digest": key})
        return Blob(key, size)

    async def pull_blob(
        self, repository: str, digest: Digest, namespace: str | None, stream: bool, caller: Caller | None = None
    ) -> PulledBlob:
        """The blob a pull of `repository` (with containerd's `?ns=namespace`) reads, from a cache when
        the name is one. An uncached blob is fetched when `stream` (its bytes then come `live` to this
        caller, unless another request fetched it meanwhile) and otherwise only sized upstream. With a
        `caller`, the pull is reported when pulls are."""

        async def here() -> PulledBlob:
            return PulledBlob(await self.blob(repository, digest))

        async def cached(pull_through: PullThrough, route: Route) -> PulledBlob:
            found = await pull_through.blob(route, digest, stream)
            live = None if found.fetch is None else found.fetch.chunks()
            return PulledBlob(found.blob, found.status, live, found.status != MISS)

        pulled = await self._pulled(repository, namespace, here, cached)
        target = Target(repository, "blobs", pulled.blob.digest, BLOB_MEDIA_TYPE, pulled.blob.size)
        await self._pull_event(target, caller)
        return pulled

    async def fetched_blob(self, repository: str, digest: Digest, namespace: str | None) -> Blob:
        """The blob a pull of `repository` reads, once it is stored (fetched into a cache first, when
        the name is one, however long that takes)."""

        async def here() -> Blob:
            return await self.blob(repository, digest)

        async def cached(pull_through: PullThrough, route: Route) -> Blob:
            found = await pull_through.blob(route, digest, True)
            if found.fetch is None:
                return found.blob
            await found.fetch.drain()
            return await self.blob(route.repository, digest)

        return await self._pulled(repository, namespace, here, cached)

    def blob_chunks(self, blob: Blob, offset: int, length: int) -> AsyncIterator[bytes]:
        """Stream `length` bytes of a blob from `offset`."""
        return self.driver.reader(blob_key(blob.digest), offset, length)

    async def blob_redirect(self, blob: Blob) -> str | None:
        """A presigned URL to send the client to for the blob's bytes, when redirects are on and the
        driver can give one."""
        if self.redirect_expiry_s is None:
            return None
        return await self.driver.url(blob_key(blob.digest), self.redirect_expiry_s)

    async def delete_blob(self, repository: str, digest: Digest, caller: Caller | None = None) -> None:
        """Remove the blob from `repository` (its bytes go when the collector finds them unused)."""
        self._require_delete()
        rows = self._events("delete", Target(repository, digest=str(digest)), caller)
        if not await self.metadata.unlink_blob(repository, str(digest), rows):
            raise BlobUnknown({"digest": str(digest)})
        self._written(rows)

    # -- uploads (registry/ingest.py) -----------------------------------------------------------

    async def push_blob(self, repository: str, digest: Digest, body: Body, caller: Caller | None = None) -> None:
        """Store a whole blob sent in one request, verified while it streams in."""
        self._require_writable(repository)
        rows: list[OutboxEvent] = []
        await self._uploads.monolithic(repository, digest, body, self._blob_events(repository, caller, rows))
        self._written(rows)

    async def mount_blob(
        self,
        repository: str,
        digest: Digest,
        source: str | None,
        may_pull: Callable[[str], bool],
        caller: Caller | None = None,
    ) -> bool:
        """Link a stored blob into `repository` from `source` (or any repository) that `may_pull`
        admits, moving no bytes; False when it cannot, and the client then uploads the blob."""
        self._require_writable(repository)
        rows: list[OutboxEvent] = []
        mounted = await self._uploads.mount(
            repository, digest, source, may_pull, self._blob_events(repository, caller, rows, "mount")
        )
        self._written(rows)
        return mounted

    async def start_upload(self, repository: str) -> str:
        """Open an upload session in `repository`; returns its id."""
        self._require_writable(repository)
        return await self._uploads.start(repository)

    async def upload_size(self, repository: str, upload_id: str) -> int:
        """The bytes an upload holds so far; raises BlobUploadUnknown when it is not open in `repository`."""
        return (await self._uploads.status(repository, upload_id)).size

    async def append_upload(self, repository: str, upload_id: str, body: Body, content_range: ByteRange | None) -> int:
        """Append `body` to the upload as one chunk (at `content_range`, when given); returns its new size."""
        self._require_writable(repository)
        return await self._uploads.append(repository, upload_id, body, content_range)

    async def finish_upload(
        self,
        repository: str,
        upload_id: str,
        digest: Digest,
        body: Body | None = None,
        content_range: ByteRange | None = None,
        caller: Caller | None = None,
    ) -> int:
        """Close the upload as blob `digest` once its bytes, `body` (a last chunk) included, match;
        returns the blob's size."""
        self._require_writable(repository)
        rows: list[OutboxEvent] = []
        size = await self._uploads.finish(
            repository, upload_id, digest, body, content_range, self._blob_events(repository, caller, rows)
        )
        self._written(rows)
        return size

    async def cancel_upload(self, repository: str, upload_id: str) -> None:
        """Abandon an upload and delete its bytes."""
        self.refuse_if_read_only()
        await self._uploads.cancel(repository, upload_id)

    # -- manifests ------------------------------------------------------------------------------

    async def put_manifest(
        self, repository: str, reference: str, body: bytes, content_type: str | None, caller: Caller | None = None
    ) -> ManifestRecord:
        """Store a manifest under a tag or its digest; returns what was stored.

        The stored bytes are exactly `body`, so its digest is the one the client computed. Every blob
        and child manifest it refers to must be present in `repository`.
        """
        self._require_writable(repository)
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
        record = manifest_record(str(digest), len(body), manifest)
        blobs, children = manifest.required_blobs, {m.digest: m.size for m in manifest.manifests}
        with storage_errors(ManifestPut(record.digest)):
            # Checked before the bytes are stored, so that a refused manifest leaves nothing behind;
            # the metadata store checks again in the transaction that records it.
            await self.metadata.check_references(repository, blobs, children)
            if not await self._uploads.keep_if_stored(record.digest):
                await self.driver.put(blob_key(record.digest), body)
            description = None if tag is None else await self._description(manifest)
            target = Target(repository, "manifests", record.digest, record.media_type, record.size, tag)
            rows = self._events("push", target, caller)
            await self.metadata.put_manifest(repository, record, blobs, children, tag, description, rows)
        self._written(rows)
        return record

    async def _description(self, manifest: Manifest) -> str | None:
        """The image's description: its manifest's annotation, else its config's label (the config
        was checked present; one small read)."""
        found = annotated_description(manifest)
        config = manifest.config
        if found is None and config is not None and config.size <= CONFIG_READ_MAX:
            found = labelled_description(await self.driver.get(blob_key(config.digest)))
        return found

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

    async def pull_manifest(
        self, repository: str, reference: str, namespace: str | None, caller: Caller | None = None
    ) -> PulledManifest:
        """The manifest a pull of `repository` (with containerd's `?ns=namespace`) reads, from a cache
        when the name is one (registry/proxy/pull_through.py says when the upstream is asked). With a
        `caller`, the pull is reported when pulls are."""

        async def here() -> PulledManifest:
            return PulledManifest(await self.manifest(repository, reference))

        async def cached(pull_through: PullThrough, route: Route) -> PulledManifest:
            found = await pull_through.manifest(route, reference)
            return PulledManifest(found.record, found.status)

        pulled = await self._pulled(repository, namespace, here, cached)
        record = pulled.record
        tag = None if is_digest(reference) else reference
        await self._pull_event(
            Target(repository, "manifests", record.digest, record.media_type, record.size, tag), caller
        )
        return pulled

    async def manifest_bytes(self, record: ManifestRecord) -> bytes:
        """The stored bytes of a manifest."""
        data = self.manifest_cache.get(record.digest)
        if data is None:
            with storage_errors(ManifestRead(record.digest)):
                data = await self.driver.get(blob_key(record.digest))
            self.manifest_cache.put(record.digest, data)
        return data

    async def delete_manifest(self, repository: str, reference: str, caller: Caller | None = None) -> None:
        """By digest: delete the manifest and its tags. By tag: delete only the tag."""
        self._require_delete()
        target = lookup_reference(reference)
        deleted = False
        rows: list[OutboxEvent] = []
        if isinstance(target, Digest):
            rows = self._events("delete", Target(repository, digest=str(target)), caller)
            deleted = await self.metadata.delete_manifest(repository, str(target), rows)
        elif target is not None:
            rows = self._events("delete", Target(repository, tag=target), caller)
            deleted = await self.metadata.delete_tag(repository, target, rows)
        if not deleted:
            raise ManifestUnknown({"reference": reference[:300]})
        self._written(rows)

    # -- repositories ---------------------------------------------------------------------------

    async def delete_repository(self, repository: str, caller: Caller | None = None) -> RemovedRepository:
        """Delete `repository`: its tags, manifests, blob links and open uploads with their bytes;
        returns what was removed, or raises NameUnknown when there is no such repository. The blobs'
        bytes go when the collector finds them unused. Not subject to `delete_enabled` (that governs
        deletes through the API): the caller decides who may. Refused in read-only mode."""
        self.refuse_if_read_only()
        rows = self._events("delete", Target(repository), caller)
        removed = await self.metadata.delete_repository(repository, rows)
        if removed is None:
            raise NameUnknown({"name": repository})
        self._written(rows)
        for upload_id in removed.uploads:
            await self.driver.delete(upload_prefix(upload_id))
        return removed

    # -- listings -------------------------------------------------------------------------------

    async def tags(self, repository: str, last: str, limit: int | None, namespace: str | None = None) -> Page:
        """Tags of `repository` after `last`, lexically; raises NameUnknown for an unknown repository.
        A cache lists the tags it holds (it does not ask the upstream)."""

        async def listed(name: str) -> Page:
            if not await self.metadata.repository_exists(name):
                raise NameUnknown({"name": name})
            page = await self.metadata.list_tags(name, _without_nul(last), None if limit is None else limit + 1)
            return _page(page, limit)

        async def cached(pull_through: PullThrough, route: Route) -> Page:
            return await listed(route.repository)

        return await self._pulled(repository, namespace, lambda: listed(repository), cached)

    async def repositories(self, last: str, limit: int | None, shown: Visibility) -> Page:
        """Repository names after `last` that `shown` shows, lexically: one query of the index."""
        names = await self.metadata.list_repositories(_without_nul(last), None if limit is None else limit + 1, shown)
        return _page(names, limit)

    async def search(self, term: str, page: int, per_page: int, shown: Visibility) -> Found:
        """Page `page` (from 1) of `per_page` repositories that `shown` shows whose name or description
        holds `term` (ignoring case), by name."""
        total, found = await self.metadata.search_repositories(term, shown, (page - 1) * per_page, per_page)
        return Found(total, found)

    async def referrers(self, repository: str, subject: Digest, artifact_type: str | None) -> dict[str, Any]:
        """The OCI image index of the manifests in `repository` whose subject is `subject`."""
        descriptors: list[dict[str, Any]] = []
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


def _without_nul(last: str) -> str:
    """`last` cut at its first NUL, which lists the same page: no tag or name holds a NUL, and NUL sorts
    before every other character, so a name comes after `X` + NUL + `Y` exactly when it comes after `X`
    (and a database need not store a NUL to compare with it; PostgreSQL cannot)."""
    return last.partition("\x00")[0]


def _page(items: list[str], limit: int | None) -> Page:
    if limit is not None and len(items) > limit:
        return Page(items[:limit], True)
    return Page(items, False)
