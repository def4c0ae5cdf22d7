"""The pull-through cache's queries (storage/metadata/cache.py) and the leases its fetches take
(storage/metadata/leases.py), on SQLite and PostgreSQL: cached manifests and tags, pull times, the bytes a cache
holds, the order of eviction and what an eviction removes."""

from __future__ import annotations

import time

import anyio
import pytest

from storage.metadata import DELETING, ManifestRecord, Metadata

pytestmark = pytest.mark.anyio

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
D = ["sha256:" + f"{i:x}" * 64 for i in range(1, 16)]


def record(digest: str, size: int = 300) -> ManifestRecord:
    return ManifestRecord(digest, MANIFEST, size)


async def cache_manifest(
    metadata: Metadata, repository: str, digest: str, layers: dict[str, int], tag: str | None = None
) -> None:
    """A manifest fetched into a cache with its layers, as the cache stores them (layers linked first)."""
    for layer, size in layers.items():
        await metadata.link_blob(repository, layer, size)
    await metadata.cache.put_manifest(repository, record(digest), layers, {}, tag)


async def rows(metadata: Metadata, sql: str, *parameters: object) -> list[tuple]:
    return [tuple(row) for row in await metadata.db.read(lambda c: c.execute(sql, parameters).fetchall())]


async def set_times(
    metadata: Metadata, repository: str, digest: str, created_at: float, pulled_at: float | None
) -> None:
    await metadata.db.write(
        lambda c: c.execute(
            "UPDATE manifests SET created_at = ?, pulled_at = ? WHERE repository = ? AND digest = ?",
            (created_at, pulled_at, repository, digest),
        )
    )


# -- manifests and tags --------------------------------------------------------------------------------------


async def test_a_cached_tag_remembers_when_the_upstream_confirmed_it(metadata: Metadata) -> None:
    before = time.time()
    await cache_manifest(metadata, "a/app", D[0], {D[1]: 10}, "1")
    cached = await metadata.cache.tagged("a/app", "1")
    assert cached is not None and cached.manifest == record(D[0])
    assert cached.checked_at is not None and before <= cached.checked_at <= time.time()
    assert await metadata.cache.tagged("a/app", "2") is None
    assert await metadata.cache.tagged("a/other", "1") is None


async def test_a_pushed_tag_was_never_confirmed(metadata: Metadata) -> None:
    await metadata.link_blob("team/app", D[1], 10)
    await metadata.put_manifest("team/app", record(D[0]), {D[1]: 10}, {}, "1")
    cached = await metadata.cache.tagged("team/app", "1")
    assert cached is not None and cached.manifest.digest == D[0] and cached.checked_at is None


async def test_a_cached_manifest_needs_none_of_its_references_yet_and_records_them(metadata: Metadata) -> None:
    await metadata.cache.put_manifest("a/app", record(D[0]), {D[1]: 10, D[2]: 20}, {D[3]: 500}, "1")
    assert await metadata.get_manifest("a/app", D[0]) == record(D[0])
    assert await metadata.blob_size("a/app", D[0]) == 300, "its own bytes are linked"
    assert await metadata.blob_size("a/app", D[1]) is None, "its layers come when asked for"
    references = await rows(
        metadata,
        "SELECT child, kind FROM manifest_references WHERE repository = ? AND manifest = ? ORDER BY child",
        "a/app",
        D[0],
    )
    assert references == [(D[1], "blob"), (D[2], "blob"), (D[3], "manifest")]


async def test_caching_a_tag_again_moves_it(metadata: Metadata) -> None:
    await cache_manifest(metadata, "a/app", D[0], {}, "1")
    await cache_manifest(metadata, "a/app", D[1], {}, "1")
    cached = await metadata.cache.tagged("a/app", "1")
    assert cached is not None and cached.manifest.digest == D[1]
    assert await metadata.get_manifest("a/app", D[0]) is not None, "the old manifest stays, by digest"
    await metadata.cache.put_manifest("a/app", record(D[0]), {}, {}, None)  # again, untagged: changes nothing
    assert (await metadata.cache.tagged("a/app", "1")).manifest.digest == D[1]


async def test_confirming_a_tag_renews_it_only_while_it_has_that_digest(metadata: Metadata) -> None:
    await cache_manifest(metadata, "a/app", D[0], {}, "1")
    first = (await metadata.cache.tagged("a/app", "1")).checked_at
    await anyio.sleep(0.01)
    assert await metadata.cache.confirm_tag("a/app", "1", D[0])
    assert (await metadata.cache.tagged("a/app", "1")).checked_at > first
    assert not await metadata.cache.confirm_tag("a/app", "1", D[1]), "the tag points elsewhere"
    assert not await metadata.cache.confirm_tag("a/app", "2", D[0]), "no such tag"


# -- pull times ----------------------------------------------------------------------------------------------


async def test_pulls_set_the_pull_time_and_the_blobs_use_only_forward(metadata: Metadata) -> None:
    await cache_manifest(metadata, "a/app", D[0], {D[1]: 10}, "1")
    await cache_manifest(metadata, "a/app", D[2], {D[3]: 10}, "2")
    at = time.time() + 50
    await metadata.cache.record_pulls({("a/app", D[0]): at, ("a/gone", D[9]): at}, {D[1]: at, D[8]: at})
    pulled = await rows(metadata, "SELECT digest, pulled_at FROM manifests ORDER BY digest")
    assert pulled == [(D[0], at), (D[2], None)]
    await metadata.cache.record_pulls({("a/app", D[0]): at - 10}, {D[1]: at - 10})
    assert await rows(metadata, "SELECT pulled_at FROM manifests WHERE digest = ?", D[0]) == [(at,)]
    assert await rows(metadata, "SELECT last_used_at FROM blobs WHERE digest = ?", D[1]) == [(at,)]


async def test_a_pull_does_not_mark_a_blob_the_collector_is_deleting(metadata: Metadata) -> None:
    await cache_manifest(metadata, "a/app", D[0], {D[1]: 10}, "1")
    (used,) = await rows(metadata, "SELECT last_used_at FROM blobs WHERE digest = ?", D[1])
    await metadata.db.write(lambda c: c.execute("UPDATE blobs SET state = ? WHERE digest = ?", (DELETING, D[1])))
    await metadata.cache.record_pulls({}, {D[1]: time.time() + 50})
    assert await rows(metadata, "SELECT last_used_at FROM blobs WHERE digest = ?", D[1]) == [used]


# -- what a cache holds and what is evicted first ------------------------------------------------------------


async def test_cached_bytes_count_present_blobs_only_in_caches(metadata: Metadata) -> None:
    await metadata.link_blob("a/app", D[0], 1)  # only in cache a
    for repository in ["a/app", "b/app"]:
        await metadata.link_blob(repository, D[1], 2)  # in caches a and b
    for repository in ["a/app", "team/app"]:
        await metadata.link_blob(repository, D[2], 4)  # also pushed here: not the cache's
    await metadata.link_blob("ab/app", D[3], 8)  # a repository whose name only starts like a prefix
    await metadata.link_blob("a", D[4], 16)  # the prefix alone is no repository of the cache
    await metadata.link_blob("a/app", D[5], 32)
    await metadata.db.write(lambda c: c.execute("UPDATE blobs SET state = ? WHERE digest = ?", (DELETING, D[5])))

    cached_bytes = metadata.cache.cached_bytes
    assert await cached_bytes(["a"], ["a", "b"]) == 1 + 2
    assert await cached_bytes(["b"], ["a", "b"]) == 2
    assert await cached_bytes(["a", "b"], ["a", "b"]) == 1 + 2, "a blob in two caches counts once"
    assert await cached_bytes(["a"], ["a"]) == 1, "b is no cache here: its blob is not only the cache's"
    assert await cached_bytes(["ab"], ["a", "b", "ab"]) == 8
    assert await cached_bytes([], ["a", "b"]) == 0


async def test_the_least_recently_pulled_come_first_cached_ones_by_when_they_were_cached(metadata: Metadata) -> None:
    now = time.time()
    for digest, repository in [(D[0], "a/one"), (D[1], "a/two"), (D[2], "b/three"), (D[3], "a/four"), (D[4], "team/x")]:
        await cache_manifest(metadata, repository, digest, {})
    await set_times(metadata, "a/one", D[0], now - 500, now - 100)  # cached long ago, pulled lately
    await set_times(metadata, "a/two", D[1], now - 300, None)  # never pulled since it was cached
    await set_times(metadata, "b/three", D[2], now - 400, now - 200)
    await set_times(metadata, "a/four", D[3], now - 50, now - 10)
    await set_times(metadata, "team/x", D[4], now - 900, None)

    lrp = metadata.cache.least_recently_pulled
    found = [(m.repository, m.digest, m.used_at) for m in await lrp(["a", "b"], now, 10)]
    assert found == [
        ("a/two", D[1], now - 300),
        ("b/three", D[2], now - 200),
        ("a/one", D[0], now - 100),
        ("a/four", D[3], now - 10),
    ]
    assert [m.repository for m in await lrp(["a"], now, 10)] == ["a/two", "a/one", "a/four"]
    assert [m.repository for m in await lrp(["a", "b"], now - 150, 10)] == ["a/two", "b/three"]
    assert [m.repository for m in await lrp(["a", "b"], now, 1)] == ["a/two"]


async def test_evicting_removes_the_manifest_its_tags_and_the_blobs_only_it_used(metadata: Metadata) -> None:
    shared, own, other = D[10], D[11], D[12]
    await cache_manifest(metadata, "a/app", D[0], {shared: 10, own: 20}, "1")
    await cache_manifest(metadata, "a/app", D[1], {shared: 10, other: 30}, "2")
    await metadata.cache.put_manifest("a/app", record(D[0]), {}, {}, "latest")  # a second tag of D[0]
    later = time.time() + 1

    before = await metadata.cache.cached_bytes(["a"], ["a"])
    assert await metadata.cache.evict("a/app", D[0], later, ["a"], ["a"]) == 300 + 20, "its bytes and its own layer"
    assert await metadata.cache.cached_bytes(["a"], ["a"]) == before - 320
    assert await metadata.get_manifest("a/app", D[0]) is None
    assert await metadata.list_tags("a/app", "", None) == ["2"]
    assert await metadata.blob_size("a/app", own) is None
    assert await metadata.blob_size("a/app", D[0]) is None, "the manifest's own bytes are unlinked too"
    assert await metadata.blob_size("a/app", shared) == 10, "the other manifest still uses it"
    assert await rows(metadata, "SELECT child FROM manifest_references WHERE manifest = ?", D[0]) == []
    assert await metadata.stored_blob_size(own) == 20, "the bytes stay until the collector finds them unused"
    assert await metadata.cache.evict("a/app", D[0], later, ["a"], ["a"]) is None, "gone already"

    assert await metadata.cache.evict("a/app", D[1], later, ["a"], ["a"]) == 300 + 10 + 30
    assert not await metadata.repository_exists("a/app"), "an emptied cache repository goes"


async def test_an_image_pulled_since_the_cutoff_is_not_evicted(metadata: Metadata) -> None:
    await cache_manifest(metadata, "a/app", D[0], {D[1]: 10}, "1")
    cutoff = time.time() - 60
    await set_times(metadata, "a/app", D[0], cutoff - 100, None)
    await metadata.cache.record_pulls({("a/app", D[0]): cutoff + 1}, {})
    assert await metadata.cache.evict("a/app", D[0], cutoff, ["a"], ["a"]) is None
    assert await metadata.get_manifest("a/app", D[0]) is not None
    assert await metadata.blob_size("a/app", D[1]) == 10


# -- leases --------------------------------------------------------------------------------------------------


async def test_a_lease_has_one_holder_until_it_expires_or_is_released(metadata: Metadata) -> None:
    leases = metadata.leases
    assert not await leases.held("blob:x")
    assert await leases.take("blob:x", "one", 30)
    assert await leases.held("blob:x")
    assert not await leases.take("blob:x", "two", 30)
    assert await leases.take("blob:x", "one", 30), "the holder renews it"
    assert await leases.take("blob:y", "two", 30), "another name is another lease"
    await leases.release("blob:x", "two")
    assert not await leases.take("blob:x", "two", 30), "only the holder releases it"
    await leases.release("blob:x", "one")
    assert not await leases.held("blob:x")
    assert await leases.take("blob:x", "two", 0.2)
    await anyio.sleep(0.25)
    assert not await leases.held("blob:x")
    assert await leases.take("blob:x", "three", 30), "an expired lease is anyone's"
