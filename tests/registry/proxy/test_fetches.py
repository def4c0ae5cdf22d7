"""Single-flight fetches (registry/proxy/fetches.py) through the whole app: one upstream GET per blob however many
clients and app instances ask at once, a waiter taking over from a holder that stopped, a fetch finishing for a
client that went away, and wrong or cut-short bytes reaching no client whole and storing nothing."""

from __future__ import annotations

import asyncio
import os
import time

import anyio
import httpx
import pytest
from starlette.applications import Starlette

from registry.proxy import fetches
from tests.support.app import running_app, stored_keys
from tests.support.content import OCI_MANIFEST, make_image
from tests.support.fake_upstream import FakeUpstream, blob_stored, cache_app, cache_settings, raw_get

pytestmark = pytest.mark.anyio


def dist(upstream: FakeUpstream) -> dict[str, object]:
    return {"prefix": "dist", "url": upstream.url, "tag_ttl": "1h"}


async def visible(app: Starlette, digest: str) -> bool:
    return await app.state.registry.metadata.blob_size("dist/team/app", digest) is not None


async def wait_until_visible(app: Starlette, digest: str, within_s: float = 5.0) -> None:
    deadline = time.monotonic() + within_s
    while not await visible(app, digest):
        assert time.monotonic() < deadline, f"{digest} did not become visible within {within_s}s"
        await anyio.sleep(0.02)


async def get_all(client: httpx.AsyncClient, path: str, times: int) -> list[httpx.Response]:
    return list(await asyncio.gather(*(client.get(path) for _ in range(times))))


async def test_twenty_clients_at_once_cause_one_upstream_get(tmp_path) -> None:
    data = os.urandom(256 << 10)
    async with (
        FakeUpstream(piece_bytes=16 << 10, piece_pause_s=0.02) as upstream,
        cache_app(tmp_path, dist(upstream)) as (app, client),
    ):
        digest = upstream.add_blob("team/app", data)
        responses = await get_all(client, f"/v2/dist/team/app/blobs/{digest}", 20)
        assert [r.status_code for r in responses] == [200] * 20
        assert all(r.content == data for r in responses)
        assert sorted(r.headers["X-Registry-Cache"] for r in responses) == ["hit"] * 19 + ["miss"]
        assert upstream.count("GET", f"/v2/team/app/blobs/{digest}") == 1
        assert await blob_stored(app, digest)


async def test_two_app_instances_on_one_index_and_one_storage_cause_one_upstream_get(tmp_path) -> None:
    data = os.urandom(256 << 10)
    async with FakeUpstream(piece_bytes=16 << 10, piece_pause_s=0.02) as upstream:
        settings = cache_settings(tmp_path, dist(upstream))
        async with running_app(settings) as (one, first), running_app(settings) as (two, second):
            assert one.state.registry is not two.state.registry
            digest = upstream.add_blob("team/app", data)
            path = f"/v2/dist/team/app/blobs/{digest}"
            responses = await asyncio.gather(*(c.get(path) for c in [first, second] * 8))
            assert all(r.status_code == 200 and r.content == data for r in responses)
            assert upstream.count("GET", f"/v2/team/app/blobs/{digest}") == 1
            assert await visible(one, digest) and await visible(two, digest)


async def test_the_manifest_of_a_tag_is_fetched_once_for_many_clients_at_once(tmp_path) -> None:
    image = make_image()
    async with FakeUpstream(stall_s=0.2) as upstream, cache_app(tmp_path, dist(upstream)) as (_, client):
        upstream.add_image("team/app", image, tag="1")
        responses = await asyncio.gather(
            *(client.get("/v2/dist/team/app/manifests/1", headers={"Accept": OCI_MANIFEST}) for _ in range(10))
        )
        assert all(r.status_code == 200 and r.content == image.manifest for r in responses)
        assert upstream.count("GET", "/v2/team/app/manifests/1") == 1
        assert upstream.count_kind("HEAD", "manifests") == 0


async def test_a_stale_tag_is_revalidated_once_for_many_clients_at_once(tmp_path) -> None:
    image = make_image()
    async with (
        FakeUpstream() as upstream,
        cache_app(tmp_path, {"prefix": "dist", "url": upstream.url, "tag_ttl": "0.2s"}) as (_, client),
    ):
        upstream.add_image("team/app", image, tag="1")
        path = "/v2/dist/team/app/manifests/1"
        assert (await client.get(path, headers={"Accept": OCI_MANIFEST})).status_code == 200
        await anyio.sleep(0.25)
        upstream.stall_s = 0.2
        responses = await asyncio.gather(*(client.get(path, headers={"Accept": OCI_MANIFEST}) for _ in range(10)))
        assert all(r.status_code == 200 and r.content == image.manifest for r in responses)
        assert sorted(r.headers["X-Registry-Cache"] for r in responses) == ["hit"] * 9 + ["revalidated"]
        there = "/v2/team/app/manifests/1"
        assert (upstream.count("HEAD", there), upstream.count("GET", there)) == (1, 1)


async def test_a_waiter_takes_over_a_blob_fetch_whose_holder_stopped_renewing(tmp_path) -> None:
    data = os.urandom(10_000)
    async with FakeUpstream() as upstream, cache_app(tmp_path, dist(upstream)) as (app, client):
        digest = upstream.add_blob("team/app", data)
        # A fetcher in another process took the lease, then died: its lease runs out in 0.5 s.
        assert await app.state.registry.metadata.leases.take(f"blob:{digest}", "a-dead-process", 0.5)
        started = time.monotonic()
        r = await client.get(f"/v2/dist/team/app/blobs/{digest}")
        waited = time.monotonic() - started
        assert r.status_code == 200 and r.content == data
        assert 0.4 < waited < 3.0
        assert upstream.count("GET", f"/v2/team/app/blobs/{digest}") == 1
        assert not await app.state.registry.metadata.leases.held(f"blob:{digest}"), "released once done"


async def test_a_waiter_takes_over_a_manifest_fetch_whose_holder_stopped_renewing(tmp_path) -> None:
    image = make_image()
    async with FakeUpstream() as upstream, cache_app(tmp_path, dist(upstream)) as (app, client):
        upstream.add_image("team/app", image, tag="1")
        assert await app.state.registry.metadata.leases.take("manifest:dist/team/app:1", "a-dead-process", 0.5)
        started = time.monotonic()
        r = await client.get("/v2/dist/team/app/manifests/1", headers={"Accept": OCI_MANIFEST})
        assert r.status_code == 200 and r.content == image.manifest
        assert 0.4 < time.monotonic() - started < 3.0
        assert upstream.count("GET", "/v2/team/app/manifests/1") == 1


async def test_a_holder_that_keeps_receiving_keeps_its_lease(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(fetches, "LEASE_TTL_S", 0.5)
    monkeypatch.setattr(fetches, "RENEW_EVERY_S", 0.1)
    data = os.urandom(64 << 10)
    async with (
        FakeUpstream(piece_bytes=4 << 10, piece_pause_s=0.06) as upstream,  # about a second in all
        cache_app(tmp_path, dist(upstream)) as (_, client),
    ):
        digest = upstream.add_blob("team/app", data)
        responses = await get_all(client, f"/v2/dist/team/app/blobs/{digest}", 5)
        assert all(r.status_code == 200 and r.content == data for r in responses)
        assert upstream.count("GET", f"/v2/team/app/blobs/{digest}") == 1, "no waiter took a lease still renewed"


async def test_a_holder_whose_upstream_pauses_longer_than_the_lease_keeps_it(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(fetches, "LEASE_TTL_S", 0.3)
    monkeypatch.setattr(fetches, "RENEW_EVERY_S", 0.1)
    data = os.urandom(8 << 10)
    async with (
        FakeUpstream(piece_bytes=4 << 10, piece_pause_s=0.8) as upstream,  # one pause, well within read_timeout_s
        cache_app(tmp_path, dist(upstream)) as (_, client),
    ):
        digest = upstream.add_blob("team/app", data)
        responses = await get_all(client, f"/v2/dist/team/app/blobs/{digest}", 3)
        assert all(r.status_code == 200 and r.content == data for r in responses)
        assert upstream.count("GET", f"/v2/team/app/blobs/{digest}") == 1


async def test_a_fetch_goes_on_when_its_client_goes_away_after_the_first_piece(tmp_path) -> None:
    data = os.urandom(128 << 10)
    async with (
        FakeUpstream(piece_bytes=8 << 10, piece_pause_s=0.01) as upstream,
        cache_app(tmp_path, dist(upstream)) as (app, client),
    ):
        digest = upstream.add_blob("team/app", data)
        received = await raw_get(app, f"/v2/dist/team/app/blobs/{digest}", leave_after=1)
        assert received.status == 200 and received.headers["x-registry-cache"] == "miss"
        assert 0 < len(received.body) < len(data) and not received.complete
        assert data.startswith(received.body)
        await wait_until_visible(app, digest)
        r = await client.get(f"/v2/dist/team/app/blobs/{digest}")
        assert (r.status_code, r.content, r.headers["X-Registry-Cache"]) == (200, data, "hit")
        assert upstream.count("GET", f"/v2/team/app/blobs/{digest}") == 1
        assert not await app.state.registry.metadata.leases.held(f"blob:{digest}")


@pytest.mark.parametrize("pause_s", [0.0, 0.01], ids=["all-at-once", "piece-by-piece"])
@pytest.mark.parametrize("fault", ["wrong bytes", "cut short"])
async def test_bad_bytes_reach_no_client_whole_and_store_nothing(tmp_path, fault: str, pause_s: float) -> None:
    data = os.urandom(64 << 10)
    async with (
        FakeUpstream(piece_bytes=4 << 10, piece_pause_s=pause_s) as upstream,
        cache_app(tmp_path, dist(upstream)) as (app, client),
    ):
        digest = upstream.add_blob("team/app", data)
        if fault == "wrong bytes":
            upstream.wrong[digest] = data[:-1] + bytes([data[-1] ^ 1])  # only the very last byte differs
        else:
            upstream.short.add(digest)
        received = await raw_get(app, f"/v2/dist/team/app/blobs/{digest}")
        if received.status == 200:  # the body had begun: it is broken off short of its end
            assert received.error is not None and not received.complete
            assert len(received.body) < len(data) and data.startswith(received.body)
        else:  # it broke before the first piece went out: an error instead
            assert received.status in (400, 503) and received.error is None
        if pause_s:
            assert received.status == 200 and received.body, "pieces that arrive apart are sent as they arrive"

        assert not await visible(app, digest)
        assert not await blob_stored(app, digest)
        assert await stored_keys(app.state.registry.driver, "blobs/") == []
        assert not await app.state.registry.metadata.leases.held(f"blob:{digest}")
        again = await raw_get(app, f"/v2/dist/team/app/blobs/{digest}")
        assert not (again.status == 200 and again.complete)
        assert upstream.count("GET", f"/v2/team/app/blobs/{digest}") == 2, "asked again: it was not kept"

        upstream.wrong.clear()
        upstream.short.clear()
        r = await client.get(f"/v2/dist/team/app/blobs/{digest}")
        assert (r.status_code, r.content) == (200, data)
        assert await visible(app, digest) and await blob_stored(app, digest)


async def test_bad_bytes_fail_every_waiting_client_too(tmp_path) -> None:
    data = os.urandom(64 << 10)
    async with (
        FakeUpstream(piece_bytes=4 << 10, piece_pause_s=0.01) as upstream,
        cache_app(tmp_path, dist(upstream)) as (app, _),
    ):
        digest = upstream.add_blob("team/app", data)
        upstream.wrong[digest] = os.urandom(len(data))
        results = await asyncio.gather(*(raw_get(app, f"/v2/dist/team/app/blobs/{digest}") for _ in range(4)))
        assert not any(r.complete and r.body == upstream.wrong[digest] for r in results)
        assert all(r.status != 200 or not r.complete for r in results)
        assert not await visible(app, digest)
        assert await stored_keys(app.state.registry.driver, "blobs/") == []
