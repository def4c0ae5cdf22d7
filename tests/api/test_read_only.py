"""Read-only mode (`maintenance.read_only`): every write through the API and the web UI answers 405
UNSUPPORTED saying the registry is read-only, every read keeps working, and nothing stored changes."""

from __future__ import annotations

import contextlib
import dataclasses
import sqlite3
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from registry.config import Settings
from tests.support.app import running_app
from tests.support.content import OCI_MANIFEST, digest_of, error_codes, make_image, push_image, push_referrer
from tests.support.ui import csrf_of
from tests.support.users import basic, bearer, configure, htpasswd_bytes

pytestmark = pytest.mark.anyio

UPLOAD_BYTES = b"half an upload"
NEW_BLOB = b"a blob nobody pushed before"


@dataclasses.dataclass
class Seeded:
    """What a writable registry stored before it was turned read-only."""

    image_digest: str
    layer: str
    upload_path: str
    referrer: str


async def seed(client: httpx.AsyncClient) -> Seeded:
    image = make_image()
    await push_image(client, "team/app", image, "1")
    await push_image(client, "team/app", image, "2")
    referrer = await push_referrer(client, "team/app", image.manifest, "application/vnd.example.sbom")
    started = await client.post("/v2/team/app/blobs/uploads/")
    location = started.headers["location"]
    patched = await client.patch(location, content=UPLOAD_BYTES)
    assert patched.status_code == 202, patched.text
    return Seeded(image.digest, digest_of(image.layers[0]), location, referrer)


def index_rows(settings: Settings) -> list[str]:
    """Every row of a SQLite index (empty on PostgreSQL, where the API's view below has to do)."""
    if not settings.index_url.startswith("sqlite:///"):
        return []
    with contextlib.closing(sqlite3.connect(settings.index_url.removeprefix("sqlite:///"))) as db:
        return list(db.iterdump())


async def snapshot(app: Starlette, client: httpx.AsyncClient, seeded: Seeded) -> dict[str, Any]:
    """What is stored, as the driver and the API see it: every key with its size, the catalog, tags,
    manifests, blobs, referrers and the open upload's size; and on SQLite every row of the index."""
    driver = app.state.registry.driver
    keys = sorted([(entry.key, entry.size) async for entry in driver.list("")])
    catalog = (await client.get("/v2/_catalog")).json()
    tags = {name: (await client.get(f"/v2/{name}/tags/list")).json() for name in catalog["repositories"]}
    manifests = {
        reference: (await client.get(f"/v2/team/app/manifests/{reference}")).status_code
        for reference in ("1", "2", seeded.image_digest, seeded.referrer)
    }
    blob = await client.head(f"/v2/team/app/blobs/{seeded.layer}")
    upload = await client.get(seeded.upload_path)
    referrers = (await client.get(f"/v2/team/app/referrers/{seeded.image_digest}")).json()
    return {
        "rows": index_rows(app.state.settings),
        "keys": keys,
        "catalog": catalog,
        "tags": tags,
        "manifests": manifests,
        "blob": blob.status_code,
        "upload": (upload.status_code, upload.headers.get("range")),
        "referrers": referrers,
    }


@pytest.fixture
async def read_only(settings: Settings) -> AsyncIterator[tuple[Starlette, httpx.AsyncClient, Seeded]]:
    """A registry seeded while writable (an image under tags 1 and 2, a referrer, an open upload), then
    served read-only over the same storage."""
    async with running_app(settings) as (_, writable):
        seeded = await seed(writable)
    settings.maintenance.read_only = True
    async with running_app(settings) as (app, client):
        yield app, client, seeded


def assert_read_only_refusal(response: httpx.Response) -> None:
    assert response.status_code == 405, (response.request.method, response.request.url, response.text)
    assert error_codes(response) == ["UNSUPPORTED"]
    assert "read-only" in response.json()["errors"][0]["message"]


def writes(seeded: Seeded) -> list[tuple[str, str, dict[str, Any]]]:
    """Every write route of the API, as (method, path, request arguments)."""
    image = make_image()
    upload = seeded.upload_path
    new_digest = digest_of(NEW_BLOB)
    manifest = {"content": image.manifest, "headers": {"Content-Type": OCI_MANIFEST}}
    return [
        ("POST", "/v2/team/app/blobs/uploads/", {}),
        ("POST", "/v2/team/new/blobs/uploads/", {}),
        ("POST", "/v2/team/app/blobs/uploads/", {"params": {"digest": new_digest}, "content": NEW_BLOB}),
        ("POST", "/v2/team/other/blobs/uploads/", {"params": {"mount": seeded.layer, "from": "team/app"}}),
        ("POST", "/v2/team/other/blobs/uploads/", {"params": {"mount": seeded.layer}}),
        ("PATCH", upload, {"content": b"more"}),
        ("PATCH", upload, {"content": b"more", "headers": {"Content-Range": f"{len(UPLOAD_BYTES)}-17"}}),
        ("PUT", upload, {"params": {"digest": digest_of(UPLOAD_BYTES)}}),
        ("PUT", upload, {"params": {"digest": digest_of(UPLOAD_BYTES + b"!")}, "content": b"!"}),
        ("DELETE", upload, {}),
        ("PUT", "/v2/team/app/manifests/3", manifest),
        ("PUT", "/v2/team/app/manifests/1", manifest),
        ("PUT", f"/v2/team/app/manifests/{image.digest}", manifest),
        ("DELETE", "/v2/team/app/manifests/1", {}),
        ("DELETE", f"/v2/team/app/manifests/{seeded.image_digest}", {}),
        ("DELETE", f"/v2/team/app/manifests/{seeded.referrer}", {}),
        ("DELETE", f"/v2/team/app/blobs/{seeded.layer}", {}),
    ]


async def test_every_write_answers_405_and_nothing_stored_changes(read_only) -> None:
    app, client, seeded = read_only
    before = await snapshot(app, client, seeded)
    for method, path, arguments in writes(seeded):
        assert_read_only_refusal(await client.request(method, path, **arguments))
    assert await snapshot(app, client, seeded) == before


async def test_pulls_and_every_read_keep_working(read_only) -> None:
    _, client, seeded = read_only
    assert (await client.get("/v2/")).status_code == 200
    for reference in ("1", seeded.image_digest):
        got = await client.get(f"/v2/team/app/manifests/{reference}")
        assert got.status_code == 200 and got.headers["docker-content-digest"] == seeded.image_digest
        assert (await client.head(f"/v2/team/app/manifests/{reference}")).status_code == 200
    blob = await client.get(f"/v2/team/app/blobs/{seeded.layer}")
    assert blob.status_code == 200 and digest_of(blob.content) == seeded.layer
    ranged = await client.get(f"/v2/team/app/blobs/{seeded.layer}", headers={"Range": "bytes=0-9"})
    assert ranged.status_code == 206 and len(ranged.content) == 10
    assert (await client.get("/v2/team/app/tags/list")).json() == {"name": "team/app", "tags": ["1", "2"]}
    assert (await client.get("/v2/_catalog")).json() == {"repositories": ["team/app"]}
    referrers = (await client.get(f"/v2/team/app/referrers/{seeded.image_digest}")).json()
    assert [m["digest"] for m in referrers["manifests"]] == [seeded.referrer]
    assert (await client.get(seeded.upload_path)).status_code == 204, "an upload's status is a read"
    found = (await client.get("/v1/search", params={"q": "team"})).json()
    assert [r["name"] for r in found["results"]] == ["team/app"]
    for page in ("/ui/", "/ui/repositories/team/app", f"/ui/repositories/team/app/manifests/{seeded.image_digest}"):
        assert (await client.get(page)).status_code == 200, page
    assert (await client.get("/healthz")).status_code == 200


async def test_the_web_ui_offers_no_delete_and_refuses_one(read_only) -> None:
    app, client, seeded = read_only
    before = await snapshot(app, client, seeded)
    page = await client.get("/ui/repositories/team/app")
    assert page.status_code == 200 and "Delete tag" not in page.text
    confirm = await client.get("/ui/delete/team/app", params={"reference": "1"})
    assert confirm.status_code == 405 and "read-only" in confirm.text
    for reference in ("1", seeded.image_digest):
        deleted = await client.post("/ui/delete/team/app", data={"reference": reference, "csrf": csrf_of(page.text)})
        assert deleted.status_code == 405 and "read-only" in deleted.text
    assert await snapshot(app, client, seeded) == before


async def test_the_read_only_flag_wins_over_deletes_being_disabled(settings: Settings) -> None:
    settings.maintenance.read_only, settings.storage.delete_enabled = True, False
    async with running_app(settings) as (_, client):
        assert_read_only_refusal(await client.delete(f"/v2/team/app/manifests/{digest_of(b'x')}"))


async def test_with_token_auth_tokens_are_issued_and_writes_still_answer_405(
    settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> None:
    settings.maintenance.read_only = True
    configure(settings, "token", htpasswd_bytes(tmp_path_factory.mktemp("users")))
    async with running_app(settings) as (_, client):
        scope = "repository:alice/app:pull,push"
        r = await client.get(
            "/auth/token", params={"service": "registry", "scope": scope}, headers=basic("alice", "alice-pw")
        )
        assert r.status_code == 200, r.text
        token = r.json()["token"]
        assert (await client.get("/v2/", headers=bearer(token))).status_code == 200
        assert_read_only_refusal(await client.post("/v2/alice/app/blobs/uploads/", headers=bearer(token)))
        form = {"grant_type": "password", "username": "alice", "password": "alice-pw", "service": "registry"}
        assert (await client.post("/auth/token", data={**form, "scope": scope})).status_code == 200
        anonymous = await client.post("/v2/alice/app/blobs/uploads/")
        assert anonymous.status_code == 401, "who may push is still asked first"
