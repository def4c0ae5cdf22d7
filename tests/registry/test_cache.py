"""DigestCache: bounded by the real memory its entries hold, and by an entry count, least recently used first."""

from __future__ import annotations

import tracemalloc
from collections.abc import Iterator

import pytest

from registry.cache import DigestCache
from registry.config import Settings
from tests.support.app import running_app
from tests.support.content import make_image, push_image


def digest_of(i: int) -> str:
    """A distinct digest-shaped key, built fresh (so the cache alone keeps it alive)."""
    return f"sha256:{i:064x}"


@pytest.fixture
def traced() -> Iterator[None]:
    tracemalloc.start()
    try:
        yield
    finally:
        tracemalloc.stop()


def allocated() -> int:
    return tracemalloc.get_traced_memory()[0]


def test_many_tiny_manifests_hold_no_more_memory_than_the_cap(traced: None) -> None:
    cap = 1 << 20
    cache = DigestCache(capacity=cap)
    before = allocated()
    for i in range(100_000):
        cache.put(digest_of(i), b"%d" % (i % 7))
    held = allocated() - before
    assert held <= cap, f"100000 tiny entries put: the cache holds {held} bytes, over the {cap}-byte cap"
    assert len(cache) > 1000  # still caches: the cap is spent on entries, not refused


@pytest.mark.parametrize("largest", [1, 200, 4000])
def test_accounted_size_covers_the_measured_memory_under_lru_churn(traced: None, largest: int) -> None:
    cache = DigestCache(capacity=1 << 20, max_entries=1 << 30)
    before = allocated()
    excess = 0
    for i in range(30_000):
        cache.put(digest_of(i), bytes(i % largest + 1))
        if i % 3 == 0:
            cache.get(digest_of(i // 2))
        if i % 50 == 0:
            excess = max(excess, allocated() - before - cache.size)
    assert len(cache) < 30_000  # it did evict: the churn happened
    # up to a few hundred bytes are this loop's own locals (ints, the generator's frame), not the cache's
    assert excess <= 1024, f"real memory exceeded what the cache counts by {excess} bytes"


def test_entry_bound_evicts_the_least_recently_used() -> None:
    cache = DigestCache(max_entries=3)
    for i in range(3):
        cache.put(digest_of(i), b"m%d" % i)
    assert cache.get(digest_of(0)) == b"m0"  # 0 is now the most recent; 1 the least
    cache.put(digest_of(3), b"m3")
    assert len(cache) == 3
    assert cache.get(digest_of(1)) is None
    assert [cache.get(digest_of(i)) for i in (0, 2, 3)] == [b"m0", b"m2", b"m3"]


def test_byte_cap_evicts_the_least_recently_used_and_returns_size_on_eviction() -> None:
    cache = DigestCache(capacity=64 << 10)
    for i in range(200):
        cache.put(digest_of(i), bytes(1000))
    assert cache.size <= 64 << 10
    assert cache.get(digest_of(199)) is not None
    assert cache.get(digest_of(0)) is None
    kept = len(cache)
    assert 20 < kept < 64


def test_an_entry_costing_more_than_an_eighth_of_the_cap_is_not_cached() -> None:
    cache = DigestCache(capacity=8 << 10)
    cache.put(digest_of(1), bytes(1 << 10))
    cache.put(digest_of(2), bytes(100))
    assert cache.get(digest_of(1)) is None
    assert cache.get(digest_of(2)) == bytes(100)


def test_putting_a_cached_digest_again_keeps_one_entry_and_its_size() -> None:
    cache = DigestCache()
    cache.put(digest_of(1), b"abc")
    size = cache.size
    cache.put(digest_of(1), b"abc")
    assert len(cache) == 1 and cache.size == size


@pytest.mark.anyio
async def test_the_manifests_cache_bytes_setting_bounds_what_a_served_registry_caches(settings: Settings) -> None:
    settings.manifests.cache_bytes = 16 << 10
    async with running_app(settings) as (app, client):
        for i in range(40):
            image = make_image()
            await push_image(client, "cached/repo", image, f"t{i}")
            r = await client.get(f"/v2/cached/repo/manifests/t{i}", headers={"Accept": image.media_type})
            assert r.status_code == 200 and r.content == image.manifest
        cache = app.state.registry.manifest_cache
        assert 0 < len(cache) < 40
        assert cache.size <= 16 << 10
