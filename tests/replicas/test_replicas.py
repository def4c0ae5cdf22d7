"""Three replicas on one S3 bucket and one PostgreSQL database act as one registry: no request
depends on which replica served the one before."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import httpx
import pytest
from starlette.applications import Starlette

from registry.config import Settings
from tests.support.app import running_app
from tests.support.backends import s3_and_postgres
from tests.support.content import OCI_MANIFEST, digest_of, make_image, push_image

pytestmark = pytest.mark.anyio

REPLICAS = 3


class RoundRobin(httpx.AsyncBaseTransport):
    """Sends each request to the next replica, as a round-robin load balancer does."""

    def __init__(self, apps: list[Starlette]):
        self.transports = [httpx.ASGITransport(app) for app in apps]
        self.sent = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        transport = self.transports[self.sent % len(self.transports)]
        self.sent += 1
        return await transport.handle_async_request(request)


@pytest.fixture
def shared_settings(tmp_path, seaweed, postgres) -> Settings:
    return s3_and_postgres(tmp_path, seaweed, postgres)


@pytest.fixture
async def running(shared_settings: Settings) -> AsyncIterator[list[tuple[Starlette, httpx.AsyncClient]]]:
    """Three replicas over the shared bucket and database, their lifespans running, each with a client."""
    async with AsyncExitStack() as stack:
        yield [await stack.enter_async_context(running_app(shared_settings)) for _ in range(REPLICAS)]


@pytest.fixture
def apps(running) -> list[Starlette]:
    return [app for app, _ in running]


@pytest.fixture
def replicas(running) -> list[httpx.AsyncClient]:
    """A client of each replica."""
    return [client for _, client in running]


@pytest.fixture
async def balanced(apps: list[Starlette]) -> AsyncIterator[httpx.AsyncClient]:
    """A client whose requests go round-robin over the replicas."""
    async with httpx.AsyncClient(transport=RoundRobin(apps), base_url="http://lb") as client:
        yield client


async def test_upload_started_continued_and_finished_on_three_replicas(replicas) -> None:
    a, b, c = replicas
    data = os.urandom(3 << 20)
    location = (await a.post("/v2/team/app/blobs/uploads/")).headers["Location"]
    r = await b.patch(location, content=data[: 1 << 20], headers={"Content-Range": f"0-{(1 << 20) - 1}"})
    assert r.status_code == 202
    assert (await c.get(location)).headers["Range"] == f"0-{(1 << 20) - 1}"
    r = await a.patch(location, content=data[1 << 20 :], headers={"Content-Range": f"{1 << 20}-{len(data) - 1}"})
    assert r.status_code == 202
    assert (await c.put(location, params={"digest": digest_of(data)})).status_code == 201
    for replica in replicas:
        r = await replica.get(f"/v2/team/app/blobs/{digest_of(data)}")
        assert r.status_code == 200 and r.content == data


async def test_twenty_concurrent_pushes_sharing_layers_over_three_replicas(balanced, replicas) -> None:
    shared = [os.urandom(6 << 20), os.urandom(1 << 20)]
    images = [make_image(shared=shared) for _ in range(20)]
    await asyncio.gather(*(push_image(balanced, f"team/app{i % 4}", image, f"v{i}") for i, image in enumerate(images)))
    for i, image in enumerate(images):
        for replica in replicas:
            r = await replica.get(f"/v2/team/app{i % 4}/manifests/v{i}", headers={"Accept": OCI_MANIFEST})
            assert r.status_code == 200 and r.content == image.manifest
        for blob in [image.config, *image.layers]:
            r = await replicas[i % REPLICAS].get(f"/v2/team/app{i % 4}/blobs/{digest_of(blob)}")
            assert r.content == blob


async def test_the_same_tag_pushed_from_every_replica_at_once_ends_on_one_of_them(replicas) -> None:
    images = [make_image() for _ in replicas]
    await asyncio.gather(
        *(push_image(r, "team/race", image, "latest") for r, image in zip(replicas, images, strict=True))
    )
    answers = {
        (await r.get("/v2/team/race/manifests/latest", headers={"Accept": OCI_MANIFEST})).headers[
            "Docker-Content-Digest"
        ]
        for r in replicas
    }
    assert len(answers) == 1 and answers <= {image.digest for image in images}
    assert (await replicas[0].get("/v2/team/race/tags/list")).json()["tags"] == ["latest"]
