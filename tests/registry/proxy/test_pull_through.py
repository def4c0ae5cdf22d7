"""The pull-through cache's rules through the whole app (registry/proxy/pull_through.py, the facade and the
handlers), against a real HTTP upstream: tag TTL and revalidation, stale serving, immutable digests, verified
manifests, indexes, blobs by GET, HEAD and Range, pushes refused, tag listings, and blobs stored here already."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import time

import anyio
import httpx
import pytest
from starlette.applications import Starlette

from tests.support.app import running_app, stored_keys
from tests.support.content import (
    DOCKER_LIST,
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
    digest_of,
    error_codes,
    index_of,
    make_image,
    push_blob,
    push_image,
)
from tests.support.fake_upstream import FakeUpstream, blob_stored, cache_app, cache_settings

pytestmark = pytest.mark.anyio

ACCEPT = {"Accept": ", ".join([OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST])}
TTL_S = 0.5
PASSWORD = "cache-Upstream-pa55word"


def dist(upstream: FakeUpstream, **more: object) -> dict[str, object]:
    """The settings of upstream `upstream` cached under the prefix `dist`, with a short tag TTL."""
    return {"prefix": "dist", "url": upstream.url, "tag_ttl": f"{TTL_S}s", **more}


async def blob_linked(app: Starlette, repository: str, digest: str) -> bool:
    return await app.state.registry.metadata.blob_size(repository, digest) is not None


# -- manifests by tag ----------------------------------------------------------------------------------------


async def test_a_tag_is_fetched_then_served_then_revalidated_by_one_head(tmp_path) -> None:
    image = make_image()
    async with FakeUpstream() as upstream, cache_app(tmp_path, dist(upstream)) as (_, client):
        digest = upstream.add_image("team/app", image, tag="1")
        path = "/v2/dist/team/app/manifests/1"

        r = await client.get(path, headers=ACCEPT)
        assert r.status_code == 200 and r.content == image.manifest
        assert (r.headers["X-Registry-Cache"], r.headers["Docker-Content-Digest"]) == ("miss", digest)
        assert r.headers["Content-Type"] == OCI_MANIFEST
        assert [(s.method, s.path) for s in upstream.requests] == [("GET", "/v2/team/app/manifests/1")]

        r = await client.get(path, headers=ACCEPT)
        assert (r.status_code, r.content, r.headers["X-Registry-Cache"]) == (200, image.manifest, "hit")
        r = await client.head(path, headers=ACCEPT)
        assert (r.status_code, r.headers["X-Registry-Cache"]) == (200, "hit")
        assert len(upstream.requests) == 1, "within the TTL the upstream is not asked"

        await anyio.sleep(TTL_S + 0.05)
        r = await client.get(path, headers=ACCEPT)
        assert (r.status_code, r.content, r.headers["X-Registry-Cache"]) == (200, image.manifest, "revalidated")
        assert [(s.method, s.path) for s in upstream.requests[1:]] == [("HEAD", "/v2/team/app/manifests/1")]

        r = await client.get(path, headers=ACCEPT)
        assert r.headers["X-Registry-Cache"] == "hit", "a revalidated tag starts a new TTL"
        assert len(upstream.requests) == 2


async def test_a_tag_moved_upstream_serves_the_new_manifest_after_the_ttl(tmp_path) -> None:
    old, new = make_image(), make_image()
    async with FakeUpstream() as upstream, cache_app(tmp_path, dist(upstream)) as (_, client):
        upstream.add_image("team/app", old, tag="1")
        path = "/v2/dist/team/app/manifests/1"
        assert (await client.get(path, headers=ACCEPT)).content == old.manifest
        new_digest = upstream.add_image("team/app", new, tag="1")
        r = await client.get(path, headers=ACCEPT)
        assert (r.content, r.headers["X-Registry-Cache"]) == (old.manifest, "hit")

        await anyio.sleep(TTL_S + 0.05)
        r = await client.get(path, headers=ACCEPT)
        assert r.status_code == 200 and r.content == new.manifest
        assert r.headers["Docker-Content-Digest"] == new_digest
        assert [s.method for s in upstream.requests] == ["GET", "HEAD", "GET"]
        r = await client.get(path, headers=ACCEPT)
        assert (r.content, r.headers["X-Registry-Cache"]) == (new.manifest, "hit")
        r = await client.get(f"/v2/dist/team/app/manifests/{old.digest}", headers=ACCEPT)
        assert r.status_code == 200 and r.content == old.manifest, "the old manifest stays cached by digest"


async def test_a_stale_tag_is_served_marked_while_the_upstream_is_down(tmp_path, caplog) -> None:
    caplog.set_level(logging.INFO)
    image = make_image()
    async with FakeUpstream() as upstream, cache_app(tmp_path, dist(upstream)) as (_, client):
        upstream.add_image("team/app", image, tag="1")
        layer = digest_of(image.layers[0])
        assert (await client.get("/v2/dist/team/app/manifests/1", headers=ACCEPT)).status_code == 200
        assert (await client.get(f"/v2/dist/team/app/blobs/{layer}")).status_code == 200
        await upstream.stop()
        await anyio.sleep(TTL_S + 0.05)

        started = time.monotonic()
        r = await client.get("/v2/dist/team/app/manifests/1", headers=ACCEPT)
        assert time.monotonic() - started < 2.0
        assert r.status_code == 200 and r.content == image.manifest
        assert r.headers["X-Registry-Cache"] == "stale"
        assert r.headers["Warning"] == '110 - "Response is Stale"'
        stale_lines = [m for m in caplog.messages if "stale" in m and "dist/team/app:1" in m]
        assert stale_lines and upstream.url in stale_lines[0]

        r = await client.get(f"/v2/dist/team/app/blobs/{layer}")
        assert (r.status_code, r.content, r.headers["X-Registry-Cache"]) == (200, image.layers[0], "hit")


async def test_a_stale_tag_is_served_when_the_upstream_refuses_our_credentials_and_logs_no_password(
    tmp_path, caplog
) -> None:
    caplog.set_level(logging.DEBUG)
    image = make_image()
    async with (
        FakeUpstream(auth="token", username="puller", password=PASSWORD, token_expires_in=1) as upstream,
        cache_app(tmp_path, dist(upstream, username="puller", password=PASSWORD)) as (_, client),
    ):
        upstream.add_image("team/app", image, tag="1")
        assert (await client.get("/v2/dist/team/app/manifests/1", headers=ACCEPT)).status_code == 200
        upstream.password = "rotated"
        await anyio.sleep(1.0)  # the token expired too
        r = await client.get("/v2/dist/team/app/manifests/1", headers=ACCEPT)
        assert (r.status_code, r.content, r.headers["X-Registry-Cache"]) == (200, image.manifest, "stale")
        r = await client.get("/v2/dist/team/app/manifests/2", headers=ACCEPT)
        assert r.status_code == 403 and error_codes(r) == ["DENIED"]
        assert upstream.url in r.json()["errors"][0]["message"]
        assert any("stale" in m for m in caplog.messages)
        assert PASSWORD not in caplog.text and PASSWORD not in r.text


async def test_an_uncached_image_while_the_upstream_is_down_is_unavailable_at_once(tmp_path) -> None:
    image = make_image()
    async with FakeUpstream() as upstream, cache_app(tmp_path, dist(upstream)) as (_, client):
        upstream.add_image("team/app", image, tag="1")
        await upstream.stop()
        started = time.monotonic()
        for path in [
            "/v2/dist/team/app/manifests/1",
            f"/v2/dist/team/app/manifests/{image.digest}",
            f"/v2/dist/team/app/blobs/{digest_of(image.config)}",
        ]:
            r = await client.get(path, headers=ACCEPT)
            assert r.status_code == 503 and error_codes(r) == ["UNAVAILABLE"], path
            assert upstream.url in r.json()["errors"][0]["message"]
        r = await client.head(f"/v2/dist/team/app/blobs/{digest_of(image.config)}")
        assert r.status_code == 503
        assert time.monotonic() - started < 3.0


async def test_an_upstream_that_stalls_is_unavailable_after_the_read_timeout(tmp_path) -> None:
    async with (
        FakeUpstream(stall_s=10) as upstream,
        cache_app(tmp_path, dist(upstream), read_timeout_s=0.3) as (_, client),
    ):
        upstream.add_image("team/app", make_image(), tag="1")
        started = time.monotonic()
        r = await client.get("/v2/dist/team/app/manifests/1", headers=ACCEPT)
        assert r.status_code == 503 and error_codes(r) == ["UNAVAILABLE"]
        assert time.monotonic() - started < 2.0


async def test_what_the_upstream_does_not_have_is_unknown_naming_the_upstream(tmp_path) -> None:
    async with FakeUpstream() as upstream, cache_app(tmp_path, dist(upstream)) as (_, client):
        upstream.add_image("team/app", make_image(), tag="1")
        r = await client.get("/v2/dist/team/app/manifests/2", headers=ACCEPT)
        assert r.status_code == 404 and error_codes(r) == ["MANIFEST_UNKNOWN"]
        assert upstream.url in r.json()["errors"][0]["message"]
        r = await client.get(f"/v2/dist/team/app/manifests/sha256:{'1' * 64}", headers=ACCEPT)
        assert r.status_code == 404 and error_codes(r) == ["MANIFEST_UNKNOWN"]
        r = await client.get(f"/v2/dist/team/app/blobs/sha256:{'1' * 64}")
        assert r.status_code == 404 and error_codes(r) == ["BLOB_UNKNOWN"]
        assert upstream.url in r.json()["errors"][0]["message"]


# -- manifests by digest, verified ---------------------------------------------------------------------------


async def test_a_manifest_by_digest_is_fetched_once_and_never_again(tmp_path) -> None:
    image = make_image()
    async with FakeUpstream() as upstream, cache_app(tmp_path, dist(upstream)) as (app, client):
        digest = upstream.add_image("team/app", image)
        path = f"/v2/dist/team/app/manifests/{digest}"
        r = await client.get(path, headers=ACCEPT)
        assert (r.status_code, r.content, r.headers["X-Registry-Cache"]) == (200, image.manifest, "miss")
        await anyio.sleep(TTL_S + 0.05)
        for _ in range(2):
            r = await client.get(path, headers=ACCEPT)
            assert (r.status_code, r.content, r.headers["X-Registry-Cache"]) == (200, image.manifest, "hit")
        assert len(upstream.requests) == 1
        await upstream.stop()
        r = await client.get(path, headers=ACCEPT)
        assert (r.status_code, r.headers["X-Registry-Cache"]) == (200, "hit"), "no upstream needed"
        assert await blob_stored(app, digest)


async def test_a_manifest_whose_bytes_do_not_match_its_digest_is_refused_and_not_stored(tmp_path) -> None:
    image, other = make_image(), make_image()
    async with FakeUpstream() as upstream, cache_app(tmp_path, dist(upstream)) as (app, client):
        digest = upstream.add_image("team/app", image, tag="1")
        upstream.wrong[digest] = other.manifest
        for path in [f"/v2/dist/team/app/manifests/{digest}", "/v2/dist/team/app/manifests/1"]:
            r = await client.get(path, headers=ACCEPT)
            assert r.status_code == 400 and error_codes(r) == ["DIGEST_INVALID"], path
            assert upstream.url in r.json()["errors"][0]["message"]
        metadata = app.state.registry.metadata
        assert await metadata.get_manifest("dist/team/app", digest) is None
        assert await metadata.get_manifest("dist/team/app", other.digest) is None
        assert await metadata.cache.tagged("dist/team/app", "1") is None
        assert not await blob_stored(app, digest) and not await blob_stored(app, other.digest)
        assert await stored_keys(app.state.registry.driver, "blobs/") == []


async def test_an_index_is_cached_and_its_children_fetched_when_asked_for(tmp_path) -> None:
    amd, arm = make_image(), make_image(DOCKER_MANIFEST)
    index = index_of(amd, arm)
    async with FakeUpstream() as upstream, cache_app(tmp_path, dist(upstream)) as (app, client):
        upstream.add_image("team/app", amd)
        upstream.add_image("team/app", arm)
        index_digest = upstream.add_manifest("team/app", index, OCI_INDEX, tag="multi")

        r = await client.get("/v2/dist/team/app/manifests/multi", headers=ACCEPT)
        assert r.status_code == 200 and r.content == index
        assert r.headers["Content-Type"] == OCI_INDEX and r.headers["Docker-Content-Digest"] == index_digest
        assert upstream.count_kind("GET", "manifests") == 1, "children are not fetched before they are asked for"
        assert await app.state.registry.metadata.get_manifest("dist/team/app", arm.digest) is None

        r = await client.get(f"/v2/dist/team/app/manifests/{arm.digest}", headers=ACCEPT)
        assert r.status_code == 200 and r.content == arm.manifest and r.headers["Content-Type"] == DOCKER_MANIFEST
        assert r.headers["X-Registry-Cache"] == "miss"
        r = await client.get(f"/v2/dist/team/app/blobs/{digest_of(arm.layers[0])}")
        assert r.status_code == 200 and r.content == arm.layers[0]
        assert upstream.count_kind("GET", "manifests") == 2 and upstream.count_kind("GET", "blobs") == 1
        r = await client.get(f"/v2/dist/team/app/manifests/{arm.digest}", headers=ACCEPT)
        assert r.headers["X-Registry-Cache"] == "hit"
        assert upstream.count("GET", f"/v2/team/app/manifests/{amd.digest}") == 0


# -- blobs ---------------------------------------------------------------------------------------------------


async def test_a_blob_miss_streams_the_bytes_then_it_is_a_hit(tmp_path) -> None:
    data = os.urandom(300_000)
    async with FakeUpstream(piece_bytes=16 << 10) as upstream, cache_app(tmp_path, dist(upstream)) as (app, client):
        digest = upstream.add_blob("team/app", data)
        path = f"/v2/dist/team/app/blobs/{digest}"
        r = await client.get(path)
        assert r.status_code == 200 and r.content == data
        assert (r.headers["X-Registry-Cache"], r.headers["Docker-Content-Digest"]) == ("miss", digest)
        assert r.headers["Content-Length"] == str(len(data))
        r = await client.get(path)
        assert (r.status_code, r.content, r.headers["X-Registry-Cache"]) == (200, data, "hit")
        r = await client.head(path)
        assert (r.status_code, r.headers["Content-Length"], r.headers["X-Registry-Cache"]) == (
            200,
            str(len(data)),
            "hit",
        )
        assert [(s.method, s.path) for s in upstream.requests] == [("GET", f"/v2/team/app/blobs/{digest}")]
        assert await blob_stored(app, digest)
        assert await blob_linked(app, "dist/team/app", digest)


async def test_head_of_an_uncached_blob_asks_the_upstream_for_its_size_only(tmp_path) -> None:
    data = os.urandom(5000)
    async with FakeUpstream() as upstream, cache_app(tmp_path, dist(upstream)) as (app, client):
        digest = upstream.add_blob("team/app", data)
        r = await client.head(f"/v2/dist/team/app/blobs/{digest}")
        assert r.status_code == 200 and r.headers["Content-Length"] == str(len(data))
        assert (r.headers["Docker-Content-Digest"], r.headers["X-Registry-Cache"]) == (digest, "miss")
        assert [(s.method, s.path) for s in upstream.requests] == [("HEAD", f"/v2/team/app/blobs/{digest}")]
        assert not await blob_stored(app, digest) and not await blob_linked(app, "dist/team/app", digest)


async def test_a_range_of_an_uncached_blob_is_served_once_it_is_stored(tmp_path) -> None:
    data = os.urandom(100_000)
    async with FakeUpstream(piece_bytes=8192) as upstream, cache_app(tmp_path, dist(upstream)) as (app, client):
        digest = upstream.add_blob("team/app", data)
        path = f"/v2/dist/team/app/blobs/{digest}"
        r = await client.get(path, headers={"Range": "bytes=1000-1999"})
        assert r.status_code == 206 and r.content == data[1000:2000]
        assert r.headers["Content-Range"] == f"bytes 1000-1999/{len(data)}"
        assert upstream.count("GET", f"/v2/team/app/blobs/{digest}") == 1
        r = await client.get(path, headers={"Range": "bytes=-10"})
        assert (r.status_code, r.content, r.headers["X-Registry-Cache"]) == (206, data[-10:], "hit")
        assert upstream.count("GET", f"/v2/team/app/blobs/{digest}") == 1
        assert await blob_stored(app, digest)


async def test_a_blob_stored_here_is_linked_into_a_cache_once_the_upstream_confirms_it(tmp_path) -> None:
    data = os.urandom(4000)
    async with FakeUpstream() as upstream, cache_app(tmp_path, dist(upstream)) as (app, client):
        digest = await push_blob(client, "team/local", data)
        upstream.add_blob("team/app", data)
        r = await client.get(f"/v2/dist/team/app/blobs/{digest}")
        assert (r.status_code, r.content) == (200, data)
        assert [(s.method, s.path) for s in upstream.requests] == [("HEAD", f"/v2/team/app/blobs/{digest}")]
        assert await blob_linked(app, "dist/team/app", digest)
        r = await client.get(f"/v2/dist/team/app/blobs/{digest}")
        assert (r.status_code, r.headers["X-Registry-Cache"]) == (200, "hit")
        assert len(upstream.requests) == 1


def lenient(app: Starlette) -> httpx.AsyncClient:
    """A client of `app` (its lifespan running already) that gets a 500 where the app raised."""
    transport = httpx.ASGITransport(app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://registry.test")


@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize(
    ("upstream_state", "status", "code"), [("lacks it", 404, "BLOB_UNKNOWN"), ("down", 503, "UNAVAILABLE")]
)
async def test_a_blob_stored_here_that_the_upstream_does_not_confirm_is_not_served_from_the_cache(
    tmp_path, method: str, upstream_state: str, status: int, code: str
) -> None:
    data = os.urandom(4000)
    async with FakeUpstream() as upstream, cache_app(tmp_path, dist(upstream)) as (app, client):
        digest = await push_blob(client, "team/local", data)
        upstream.add_blob("team/app", b"something else")
        if upstream_state == "down":
            await upstream.stop()
        async with lenient(app) as lenient_client:
            r = await lenient_client.request(method, f"/v2/dist/team/app/blobs/{digest}")
        assert not await blob_linked(app, "dist/team/app", digest), "never linked without the upstream's word"
        assert r.status_code == status
        if method == "GET":
            assert error_codes(r) == [code] and upstream.url in r.json()["errors"][0]["message"]


async def test_a_blob_stored_here_is_not_linked_into_a_cache_whose_upstream_lacks_it(tmp_path) -> None:
    data = os.urandom(4000)
    async with FakeUpstream() as upstream, cache_app(tmp_path, dist(upstream)) as (app, client):
        digest = await push_blob(client, "team/local", data)
        upstream.add_blob("team/app", b"something else")
        async with lenient(app) as lenient_client:
            r = await lenient_client.get(f"/v2/dist/team/app/blobs/{digest}")
        assert r.status_code != 200 and r.content != data
        assert upstream.count("HEAD", f"/v2/team/app/blobs/{digest}") == 1
        assert upstream.count("GET", f"/v2/team/app/blobs/{digest}") == 0
        assert not await blob_linked(app, "dist/team/app", digest)
        r = await client.get(f"/v2/team/local/blobs/{digest}")
        assert (r.status_code, r.content) == (200, data), "the local blob is untouched"


# -- pushes, listings ----------------------------------------------------------------------------------------


async def test_pushes_into_a_cache_are_denied_and_local_pushes_beside_it_work(tmp_path) -> None:
    image = make_image()
    async with FakeUpstream() as upstream, cache_app(tmp_path, dist(upstream, aliases=["cncf"])) as (app, client):
        layer = digest_of(image.layers[0])
        await push_image(client, "team/app", image, "1")
        for name in ["dist/team/app", "cncf/team/app"]:
            attempts = [
                await client.post(f"/v2/{name}/blobs/uploads/"),
                await client.post(f"/v2/{name}/blobs/uploads/", params={"digest": layer}, content=image.layers[0]),
                await client.post(f"/v2/{name}/blobs/uploads/", params={"mount": layer, "from": "team/app"}),
                await client.post(f"/v2/{name}/blobs/uploads/", params={"mount": layer}),
                await client.put(
                    f"/v2/{name}/manifests/1", content=image.manifest, headers={"Content-Type": OCI_MANIFEST}
                ),
                await client.put(
                    f"/v2/{name}/manifests/{image.digest}",
                    content=image.manifest,
                    headers={"Content-Type": OCI_MANIFEST},
                ),
            ]
            for r in attempts:
                assert r.status_code == 403 and error_codes(r) == ["DENIED"], (r.request.method, r.request.url)
                message = r.json()["errors"][0]["message"]
                assert "cache" in message and upstream.url in message
        assert upstream.requests == []
        assert await app.state.registry.metadata.list_repositories("", None) == ["team/app"]
        await push_image(client, "team/other", make_image(), "1")
        r = await client.get("/v2/team/app/manifests/1", headers=ACCEPT)
        assert r.status_code == 200 and "X-Registry-Cache" not in r.headers


async def test_the_tags_of_a_cache_are_those_it_holds(tmp_path) -> None:
    async with FakeUpstream() as upstream, cache_app(tmp_path, dist(upstream, hosts=["dist.example"])) as (_, client):
        for tag in ["1", "2", "3"]:
            upstream.add_image("team/app", make_image(), tag=tag)
        r = await client.get("/v2/dist/team/app/tags/list")
        assert r.status_code == 404 and error_codes(r) == ["NAME_UNKNOWN"]
        for tag in ["2", "1"]:
            assert (await client.get(f"/v2/dist/team/app/manifests/{tag}", headers=ACCEPT)).status_code == 200
        r = await client.get("/v2/dist/team/app/tags/list")
        assert r.status_code == 200 and r.json() == {"name": "dist/team/app", "tags": ["1", "2"]}
        r = await client.get("/v2/team/app/tags/list", params={"ns": "dist.example"})
        assert r.status_code == 200 and r.json()["tags"] == ["1", "2"]
        assert upstream.count_kind("GET", "manifests") == 2, "listing asks the upstream nothing"


async def test_pulls_are_recorded_at_the_flush(tmp_path) -> None:
    image = make_image()
    async with FakeUpstream() as upstream, cache_app(tmp_path, dist(upstream)) as (app, client):
        upstream.add_image("team/app", image, tag="1")
        assert (await client.get("/v2/dist/team/app/manifests/1", headers=ACCEPT)).status_code == 200
        assert (await client.get("/v2/dist/team/app/manifests/1", headers=ACCEPT)).status_code == 200
        db = app.state.registry.metadata.db

        async def pulled_at() -> float | None:
            row = await db.read(
                lambda c: c.execute(
                    "SELECT pulled_at FROM manifests WHERE repository = ? AND digest = ?",
                    ("dist/team/app", image.digest),
                ).fetchone()
            )
            return row[0]

        assert await pulled_at() is None
        before = time.time()
        await app.state.registry.pull_through.pulls.flush()
        at = await pulled_at()
        assert at is not None and before - 5 < at <= time.time()


async def test_a_cached_manifest_is_refused_to_a_client_whose_accept_header_excludes_it(tmp_path) -> None:
    image = make_image()
    async with FakeUpstream() as upstream, cache_app(tmp_path, dist(upstream)) as (_, client):
        upstream.add_image("team/app", image, tag="1")
        r = await client.get("/v2/dist/team/app/manifests/1", headers={"Accept": DOCKER_MANIFEST})
        assert r.status_code == 404 and error_codes(r) == ["MANIFEST_UNKNOWN"]
        r = await client.get("/v2/dist/team/app/manifests/1", headers=ACCEPT)
        assert r.status_code == 200 and json.loads(r.content)["mediaType"] == OCI_MANIFEST


async def test_an_upload_begun_before_its_repository_became_a_cache_cannot_finish_into_it(tmp_path) -> None:
    data = os.urandom(1000)
    async with FakeUpstream() as upstream:
        async with cache_app(tmp_path, dist(upstream, hosts=["other"]) | {"prefix": "mirror"}) as (_, client):
            r = await client.post("/v2/dist/team/app/blobs/uploads/")
            assert r.status_code == 202
            location = r.headers["Location"]
        async with cache_app(tmp_path, dist(upstream)) as (app, client):
            r = await client.patch(location, content=data)
            assert r.status_code == 403 and error_codes(r) == ["DENIED"]
            r = await client.put(location, params={"digest": digest_of(data)})
            assert r.status_code == 403 and error_codes(r) == ["DENIED"]
            assert not await blob_linked(app, "dist/team/app", digest_of(data))


# -- read-only mode ----------------------------------------------------------------------------------------


def index_dump(directory) -> list[str]:
    """Every row of the SQLite index under `directory` (pull times, cached tags' checks and leases included)."""
    with contextlib.closing(sqlite3.connect(directory / "data" / "index.db")) as db:
        return list(db.iterdump())


def stored_files(directory) -> list[str]:
    """Every file under the storage root of the registry in `directory`."""
    root = directory / "data" / "storage"
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, files in os.walk(root) for f in files)


async def test_read_only_a_cache_serves_what_it_holds_fetches_nothing_and_records_nothing(tmp_path) -> None:
    held, other = make_image(), make_image()
    async with FakeUpstream() as upstream:
        upstream.add_image("team/app", held, tag="1")
        upstream.add_image("team/app", other, tag="2")
        async with cache_app(tmp_path, dist(upstream)) as (_, client):
            assert (await client.get("/v2/dist/team/app/manifests/1", headers=ACCEPT)).status_code == 200
            assert (await client.get(f"/v2/dist/team/app/blobs/{digest_of(held.layers[0])}")).status_code == 200
        settings = cache_settings(tmp_path, dist(upstream))
        settings.maintenance.read_only = True
        before_rows, before_files = index_dump(tmp_path), stored_files(tmp_path)
        asked = len(upstream.requests)
        await anyio.sleep(TTL_S + 0.05)  # the tag is past its TTL: a writable cache would revalidate it
        async with running_app(settings) as (app, client):
            r = await client.get("/v2/dist/team/app/manifests/1", headers=ACCEPT)
            assert (r.status_code, r.content, r.headers["X-Registry-Cache"]) == (200, held.manifest, "stale")
            r = await client.get(f"/v2/dist/team/app/manifests/{held.digest}", headers=ACCEPT)
            assert (r.status_code, r.headers["X-Registry-Cache"]) == (200, "hit")
            r = await client.get(f"/v2/dist/team/app/blobs/{digest_of(held.layers[0])}")
            assert r.status_code == 200 and r.content == held.layers[0]
            for path, code in (
                ("/v2/dist/team/app/manifests/2", "MANIFEST_UNKNOWN"),
                (f"/v2/dist/team/app/manifests/{other.digest}", "MANIFEST_UNKNOWN"),
                (f"/v2/dist/team/app/blobs/{digest_of(other.layers[0])}", "BLOB_UNKNOWN"),
                (f"/v2/dist/team/app/blobs/{digest_of(held.config)}", "BLOB_UNKNOWN"),  # never pulled
            ):
                r = await client.get(path, headers=ACCEPT)
                assert r.status_code == 404 and error_codes(r) == [code], path
                assert "read-only" in r.json()["errors"][0]["message"]
            await app.state.registry.pull_through.pulls.flush()
        assert len(upstream.requests) == asked, "the upstream was asked nothing"
    assert index_dump(tmp_path) == before_rows, "no pull time, tag check, link or lease was written"
    assert stored_files(tmp_path) == before_files
