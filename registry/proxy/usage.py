"""When cached content was last pulled, recorded in batches: a pull writes nothing; every few seconds
one transaction records the pulls since the last one (the collector evicts the least recently pulled
first, and keeps what was pulled within its grace period)."""

from __future__ import annotations

import asyncio
import logging
import time

from storage.metadata import CacheQueries

log = logging.getLogger("registry.proxy")

FLUSH_EVERY_S = 10.0


class PullLog:
    """Pulls of one process not yet recorded (what is pending is lost if the process is killed: the
    content then looks a few seconds less recently pulled)."""

    def __init__(self, cache: CacheQueries):
        self.cache = cache
        self._manifests: dict[tuple[str, str], float] = {}
        self._blobs: dict[str, float] = {}

    def manifest(self, repository: str, digest: str) -> None:
        self._manifests[(repository, digest)] = time.time()

    def blob(self, digest: str) -> None:
        self._blobs[digest] = time.time()

    async def flush(self) -> None:
        """Record the pending pulls in one transaction."""
        manifests, blobs = self._manifests, self._blobs
        if not manifests and not blobs:
            return
        self._manifests, self._blobs = {}, {}
        try:
            await self.cache.record_pulls(manifests, blobs)
        except BaseException:  # kept for the next flush, newer pulls winning
            self._manifests = manifests | self._manifests
            self._blobs = blobs | self._blobs
            raise

    async def flush_every(self, interval_s: float = FLUSH_EVERY_S) -> None:
        """Flush every `interval_s` until cancelled (a failed flush is retried with the next)."""
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.flush()
            except Exception as e:
                log.warning("could not record the pulls of cached content: %s", e)
