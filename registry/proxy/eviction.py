"""Eviction of cached content by size: above a cap, the least recently pulled cached manifests go
first, with their tags; the blobs they alone used become garbage, and the collector deletes them in
its usual two steps. Nothing pulled within the collector's grace period is evicted, and content also
pushed here is neither counted nor evicted."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from registry.config import ProxySettings
from storage.metadata import CacheQueries

log = logging.getLogger("registry.proxy")

BATCH = 50  # candidates read at once, least recently pulled first


@dataclass(frozen=True, slots=True)
class Cap:
    """At most `max_bytes` cached under `prefixes` (0: no cap)."""

    prefixes: tuple[str, ...]
    max_bytes: int


def caps(settings: ProxySettings) -> list[Cap]:
    """The caps `settings` set: each upstream's, then the one over every upstream."""
    every = tuple(upstream.prefix for upstream in settings.upstreams)
    found = [Cap((u.prefix,), u.max_bytes) for u in settings.upstreams if u.max_bytes > 0]
    if settings.max_bytes > 0 and every:
        found.append(Cap(every, settings.max_bytes))
    return found


async def evict(cache: CacheQueries, settings: ProxySettings, before: float) -> int:
    """Evict cached manifests last pulled before `before` until every cap holds (or nothing older is
    left); returns how many were evicted. The cached bytes are counted once per cap (a scan), then
    each eviction says by how much it lowered them."""
    every = [upstream.prefix for upstream in settings.upstreams]
    evicted = 0
    for cap in caps(settings):
        cached = await cache.cached_bytes(cap.prefixes, every)
        while cached > cap.max_bytes:
            candidates = await cache.least_recently_pulled(cap.prefixes, before, BATCH)
            if not candidates:
                log.warning(
                    "the cache of %s holds %d bytes, over its cap of %d, all pulled within the grace period",
                    ", ".join(cap.prefixes),
                    cached,
                    cap.max_bytes,
                )
                break
            for candidate in candidates:
                freed = await cache.evict(candidate.repository, candidate.digest, before, cap.prefixes, every)
                if freed is not None:
                    evicted += 1
                    cached -= freed
                    if cached <= cap.max_bytes:
                        break
    if evicted:
        log.info("evicted %d cached manifests, least recently pulled first", evicted)
    return evicted
