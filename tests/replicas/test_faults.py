"""Outages of the backends: while S3 or PostgreSQL is down the registry answers 503 in the OCI error
format and makes nothing half-visible; once they are back it works again without a restart."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator

import httpx
import pytest

from registry.config import Settings
from tests.support.app import running_app
from tests.support.backends import S3_BUCKET, registry_postgres, s3_and_postgres
from tests.support.content import OCI_MANIFEST, digest_of, error_codes, make_image, push_blob, push_image
from tests.support.services import Postgres, SeaweedS3, start_service

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def own_seaweed(seaweed: SeaweedS3) -> Iterator[SeaweedS3]:
    """An S3 server of this module's own, to stop and start (`seaweed` puts the credentials in place)."""
    s3 = start_service(lambda: SeaweedS3(access_key=seaweed.access_key, secret_key=seaweed.secret_key), "SeaweedFS")
    s3.create_bucket(S3_BUCKET)
    yield s3
    s3.close()


@pytest.fixture(scope="module")
def own_postgres() -> Iterator[Postgres]:
    """A PostgreSQL cluster of this module's own, to restart."""
    with registry_postgres() as pg:
        yield pg


@pytest.fixture
def fault_settings(tmp_path, own_seaweed: SeaweedS3, own_postgres: Postgres) -> Settings:
    return s3_and_postgres(tmp_path, own_seaweed, own_postgres)


def assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert error_codes(response) == ["UNAVAILABLE"]
    assert "Traceback" not in response.text


async def test_s3_down_mid_push_answers_503_and_the_push_can_be_redone(
    fault_settings: Settings, own_seaweed: SeaweedS3
) -> None:
    image = make_image(layers=2)
    big = os.urandom(3 << 20)
    async with running_app(fault_settings) as (_, client):
        await push_blob(client, "team/app", image.config)
        location = (await client.post("/v2/team/app/blobs/uploads/")).headers["Location"]
        assert (await client.patch(location, content=big[: 1 << 20])).status_code == 202

        own_seaweed.kill()
        try:
            assert_unavailable(await client.patch(location, content=big[1 << 20 :]))
            digest = digest_of(image.layers[0])
            assert_unavailable(
                await client.post("/v2/team/app/blobs/uploads/", params={"digest": digest}, content=image.layers[0])
            )
            assert_unavailable(await client.get(f"/v2/team/app/blobs/{digest_of(image.config)}"))
            r = await client.put(
                "/v2/team/app/manifests/v1", content=image.manifest, headers={"Content-Type": OCI_MANIFEST}
            )
            assert r.status_code in (400, 503)  # its layers are missing, or the bytes cannot be stored
            # Nothing half-visible: the failed blobs and the manifest are unknown, the upload is where it was.
            assert (await client.head(f"/v2/team/app/blobs/{digest}")).status_code == 404
            assert (await client.head("/v2/team/app/manifests/v1")).status_code == 404
            assert (await client.get(location)).headers["Range"] == f"0-{(1 << 20) - 1}"
        finally:
            own_seaweed.start()

        r = await client.patch(location, content=big[1 << 20 :], headers={"Content-Range": f"{1 << 20}-{len(big) - 1}"})
        assert r.status_code == 202
        assert (await client.put(location, params={"digest": digest_of(big)})).status_code == 201
        await push_image(client, "team/app", image, "v1")
        assert (await client.get(f"/v2/team/app/blobs/{digest_of(big)}")).content == big
        assert (await client.get("/v2/team/app/manifests/v1")).content == image.manifest


async def test_postgres_restart_mid_run_and_the_registry_reconnects(
    fault_settings: Settings, own_postgres: Postgres
) -> None:
    first, second = make_image(), make_image()
    async with running_app(fault_settings) as (_, client):
        await push_image(client, "team/app", first, "v1")
        own_postgres.stop()
        try:
            assert_unavailable(await client.get("/v2/team/app/tags/list"))
            assert_unavailable(await client.post("/v2/team/app/blobs/uploads/"))
        finally:
            own_postgres.start()
        began = time.monotonic()
        while (await client.get("/healthz")).status_code != 200:
            assert time.monotonic() - began < 60, "the registry did not reconnect within a minute"
            await asyncio.sleep(0.2)
        print(f"reconnected {time.monotonic() - began:.1f}s after PostgreSQL came back")
        await push_image(client, "team/app", second, "v2")
        assert (await client.get("/v2/team/app/tags/list")).json()["tags"] == ["v1", "v2"]
        assert (await client.get("/v2/team/app/manifests/v1")).content == first.manifest
