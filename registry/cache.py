"""A bounded in-memory cache of content-addressed bytes (manifests): a digest's bytes never change,
so an entry is never stale; it only has to be found in the index first."""

from __future__ import annotations

from collections import OrderedDict


class DigestCache:
    """Least recently used bytes by digest, at most `capacity` bytes in all."""

    def __init__(self, capacity: int = 32 << 20):
        self.capacity = capacity
        self._entries: OrderedDict[str, bytes] = OrderedDict()
        self._size = 0

    def get(self, digest: str) -> bytes | None:
        data = self._entries.get(digest)
        if data is not None:
            self._entries.move_to_end(digest)
        return data

    def put(self, digest: str, data: bytes) -> None:
        if len(data) > self.capacity // 8 or digest in self._entries:
            return
        self._entries[digest] = data
        self._size += len(data)
        while self._size > self.capacity:
            _, evicted = self._entries.popitem(last=False)
            self._size -= len(evicted)
