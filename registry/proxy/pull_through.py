"""The pull-through cache's rules: when a cached manifest or blob is served as it is, when the upstream
is asked again, and what a client gets when the upstream cannot answer.

- A manifest by digest is immutable: fetched once, verified against its digest, kept.
- A manifest by tag is served from the cache while younger than the upstream's `tag_ttl`; then one
  HEAD upstream revalidates it (a changed digest fetches the new manifest). An unreachable upstream,
  or one that refuses our credentials, leaves the cached copy served, marked stale.
- A blob is fetched once per digest (fetches.py), or linked without moving bytes when this registry
  already stores it and the upstream confirms that it has it too.
Fetched content is stored like pushed content, in the repository `<prefix>/<name upstream>`.

In read-only mode (`maintenance.read_only`) a cache serves only what it holds, and changes nothing: no
fetch, no revalidation, no link of a blob stored here, no pull times recorded (they order evictions).
A cached tag is served whatever its age (marked stale once older than its TTL); anything not cached
answers 404 saying so.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from dataclasses import dataclass

from registry.errors import BlobUnknown, DigestInvalid, ManifestInvalid, ManifestUnknown
from registry.ingest import Uploads
from registry.layout import blob_key
from registry.names import Digest, lookup_reference, parse_digest
from registry.oci import annotated_description, manifest_record, parse_manifest
from registry.proxy.fetches import POLL_S, BlobFetch, Leased
from registry.proxy.routing import Route, Routes
from registry.proxy.upstream import UpstreamDenied, UpstreamError, UpstreamMissing, UpstreamUnreachable, refusal
from registry.proxy.usage import PullLog
from storage.drivers import Driver
from storage.metadata import Blob, ManifestRecord, Metadata

log = logging.getLogger("registry.proxy")

_NOT_HELD = "not cached, and the registry is read-only for maintenance: nothing is fetched from the upstream"

# How a cached response was served, in its X-Registry-Cache header.
HIT, MISS, REVALIDATED, STALE = "hit", "miss", "revalidated", "stale"


@dataclass(frozen=True, slots=True)
class CachedManifest:
    """A manifest served from a cache, and how (HIT, MISS, REVALIDATED or STALE)."""

    record: ManifestRecord
    status: str


@dataclass(frozen=True, slots=True)
class CachedBlob:
    """A blob served from a cache, and how; `fetch` streams it when it is being fetched for this client."""

    blob: Blob
    status: str
    fetch: BlobFetch | None = None


def _matches(digest: str, body: bytes) -> bool:
    """Whether `body` has `digest` (of any algorithm this registry supports)."""
    try:
        hasher = parse_digest(digest).hasher()
    except DigestInvalid:
        return False
    hasher.update(body)
    return f"{digest.partition(':')[0]}:{hasher.hexdigest()}" == digest


class PullThrough:
    """The caches of `routes` over one metadata store and driver (serving only what they hold when
    `read_only`)."""

    def __init__(
        self,
        routes: Routes,
        metadata: Metadata,
        driver: Driver,
        uploads: Uploads,
        manifest_max_bytes: int,
        *,
        read_only: bool = False,
    ):
        self.routes, self.metadata, self.driver, self.uploads = routes, metadata, driver, uploads
        self.manifest_max_bytes = manifest_max_bytes
        self.read_only = read_only
        self.leased = Leased(metadata.leases)
        self.pulls = PullLog(metadata.cache)

    async def route(self, name: str, namespace: str | None) -> Route | None:
        """The cache a pull of `name` (with containerd's `?ns=namespace`) reads, or None for a
        repository of this registry: a named host first, then a prefix, then the mirror for a name
        no repository here has."""
        return self.named(name, namespace) or await self.mirrored(name)

    def named(self, name: str, namespace: str | None) -> Route | None:
        """The cache `name` is in by containerd's `?ns=` host or by its prefix (no lookup needed)."""
        return self.routes.by_host(name, namespace) or self.routes.by_prefix(name)

    async def mirrored(self, name: str) -> Route | None:
        """The mirror's cache of `name` when there is a mirror and no repository here has that name."""
        if self.routes.mirror is None or await self.metadata.repository_exists(name):
            return None
        return self.routes.by_mirror(name)

    async def close(self) -> None:
        await self.pulls.flush()
        await self.routes.close()

    # -- manifests ------------------------------------------------------------------------------

    async def manifest(self, route: Route, reference: str) -> CachedManifest:
        """The manifest `reference` names in the cache of `route`, fetched or revalidated as needed."""
        target = lookup_reference(reference)
        if target is None:
            raise ManifestUnknown({"reference": reference[:300]})
        if self.read_only:
            return await self._held_manifest(route, target, reference)
        if isinstance(target, Digest):
            served = await self._by_digest(route, target)
        else:
            served = await self._by_tag(route, target)
        self.pulls.manifest(route.repository, served.record.digest)
        return served

    async def _held_manifest(self, route: Route, target: Digest | str, reference: str) -> CachedManifest:
        """Read-only: the manifest as the cache holds it, or ManifestUnknown."""
        if isinstance(target, Digest):
            record = await self.metadata.get_manifest(route.repository, str(target))
            if record is not None:
                return CachedManifest(record, HIT)
        else:
            cached = await self.metadata.cache.tagged(route.repository, target)
            if cached is not None:
                fresh = (cached.checked_at or 0) > time.time() - route.cached.tag_ttl_s
                return CachedManifest(cached.manifest, HIT if fresh else STALE)
        raise ManifestUnknown({"reference": reference[:300], "reason": "read-only"}, message=_NOT_HELD)

    async def _by_digest(self, route: Route, digest: Digest) -> CachedManifest:
        record = await self.metadata.get_manifest(route.repository, str(digest))
        if record is not None:
            return CachedManifest(record, HIT)

        async def cached() -> ManifestRecord | None:
            return await self.metadata.get_manifest(route.repository, str(digest))

        async def fetch() -> ManifestRecord:
            return await self._fetch_manifest(route, str(digest), None)

        lease = f"manifest:{route.repository}@{digest}"
        return CachedManifest(await self.leased.once(lease, cached, fetch), MISS)

    async def _by_tag(self, route: Route, tag: str) -> CachedManifest:
        started = time.time()
        cached = await self.metadata.cache.tagged(route.repository, tag)
        if cached is not None and (cached.checked_at or 0) > started - route.cached.tag_ttl_s:
            return CachedManifest(cached.manifest, HIT)

        async def confirmed() -> CachedManifest | None:
            # Another request revalidated or fetched the tag meanwhile.
            now = await self.metadata.cache.tagged(route.repository, tag)
            if now is not None and (now.checked_at or 0) >= started:
                return CachedManifest(now.manifest, HIT)
            return None

        async def revalidate() -> CachedManifest:
            upstream = route.cached.upstream
            if cached is not None:
                digest = await upstream.manifest_digest(route.remote, tag)
                if digest == cached.manifest.digest and await self.metadata.cache.confirm_tag(
                    route.repository, tag, digest
                ):
                    return CachedManifest(cached.manifest, REVALIDATED)
            return CachedManifest(await self._fetch_manifest(route, tag, tag), MISS)

        try:
            return await self.leased.once(f"manifest:{route.repository}:{tag}", confirmed, revalidate)
        except (UpstreamUnreachable, UpstreamDenied) as e:
            if cached is None:
                raise refusal(e, f"{route.remote}:{tag}", ManifestUnknown) from None
            log.warning(
                "serving the stale tag %s:%s: the upstream %s did not revalidate it: %s",
                route.repository,
                tag,
                e.url,
                e.reason,
            )
            return CachedManifest(cached.manifest, STALE)
        except UpstreamMissing as e:
            raise refusal(e, f"{route.remote}:{tag}", ManifestUnknown) from None

    async def _fetch_manifest(self, route: Route, reference: str, tag: str | None) -> ManifestRecord:
        """Fetch the manifest `reference` names upstream, verify it and store it (under `tag`, if
        given); raises the client's error when the upstream cannot give it."""
        upstream = route.cached.upstream
        what = f"{route.remote}:{reference}" if tag else f"{route.remote}@{reference}"
        try:
            fetched = await upstream.manifest(route.remote, reference, self.manifest_max_bytes)
        except UpstreamError as e:
            if tag is not None:
                raise  # the caller may serve a stale copy
            raise refusal(e, what, ManifestUnknown) from None
        digest = "sha256:" + hashlib.sha256(fetched.body).hexdigest()
        expected = reference if tag is None else fetched.digest
        if expected is not None and expected != digest:
            if not _matches(expected, fetched.body):
                raise DigestInvalid(
                    {"upstream": upstream.url, "expected": expected, "computed": digest},
                    message=f"the upstream {upstream.url} sent a manifest that does not match its digest",
                )
            digest = expected  # a digest of another algorithm, verified
        try:
            manifest = parse_manifest(fetched.body, fetched.media_type or None)
        except ManifestInvalid as e:
            raise ManifestInvalid(
                {"upstream": upstream.url, "reason": e.detail},
                message=f"the upstream {upstream.url} sent a manifest this registry cannot serve",
            ) from None
        record = manifest_record(digest, len(fetched.body), manifest)
        if not await self.uploads.keep_if_stored(digest):
            await self.driver.put(blob_key(digest), fetched.body)
        children = {m.digest: m.size for m in manifest.manifests}
        description = annotated_description(manifest)  # the config is not fetched yet: no labels
        await self.metadata.cache.put_manifest(
            route.repository, record, manifest.required_blobs, children, tag, description
        )
        log.info("cached manifest %s of %s from %s", digest, route.repository, upstream.url)
        return record

    # -- blobs ----------------------------------------------------------------------------------

    async def blob(self, route: Route, digest: Digest, fetch: bool) -> CachedBlob:
        """Blob `digest` in the cache of `route`. When it is not cached: with `fetch`, fetched (a
        CachedBlob with `fetch` set streams it to this caller, else another request fetched it
        meanwhile and it is stored); without, only its size is asked of the upstream."""
        key = str(digest)
        try:
            size = await self.metadata.blob_size(route.repository, key)
            if size is None and self.read_only:
                raise BlobUnknown({"digest": key, "reason": "read-only"}, message=_NOT_HELD)
            if size is None:
                size = await self._link_if_stored(route, key)
            if size is not None:
                if not self.read_only:
                    self.pulls.blob(key)
                return CachedBlob(Blob(key, size), HIT)
            if not fetch:
                return CachedBlob(Blob(key, await route.cached.upstream.blob_size(route.remote, key)), MISS)
            return await self._fetch_blob(route, digest)
        except UpstreamError as e:
            raise refusal(e, f"blob {key} of {route.remote}", BlobUnknown) from None

    async def _link_if_stored(self, route: Route, digest: str) -> int | None:
        """When this registry stores `digest` already (pushed, or cached for another upstream), link
        it into the cache of `route` once the upstream confirms that it has that blob (so that nobody
        reads a blob through a cache that its upstream would not give); returns its size."""
        size = await self.metadata.stored_blob_size(digest)
        if size is None or not await self.uploads.keep_if_stored(digest):
            return None
        if await route.cached.upstream.blob_size(route.remote, digest) != size:
            return None
        await self.metadata.link_blob(route.repository, digest, size)
        return size

    async def _fetch_blob(self, route: Route, digest: Digest) -> CachedBlob:
        """Start the one fetch of `digest`, for this caller; or wait until another request's fetch
        stored it (a fetcher that died lets its lease expire, and this one takes over)."""
        key, name = str(digest), f"blob:{digest}"
        while True:
            lease = await self.leased.take(name)
            if lease is not None:
                try:
                    size = await self.metadata.blob_size(route.repository, key) or await self._link_if_stored(
                        route, key
                    )
                    if size is not None:  # fetched by the last holder
                        await lease.release()
                        return CachedBlob(Blob(key, size), HIT)
                    stream = await route.cached.upstream.blob(route.remote, key)
                except BaseException:
                    await lease.release()
                    raise
                fetch = BlobFetch(self.leased, self.metadata, self.driver, stream, route.repository, digest, lease)
                return CachedBlob(Blob(key, stream.size or 0), MISS, fetch)
            await asyncio.sleep(POLL_S)
            size = await self.metadata.blob_size(route.repository, key)
            if size is None and not await self.leased.leases.held(name):
                size = await self._link_if_stored(route, key)
            if size is not None:
                self.pulls.blob(key)
                return CachedBlob(Blob(key, size), HIT)
