"""registry/events/records.py through the app: what each change sends, in Distribution's format, to a
real receiver."""

from __future__ import annotations

import asyncio
import re

import pytest

from registry.events.records import timestamp
from tests.support.app import running_app
from tests.support.backends import disk_and_sqlite
from tests.support.content import DOCKER_MANIFEST, OCI_MANIFEST, digest_of, make_image, push_blob, push_image
from tests.support.receiver import Receiver, hooked

pytestmark = pytest.mark.anyio

TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z")
BASE = "http://registry.test"


def test_timestamps_are_written_as_go_writes_them() -> None:
    from datetime import UTC, datetime

    assert timestamp(datetime(2026, 12, 1, 8, 30, 5, 120000, tzinfo=UTC)) == "2026-12-01T08:30:05.12Z"
    assert timestamp(datetime(2026, 12, 1, 8, 30, 5, tzinfo=UTC)) == "2026-12-01T08:30:05Z"


async def test_a_push_sends_its_blobs_then_its_manifest_with_tag_url_request_and_source(tmp_path) -> None:
    async with Receiver() as receiver, running_app(hooked(disk_and_sqlite(tmp_path), receiver)) as (_, client):
        image = make_image(DOCKER_MANIFEST)
        await push_image(client, "team/app", image, "1.0")
        config, layer, manifest = await receiver.wait_for(3)
    assert [e["action"] for e in (config, layer, manifest)] == ["push"] * 3
    assert manifest["target"] == {
        "mediaType": DOCKER_MANIFEST,
        "size": len(image.manifest),
        "digest": image.digest,
        "length": len(image.manifest),
        "repository": "team/app",
        "url": f"{BASE}/v2/team/app/manifests/{image.digest}",
        "tag": "1.0",
    }
    assert layer["target"] == {
        "mediaType": "application/octet-stream",
        "size": 64,
        "digest": digest_of(image.layers[0]),
        "length": 64,
        "repository": "team/app",
        "url": f"{BASE}/v2/team/app/blobs/{digest_of(image.layers[0])}",
    }
    assert set(manifest) == {"id", "timestamp", "action", "target", "request", "actor", "source"}
    assert TIMESTAMP.fullmatch(manifest["timestamp"])
    request = manifest["request"]
    assert request["method"] == "PUT" and request["host"] == "registry.test" and request["addr"] == "127.0.0.1"
    assert set(request) == {"id", "addr", "host", "method", "useragent"} and request["id"]
    assert manifest["actor"] == {}  # anonymous (auth mode none)
    assert set(manifest["source"]) == {"addr", "instanceID"}
    assert len({e["id"] for e in (config, layer, manifest)}) == 3
    assert receiver.headers[0]["Content-Type"] == "application/vnd.docker.distribution.events.v1+json"
    assert receiver.headers[0]["Authorization"] == "Bearer secret"


async def test_the_request_id_of_the_edge_is_the_events(tmp_path) -> None:
    async with Receiver() as receiver, running_app(hooked(disk_and_sqlite(tmp_path), receiver)) as (_, client):
        data = b"layer"
        r = await client.post(
            "/v2/team/app/blobs/uploads/",
            params={"digest": digest_of(data)},
            content=data,
            headers={"X-Request-Id": "req-42"},
        )
        assert r.status_code == 201
        (event,) = await receiver.wait_for(1)
    assert event["request"]["id"] == "req-42" and event["request"]["method"] == "POST"


async def test_chunked_uploads_mounts_and_deletes(tmp_path) -> None:
    async with Receiver() as receiver, running_app(hooked(disk_and_sqlite(tmp_path), receiver)) as (app, client):
        data = b"x" * 1000
        digest = digest_of(data)
        r = await client.post("/v2/team/app/blobs/uploads/")
        location = r.headers["Location"]
        await client.patch(location, content=data[:600], headers={"Content-Range": "0-599"})
        r = await client.put(location, params={"digest": digest}, content=data[600:])
        assert r.status_code == 201
        r = await client.post("/v2/team/other/blobs/uploads/", params={"mount": digest, "from": "team/app"})
        assert r.status_code == 201
        image = make_image(OCI_MANIFEST)
        await push_image(client, "team/app", image, "1")
        assert (await client.delete("/v2/team/app/manifests/1")).status_code == 202
        assert (await client.delete(f"/v2/team/app/manifests/{image.digest}")).status_code == 202
        assert (await client.delete(f"/v2/team/other/blobs/{digest}")).status_code == 202
        assert (await client.delete("/v2/team/app/manifests/1")).status_code == 404  # nothing deleted, no event
        await app.state.registry.delete_repository("team/app", None)  # no caller: no event
        events = await receiver.wait_for(8)
        await asyncio.sleep(0.3)
    push, mount = events[0], events[1]
    assert push["action"] == "push" and push["target"]["size"] == 1000 and push["request"]["method"] == "PUT"
    assert mount["action"] == "mount" and mount["target"]["fromRepository"] == "team/app"
    assert mount["target"]["repository"] == "team/other" and mount["target"]["url"].endswith(
        f"/team/other/blobs/{digest}"
    )
    tag_delete, manifest_delete, blob_delete = events[5:8]
    assert [e["action"] for e in events[2:5]] == ["push"] * 3
    assert [e["action"] for e in events[5:8]] == ["delete"] * 3
    assert tag_delete["target"] == {"repository": "team/app", "tag": "1"}
    assert manifest_delete["target"] == {"digest": image.digest, "repository": "team/app"}
    assert blob_delete["target"] == {"digest": digest, "repository": "team/other"}
    assert len(receiver.events) == 8


async def test_repository_deletes_from_the_ui_and_the_command_line(tmp_path) -> None:
    from registry.events.records import command_caller

    async with Receiver() as receiver, running_app(hooked(disk_and_sqlite(tmp_path), receiver)) as (app, client):
        await push_blob(client, "team/app", b"layer")
        await app.state.registry.delete_repository("team/app", command_caller("registry repo rm"))
        _, deleted = await receiver.wait_for(2)
    assert deleted["action"] == "delete" and deleted["target"] == {"repository": "team/app"}
    assert deleted["request"]["useragent"] == "registry repo rm"


async def test_pulls_are_reported_only_when_asked_for_and_heads_never(tmp_path) -> None:
    for pulls in (False, True):
        async with (
            Receiver() as receiver,
            running_app(hooked(disk_and_sqlite(tmp_path / str(pulls)), receiver, pulls=pulls)) as (_, client),
        ):
            image = make_image()
            await push_image(client, "team/app", image, "1")
            assert (await client.get("/v2/team/app/manifests/1")).status_code == 200
            assert (await client.head("/v2/team/app/manifests/1")).status_code == 200
            assert (await client.get(f"/v2/team/app/blobs/{digest_of(image.config)}")).status_code == 200
            await push_blob(client, "team/app", b"after")
            events = await receiver.wait_for(5 if pulls else 4)
        pulled = [e for e in events if e["action"] == "pull"]
        if not pulls:
            assert pulled == []
            continue
        manifest, blob = pulled
        assert manifest["target"]["tag"] == "1" and manifest["target"]["digest"] == image.digest
        assert manifest["request"]["method"] == "GET"
        assert (
            blob["target"]["digest"] == digest_of(image.config)
            and blob["target"]["mediaType"] == "application/octet-stream"
        )


async def test_in_read_only_mode_pulls_are_not_reported_nothing_is_written(tmp_path) -> None:
    receiver = Receiver()  # never up: what is written stays in the outbox
    settings = hooked(disk_and_sqlite(tmp_path), receiver, pulls=True)
    image = make_image()
    async with running_app(settings) as (_, client):
        await push_image(client, "team/app", image, "1")
    settings.maintenance.read_only = True
    async with running_app(settings) as (app, client):
        outbox = app.state.registry.metadata.events
        assert [s.pending for s in await outbox.status()] == [3]  # the push's config, layer and manifest
        assert (await client.get("/v2/team/app/manifests/1")).status_code == 200
        assert (await client.get(f"/v2/team/app/blobs/{digest_of(image.config)}")).status_code == 200
        assert [s.pending for s in await outbox.status()] == [3]


async def test_ignored_actions_and_media_types_never_enter_that_endpoints_queue(tmp_path) -> None:
    async with Receiver() as quiet, Receiver() as everything:
        settings = hooked(
            disk_and_sqlite(tmp_path), quiet, everything, actions=["delete"], media_types=["application/octet-stream"]
        )
        async with running_app(settings) as (app, client):
            image = make_image()
            await push_image(client, "team/app", image, "1")
            assert (await client.delete("/v2/team/app/manifests/1")).status_code == 202
            events = await everything.wait_for(4)
            (manifest,) = await quiet.wait_for(1)
            statuses = await app.state.registry.metadata.events.status()
    assert manifest["target"]["mediaType"] == OCI_MANIFEST
    assert [e["action"] for e in events] == ["push", "push", "push", "delete"]
    assert {s.name: s.delivered for s in statuses} == {"hook0": 1, "hook1": 4}


async def test_without_endpoints_nothing_is_written(tmp_path) -> None:
    async with running_app(disk_and_sqlite(tmp_path)) as (app, client):
        await push_image(client, "team/app", make_image(), "1")
        assert app.state.registry.events is None
        assert await app.state.registry.metadata.events.status() == []


async def test_a_refused_manifest_put_writes_no_event(tmp_path) -> None:
    receiver = Receiver()  # down: whatever is written stays in the outbox
    async with running_app(hooked(disk_and_sqlite(tmp_path), receiver)) as (app, client):
        image = make_image()
        r = await client.put(
            "/v2/team/app/manifests/1", content=image.manifest, headers={"Content-Type": image.media_type}
        )
        assert r.status_code == 400  # its blobs were never pushed
        await push_blob(client, "team/app", image.config)
        (status,) = await app.state.registry.metadata.events.status()
    assert status.pending == 1  # the blob's push only


async def test_the_actor_is_the_signed_in_user_of_the_api_and_of_the_web_ui(tmp_path) -> None:
    from tests.support.ui import csrf_of, sign_in
    from tests.support.users import basic, configure, htpasswd_bytes

    settings = configure(disk_and_sqlite(tmp_path), "htpasswd", htpasswd_bytes(tmp_path))
    async with Receiver() as receiver, running_app(hooked(settings, receiver)) as (_, client):
        image = make_image()
        client.headers.update(basic("alice", "alice-pw"))
        await push_image(client, "alice/app", image, "1")
        del client.headers["Authorization"]
        await sign_in(client, "root")  # an admin
        page = await client.get("/ui/delete/alice/app", params={"reference": "1"})
        r = await client.post("/ui/delete/alice/app", data={"reference": "1", "csrf": csrf_of(page.text)})
        assert r.status_code == 303
        events = await receiver.wait_for(4)
    assert [e["actor"] for e in events[:3]] == [{"name": "alice"}] * 3
    deleted = events[3]
    assert deleted["action"] == "delete" and deleted["target"] == {"repository": "alice/app", "tag": "1"}
    assert deleted["actor"] == {"name": "root"} and deleted["request"]["method"] == "POST"


async def test_behind_a_trusted_proxy_the_client_and_scheme_are_the_forwarded_ones(tmp_path) -> None:
    settings = disk_and_sqlite(tmp_path)
    settings.http.trusted_proxies = ["127.0.0.1/32"]  # the test client's address
    async with Receiver() as receiver, running_app(hooked(settings, receiver)) as (_, client):
        data = b"layer"
        headers = {"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https"}
        r = await client.post(
            "/v2/team/app/blobs/uploads/", params={"digest": digest_of(data)}, content=data, headers=headers
        )
        assert r.status_code == 201
        (event,) = await receiver.wait_for(1)
    assert event["request"]["addr"] == "203.0.113.9"
    assert event["target"]["url"] == f"https://registry.test/v2/team/app/blobs/{digest_of(data)}"
