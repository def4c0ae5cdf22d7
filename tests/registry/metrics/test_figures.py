"""registry/metrics/figures.py and the GC's metrics: the index's figures read in the background, the newest
collection (by the server or by `registry gc`) from the index, and the server's own collections counted."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from registry.config import Settings
from registry.gc import Collector
from tests.support.app import running_app
from tests.support.content import make_image, push_blob, push_image
from tests.support.metrics import Scrape

pytestmark = pytest.mark.anyio


async def scrape_until(
    client: httpx.AsyncClient, name: str, wanted: float, timeout: float = 10.0, **labels: str
) -> Scrape:
    """The first scrape where `name` with `labels` shows `wanted`; the last one after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        found = Scrape((await client.get("/metrics")).text)
        if found.value(name, **labels) == wanted or loop.time() > deadline:
            return found
        await asyncio.sleep(0.05)


async def test_the_index_figures_follow_pushes(settings: Settings):
    settings.metrics.index_refresh_s = 0.05
    one, two = make_image(layers=2), make_image(layers=1)
    async with running_app(settings) as (_, client):
        assert Scrape((await client.get("/metrics")).text).value("registry_repositories") == 0
        await push_image(client, "team/one", one, "1.0")
        await push_image(client, "team/one", one, "latest")
        await push_image(client, "team/two", two, "1.0")
        r = await client.post("/v2/team/two/blobs/uploads/")
        assert r.status_code == 202
        found = await scrape_until(client, "registry_uploads_in_progress", 1)
    stored = [one.manifest, one.config, *one.layers, two.manifest, two.config, *two.layers]
    assert found.value("registry_repositories") == 2
    assert found.value("registry_tags") == 3
    assert found.value("registry_manifests") == 2
    assert found.value("registry_blobs") == len(stored)
    assert found.value("registry_stored_bytes") == sum(len(b) for b in stored)
    assert found.value("registry_uploads_in_progress") == 1


async def test_a_collection_by_registry_gc_shows_as_the_newest_run(settings: Settings):
    settings.metrics.index_refresh_s = 0.05
    settings.gc.grace = "0"
    async with running_app(settings) as (app, client):
        garbage = b"nobody refers to me"
        await push_blob(client, "team/app", garbage)
        # What `registry gc` runs, on the same index, from outside the server.
        report = await Collector.configured(app.state.registry.metadata, app.state.registry.driver, settings).run()
        assert report.blobs_removed == 1
        found = await scrape_until(client, "registry_gc_last_run_removed", 1, kind="blobs")
    assert found.value("registry_gc_last_run_removed", kind="blobs") == 1
    assert found.value("registry_gc_last_run_removed_bytes", kind="blobs") == len(garbage)
    assert found.value("registry_gc_last_run_timestamp_seconds") > 0
    # Not run by this server: its own counters stay at zero.
    assert found.value("registry_gc_runs_total", result="done") == 0


async def test_the_server_s_own_collections_are_counted(settings: Settings):
    settings.gc.grace = "0"
    settings.gc.interval = "1"
    async with running_app(settings) as (_, client):
        garbage = b"collect me"
        await push_blob(client, "team/app", garbage)
        found = await scrape_until(client, "registry_gc_removed_total", 1, kind="blobs")
    assert found.value("registry_gc_runs_total", result="done") >= 1
    assert found.value("registry_gc_removed_total", kind="blobs") == 1
    assert found.value("registry_gc_removed_bytes_total", kind="blobs") == len(garbage)
