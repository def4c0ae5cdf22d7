"""The pull-through cache on three replicas sharing one S3 bucket and one PostgreSQL database: one
upstream fetch per blob across the replicas, and what one replica cached the others serve."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette

from registry.config import Settings, UpstreamSettings
from registry.gc import Collector
from tests.support.app import running_app
from tests.support.backends import s3_and_postgres
from tests.support.content import OCI_MANIFEST, Image, digest_of, make_image
from tests.support.services import require_service
from tests.support.upstreams import Distribution, distribution_available, push_blob

pytestmark = pytest.mark.anyio

REPLICAS = 3
CLIENTS = 16


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[Distribution]:
    require_service(distribution_available(), "CNCF Distribution (`docker-registry`)")
    server = Distribution(tmp_path / "upstream").start()
    yield server
    server.stop()


@pytest.fixture
def shared_settings(tmp_path: Path, seaweed, postgres, upstream: Distribution) -> Settings:
    settings = s3_and_postgres(tmp_path, seaweed, postgres)
    settings.proxy.upstreams = [UpstreamSettings(prefix="up", url=upstream.url, tag_ttl="1h")]
    settings.gc.grace = "0s"
    return settings


@pytest.fixture
async def replicas(shared_settings: Settings) -> AsyncIterator[list[tuple[Starlette, httpx.AsyncClient]]]:
    async with AsyncExitStack() as stack:
        yield [await stack.enter_async_context(running_app(shared_settings)) for _ in range(REPLICAS)]


async def test_concurrent_cold_pulls_on_three_replicas_fetch_each_blob_once(upstream, replicas) -> None:
    data = os.urandom(6 << 20)
    with upstream.client() as client:
        digest = push_blob(client, "team/tool", data)
    since = upstream.mark()

    async def pull(i: int) -> bytes:
        _, client = replicas[i % REPLICAS]
        r = await client.get(f"/v2/up/team/tool/blobs/{digest}")
        assert r.status_code == 200, r.text
        return r.content

    bodies = await asyncio.gather(*(pull(i) for i in range(CLIENTS)))
    assert all(body == data for body in bodies)
    requests = upstream.wait_for_requests(lambda found: len(found) >= 1, since)
    fetches = [r for r in requests if r.method == "GET" and r.path == f"/v2/team/tool/blobs/{digest}"]
    assert len(fetches) == 1, requests


async def test_what_one_replica_cached_the_others_serve_with_the_upstream_stopped(upstream, replicas) -> None:
    layer = os.urandom(1 << 20)
    with upstream.client() as client:
        digest = push_blob(client, "team/tool", layer)
    (_, first), *others = replicas
    assert (await first.get(f"/v2/up/team/tool/blobs/{digest}")).content == layer
    upstream.stop()
    for _, client in others:
        r = await client.get(f"/v2/up/team/tool/blobs/{digest}")
        assert r.status_code == 200 and r.content == layer
        assert r.headers["X-Registry-Cache"] == "hit"
    missing = digest_of(b"never pushed")
    r = await others[0][1].get(f"/v2/up/team/tool/blobs/{missing}")
    assert r.status_code == 503 and upstream.url in r.json()["errors"][0]["message"]


def put_image(client: httpx.Client, repository: str, tag: str) -> Image:
    image = make_image(layers=0, shared=[os.urandom(1 << 20)])
    for blob in [image.config, *image.layers]:
        push_blob(client, repository, blob)
    r = client.put(f"/v2/{repository}/manifests/{tag}", content=image.manifest, headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 201, r.text
    return image


async def pull_image(client: httpx.AsyncClient, repository: str, tag: str, image: Image) -> None:
    r = await client.get(f"/v2/{repository}/manifests/{tag}")
    assert r.status_code == 200 and r.content == image.manifest
    for blob in [image.config, *image.layers]:
        assert (await client.get(f"/v2/{repository}/blobs/{digest_of(blob)}")).content == blob


async def test_eviction_on_s3_and_postgresql_drops_the_least_recently_pulled_image(
    upstream, replicas, shared_settings: Settings
) -> None:
    with upstream.client() as client:
        old, new = put_image(client, "team/old", "1"), put_image(client, "team/new", "1")
    (app, first), (_, second), _ = replicas
    await pull_image(first, "up/team/old", "1", old)
    await asyncio.sleep(0.05)
    await pull_image(second, "up/team/new", "1", new)
    for replica, _ in replicas:
        await replica.state.registry.pull_through.pulls.flush()
    shared_settings.proxy.max_bytes = (3 << 20) // 2  # room for one image of the two
    registry = app.state.registry
    report = await Collector.configured(registry.metadata, registry.driver, shared_settings).run()
    assert report.cached_manifests_evicted == 1
    assert report.blobs_removed == 3  # the old image's config, layer and manifest bytes
    assert await registry.metadata.get_manifest("up/team/old", old.digest) is None
    assert await registry.metadata.get_manifest("up/team/new", new.digest) is not None
    upstream.stop()  # what is left pulls without the upstream; what went is gone
    await pull_image(first, "up/team/new", "1", new)
    r = await first.get(f"/v2/up/team/old/blobs/{digest_of(old.layers[0])}")
    assert r.status_code == 503
