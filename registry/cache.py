"""A bounded in-memory cache of content-addressed bytes (manifests): a digest's bytes never change,
so an entry is never stale; it only has to be found in the metadata store first."""

from __future__ import annotations

import sys
from collections import OrderedDict

DEFAULT_CACHE_BYTES = 32 << 20


def entry_cost(digest: str, data: bytes) -> int:
    """The memory one entry's own objects hold: the bytes object and the key string, headers included."""
    return sys.getsizeof(data) + sys.getsizeof(digest)


class DigestCache:
    """Least recently used bytes by digest, bounded by real memory and by count.

    `size` is what the entries' objects hold (`entry_cost`) plus what the OrderedDict itself holds (its hash
    table, entry array, fast-node array and list nodes, as `sys.getsizeof` reports them; under LRU churn these
    come to about 65-170 bytes an entry, more than a 1-byte manifest). It stays at most `capacity`, and there are
    at most `max_entries` entries; an entry whose objects cost more than an eighth of `capacity` is not cached.
    """

    def __init__(self, capacity: int = DEFAULT_CACHE_BYTES, max_entries: int = 65536):
        self.capacity = capacity
        self.max_entries = max_entries
        self._entries: OrderedDict[str, bytes] = OrderedDict()
        self._objects = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def size(self) -> int:
        """The memory the cache holds now, in bytes: its entries' objects and the container."""
        return self._objects + sys.getsizeof(self._entries)

    def get(self, digest: str) -> bytes | None:
        """The bytes cached for `digest` (now the most recently used), or None."""
        data = self._entries.get(digest)
        if data is not None:
            self._entries.move_to_end(digest)
        return data

    def put(self, digest: str, data: bytes) -> None:
        """Cache `data` under `digest`, evicting the least recently used entries to stay within both bounds."""
        cost = entry_cost(digest, data)
        if cost > self.capacity // 8 or digest in self._entries:
            return
        self._entries[digest] = data
        self._objects += cost
        while self._entries and (self.size > self.capacity or len(self._entries) > self.max_entries):
            evicted_digest, evicted = self._entries.popitem(last=False)
            self._objects -= entry_cost(evicted_digest, evicted)
