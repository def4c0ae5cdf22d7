"""Eviction by size (registry/proxy/eviction.py, run by the collector in registry/gc.py): the least recently
pulled cached images go first until every cap holds, per upstream and over all; nothing pulled within the grace
period and nothing pushed here goes; after a collection the evicted bytes are gone and what was kept pulls."""

from __future__ import annotations

import logging
import time
from dataclasses import replace

import anyio
import httpx
import pytest
from starlette.applications import Starlette

from registry.config import ProxySettings, UpstreamSettings
from registry.gc import Collector
from registry.proxy.eviction import Cap, caps, evict
from tests.support.content import OCI_MANIFEST, Image, digest_of, make_image, push_image
from tests.support.fake_upstream import FakeUpstream, blob_stored, cache_app

pytestmark = pytest.mark.anyio


def size_of(image: Image) -> int:
    """The bytes an image cached whole holds: its manifest, config and layers."""
    return len(image.manifest) + len(image.config) + sum(len(layer) for layer in image.layers)


def digests(image: Image) -> list[str]:
    return [image.digest, digest_of(image.config), *(digest_of(layer) for layer in image.layers)]


async def pull(client: httpx.AsyncClient, name: str, image: Image) -> None:
    """Pull `name:1` whole, as a client does, and check every byte."""
    r = await client.get(f"/v2/{name}/manifests/1", headers={"Accept": OCI_MANIFEST})
    assert r.status_code == 200 and r.content == image.manifest, name
    for blob in [image.config, *image.layers]:
        r = await client.get(f"/v2/{name}/blobs/{digest_of(blob)}")
        assert r.status_code == 200 and r.content == blob, name


def collector(app: Starlette, proxy: ProxySettings, grace_s: float = 0.0) -> Collector:
    registry = app.state.registry
    return Collector(registry.metadata, registry.driver, grace_s, 3600.0, proxy)


def app_proxy(app: Starlette) -> ProxySettings:
    """The proxy settings the app was built with (its collector's)."""
    return app.state.collector.proxy


def capped(proxy: ProxySettings, total: int = 0, **per_prefix: int) -> ProxySettings:
    """`proxy` with the cap over all upstreams `total` and each named upstream's cap."""
    upstreams = [replace(u, max_bytes=per_prefix.get(u.prefix, 0)) for u in proxy.upstreams]
    return replace(proxy, upstreams=upstreams, max_bytes=total)


def test_caps_are_each_upstreams_then_the_one_over_all() -> None:
    a, b = UpstreamSettings(prefix="a", url="http://a", max_bytes=10), UpstreamSettings(prefix="b", url="http://b")
    assert caps(ProxySettings(upstreams=[a, b])) == [Cap(("a",), 10)]
    assert caps(ProxySettings(upstreams=[a, b], max_bytes=100)) == [Cap(("a",), 10), Cap(("a", "b"), 100)]
    assert caps(ProxySettings(upstreams=[replace(a, max_bytes=0), b])) == []


async def test_the_least_recently_pulled_image_goes_first_and_its_bytes_after_the_collection(tmp_path) -> None:
    one, two, three = make_image(), make_image(), make_image()
    async with FakeUpstream() as upstream, cache_app(tmp_path, {"prefix": "a", "url": upstream.url}) as (app, client):
        for name, image in [("team/one", one), ("team/two", two), ("team/three", three)]:
            upstream.add_image(name, image, tag="1")
            await pull(client, f"a/{name}", image)
        await pull(client, "a/team/one", one)  # one is now the most recently pulled: two the least
        await app.state.registry.pull_through.pulls.flush()
        settings = capped(app_proxy(app), total=size_of(one) + size_of(three))
        assert await app.state.registry.metadata.cache.cached_bytes(["a"], ["a"]) == 3 * size_of(one)

        report = await collector(app, settings).run()
        assert report.cached_manifests_evicted == 1
        metadata = app.state.registry.metadata
        assert await metadata.get_manifest("a/team/two", two.digest) is None
        assert await metadata.cache.tagged("a/team/two", "1") is None
        assert [await blob_stored(app, d) for d in digests(two)] == [False] * 3, "evicted bytes are collected"
        assert all([await blob_stored(app, d) for d in digests(one) + digests(three)])
        assert await metadata.cache.cached_bytes(["a"], ["a"]) == 2 * size_of(one)

        before = len(upstream.requests)
        await pull(client, "a/team/one", one)
        await pull(client, "a/team/three", three)
        assert len(upstream.requests) == before, "what was kept is served from the cache"
        await pull(client, "a/team/two", two)
        assert upstream.count("GET", "/v2/team/two/manifests/1") == 2, "what was evicted is fetched again"


async def test_what_was_pulled_within_the_grace_period_stays_over_the_cap(tmp_path, caplog) -> None:
    caplog.set_level(logging.WARNING)
    old, recent = make_image(), make_image()
    async with FakeUpstream() as upstream, cache_app(tmp_path, {"prefix": "a", "url": upstream.url}) as (app, client):
        upstream.add_image("team/old", old, tag="1")
        upstream.add_image("team/recent", recent, tag="1")
        await pull(client, "a/team/old", old)
        await anyio.sleep(1.0)
        await pull(client, "a/team/recent", recent)
        await app.state.registry.pull_through.pulls.flush()

        report = await collector(app, capped(app_proxy(app), total=1), grace_s=0.7).run()
        assert report.cached_manifests_evicted == 1
        metadata = app.state.registry.metadata
        assert await metadata.get_manifest("a/team/old", old.digest) is None
        assert await metadata.get_manifest("a/team/recent", recent.digest) is not None
        assert not any([await blob_stored(app, d) for d in digests(old)])
        assert all([await blob_stored(app, d) for d in digests(recent)])
        assert any("over its cap" in m and "grace" in m for m in caplog.messages)


async def test_a_pull_moves_an_image_out_of_the_grace_period(tmp_path) -> None:
    old, new = make_image(), make_image()
    async with FakeUpstream() as upstream, cache_app(tmp_path, {"prefix": "a", "url": upstream.url}) as (app, client):
        upstream.add_image("team/old", old, tag="1")
        upstream.add_image("team/new", new, tag="1")
        await pull(client, "a/team/old", old)
        await pull(client, "a/team/new", new)
        await anyio.sleep(1.0)
        await pull(client, "a/team/old", old)  # cached first, but pulled again just now
        await app.state.registry.pull_through.pulls.flush()
        report = await collector(app, capped(app_proxy(app), total=1), grace_s=0.7).run()
        assert report.cached_manifests_evicted == 1
        assert await app.state.registry.metadata.get_manifest("a/team/new", new.digest) is None
        assert await app.state.registry.metadata.get_manifest("a/team/old", old.digest) is not None


async def test_content_pushed_here_is_neither_counted_nor_evicted(tmp_path) -> None:
    shared = make_image().layers[0]
    local, cached = make_image(shared=[shared]), make_image(shared=[shared])
    async with FakeUpstream() as upstream, cache_app(tmp_path, {"prefix": "a", "url": upstream.url}) as (app, client):
        await push_image(client, "team/local", local, "1")
        upstream.add_image("team/app", cached, tag="1")
        await pull(client, "a/team/app", cached)
        assert upstream.count("GET", f"/v2/team/app/blobs/{digest_of(shared)}") == 0, "linked, not fetched"
        cache = app.state.registry.metadata.cache
        assert await cache.cached_bytes(["a"], ["a"]) == size_of(cached) - len(shared)

        report = await collector(app, capped(app_proxy(app), total=1, a=1)).run()
        assert report.cached_manifests_evicted == 1
        assert await cache.cached_bytes(["a"], ["a"]) == 0
        assert not await blob_stored(app, cached.digest) and not await blob_stored(app, digest_of(cached.layers[1]))
        assert all([await blob_stored(app, d) for d in digests(local)])
        r = await client.get("/v2/team/local/manifests/1", headers={"Accept": OCI_MANIFEST})
        assert r.status_code == 200 and r.content == local.manifest
        for blob in [local.config, *local.layers]:
            r = await client.get(f"/v2/team/local/blobs/{digest_of(blob)}")
            assert (r.status_code, r.content) == (200, blob)


async def test_each_upstreams_cap_then_the_cap_over_all(tmp_path) -> None:
    a1, a2, b1, b2 = (make_image() for _ in range(4))
    async with (
        FakeUpstream() as up_a,
        FakeUpstream() as up_b,
        cache_app(tmp_path, {"prefix": "a", "url": up_a.url}, {"prefix": "b", "url": up_b.url}) as (app, client),
    ):
        pulls = [
            (up_a, "a", "team/a1", a1),
            (up_b, "b", "team/b1", b1),
            (up_a, "a", "team/a2", a2),
            (up_b, "b", "team/b2", b2),
        ]
        for upstream, prefix, name, image in pulls:  # in this order: a1 least recently pulled, b2 most
            upstream.add_image(name, image, tag="1")
            await pull(client, f"{prefix}/{name}", image)
            await anyio.sleep(0.01)
        cache = app.state.registry.metadata.cache
        size = size_of(a1)
        assert await cache.cached_bytes(["a"], ["a", "b"]) == 2 * size
        assert await cache.cached_bytes(["a", "b"], ["a", "b"]) == 4 * size

        evicted = await evict(cache, capped(app_proxy(app), a=size), time.time())
        assert evicted == 1
        assert await cache.cached_bytes(["a"], ["a", "b"]) == size
        assert await cache.cached_bytes(["b"], ["a", "b"]) == 2 * size, "b has no cap of its own"
        assert await app.state.registry.metadata.get_manifest("a/team/a1", a1.digest) is None

        evicted = await evict(cache, capped(app_proxy(app), total=2 * size, a=size), time.time())
        assert evicted == 1
        assert await app.state.registry.metadata.get_manifest("b/team/b1", b1.digest) is None
        remaining = [(r.repository, r.digest) for r in await cache.least_recently_pulled(["a", "b"], time.time(), 10)]
        assert remaining == [("a/team/a2", a2.digest), ("b/team/b2", b2.digest)]

        assert await evict(cache, capped(app_proxy(app), total=2 * size, a=size), time.time()) == 0, "caps hold"
