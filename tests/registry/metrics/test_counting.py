"""registry/metrics/counting.py and families.py through the whole app: what real requests count."""

from __future__ import annotations

import os

import httpx
import pytest
from starlette.applications import Starlette

from registry.config import Settings
from tests.support.app import running_app
from tests.support.content import digest_of, make_image, push_blob, push_image
from tests.support.metrics import Scrape
from tests.support.processes import HOST, free_port
from tests.support.users import basic, configure, htpasswd_bytes

pytestmark = pytest.mark.anyio

REQUESTS = "registry_http_requests_total"


def lenient_client(app: Starlette) -> httpx.AsyncClient:
    """A client of `app` that gets the 500 of an error the app lets through to the ASGI server."""
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app, raise_app_exceptions=False), base_url="http://registry.test"
    )


async def scrape(client: httpx.AsyncClient, **headers: str) -> Scrape:
    r = await client.get("/metrics", headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    return Scrape(r.text)


async def test_a_push_and_a_pull_count_by_route_template_method_and_status(settings: Settings):
    image = make_image(layers=2)
    async with running_app(settings) as (_, client):
        await push_image(client, "team/app", image, "1.0")
        pulled = await client.get("/v2/team/app/manifests/1.0")
        assert pulled.status_code == 200
        blob = await client.get(f"/v2/team/app/blobs/{digest_of(image.layers[0])}")
        assert blob.content == image.layers[0]
        assert (await client.get("/v2/team/app/manifests/nope")).status_code == 404
        assert (await client.get("/v2/no/such/path/at/all")).status_code == 404
        found = await scrape(client)
    blobs = "/v2/{name}/blobs/{digest}"
    manifests = "/v2/{name}/manifests/{reference}"
    assert found.value(REQUESTS, route="/v2/{name}/blobs/uploads/", method="POST", status="201") == 3
    assert found.value(REQUESTS, route=manifests, method="PUT", status="201") == 1
    assert found.value(REQUESTS, route=manifests, method="GET", status="200") == 1
    assert found.value(REQUESTS, route=manifests, method="GET", status="404") == 1
    assert found.value(REQUESTS, route=blobs, method="GET", status="200") == 1
    assert found.value(REQUESTS, route="other", method="GET", status="404") == 1
    # Route templates only: no repository name, digest or tag ever becomes a label value.
    routes = found.label_values(REQUESTS, "route")
    assert not [r for r in routes if "team" in r or "sha256" in r or "1.0" in r or "nope" in r]
    assert found.value("registry_http_request_duration_seconds_count", route=manifests, method="GET") == 2
    assert found.value("registry_http_request_duration_seconds_bucket", route=blobs, method="GET", le="+Inf") == 1
    pushed = len(image.config) + sum(len(layer) for layer in image.layers)
    assert found.value("registry_http_received_bytes_total", route="/v2/{name}/blobs/uploads/") == pushed
    assert found.value("registry_http_received_bytes_total", route=manifests) == len(image.manifest)
    assert found.value("registry_http_sent_bytes_total", route=blobs) == len(image.layers[0])
    assert found.value("registry_http_sent_bytes_total", route=manifests) >= len(image.manifest)
    # The scrape itself is in flight while it renders.
    assert found.value("registry_http_requests_in_progress") == 1


async def test_methods_outside_http_s_own_are_counted_as_other(settings: Settings):
    async with running_app(settings) as (_, client):
        r = await client.request("BREW", "/v2/")
        assert r.status_code == 405
        found = await scrape(client)
    assert found.value(REQUESTS, route="/v2/", method="other", status="405") == 1
    assert "BREW" not in found.text


async def test_the_ui_s_routes_carry_their_mount_s_path(settings: Settings):
    async with running_app(settings) as (_, client):
        assert (await client.get("/ui/storage")).status_code == 200
        found = await scrape(client)
    assert found.value(REQUESTS, route="/ui/storage", method="GET", status="200") == 1


async def test_refused_credentials_count_as_auth_failures(settings: Settings, tmp_path):
    configure(settings, "htpasswd", htpasswd_bytes(tmp_path))
    async with running_app(settings) as (_, client):
        assert (await client.get("/v2/")).status_code == 401
        assert (await client.get("/v2/", headers=basic("alice", "wrong"))).status_code == 401
        assert (await client.get("/v2/", headers=basic("alice", "alice-pw"))).status_code == 200
        denied = await client.get("/v2/bob/app/tags/list", headers=basic("alice", "alice-pw"))
        assert denied.status_code == 403
        found = await scrape(client)
    assert found.value("registry_auth_failures_total", status="401") == 2
    assert found.value("registry_auth_failures_total", status="403") == 1
    assert found.value(REQUESTS, route="/v2/", method="GET", status="401") == 2


async def test_a_blob_gone_from_storage_counts_as_a_storage_error(settings: Settings):
    async with running_app(settings) as (app, client):
        digest = await push_blob(client, "team/app", b"some bytes")
        hexdigest = digest.removeprefix("sha256:")
        os.remove(os.path.join(settings.storage_root, "blobs", "sha256", hexdigest[:2], hexdigest))
        # The error comes while the body streams: the server answers 500 and logs it (it reaches the
        # ASGI server, so this client must not raise it).
        async with lenient_client(app) as own:
            r = await own.get(f"/v2/team/app/blobs/{digest}")
        assert r.status_code == 500
        found = await scrape(client)
    blobs = "/v2/{name}/blobs/{digest}"
    assert found.value(REQUESTS, route=blobs, method="GET", status="500") == 1
    assert found.total("registry_backend_errors_total", backend="storage") == 1
    assert found.total("registry_backend_errors_total", backend="index") == 0


async def test_an_index_that_fails_counts_as_an_index_error(settings: Settings):
    async with running_app(settings) as (app, client):
        await push_image(client, "team/app", make_image(), "1.0")
        await app.state.registry.metadata.db.write(lambda c: c.execute("DROP TABLE tags"))  # a broken index
        async with lenient_client(app) as own:
            assert (await own.get("/v2/team/app/tags/list")).status_code == 500
        found = await scrape(client)
    assert found.total("registry_backend_errors_total", backend="index") == 1
    assert found.value("registry_backend_errors_total", backend="index", error="OperationalError") == 1
    assert found.total("registry_backend_errors_total", backend="storage") == 0


async def test_an_unreachable_object_store_counts_as_a_storage_error(settings: Settings, monkeypatch):
    # S3 on a port where nothing listens: the driver's BackendUnavailable, answered 503 UNAVAILABLE.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "nobody")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "nothing")
    s3 = settings.storage.s3
    s3.bucket, s3.endpoint, s3.region = "nowhere", f"http://{HOST}:{free_port()}", "us-east-1"
    async with running_app(settings) as (_, client):
        data = b"bytes for nowhere"
        r = await client.post("/v2/team/app/blobs/uploads/", params={"digest": digest_of(data)}, content=data)
        assert r.status_code == 503
        found = await scrape(client)
    assert found.value("registry_backend_errors_total", backend="storage", error="BackendUnavailable") == 1
    assert found.total("registry_backend_errors_total", backend="index") == 0
