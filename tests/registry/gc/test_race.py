"""The collectors' safety claim under load: pushes reusing old layers race a collector running in a
loop with a short grace period (so the old layers are garbage again and again while pushes rely on
them), and afterwards every tag still pulls with every blob present and intact. Run against the full
collection (registry/gc.py) and the incremental one (registry/reviews.py, deciding the reviews the
pushes and deletes queue as they come due)."""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import os
import random

import httpx
import pytest

from registry.config import Settings
from registry.gc import Collector
from registry.reviews import ReviewCollector, ReviewReport
from storage.metadata.reviews import queue_blobs
from tests.support.app import running_app
from tests.support.content import OCI_CONFIG, OCI_LAYER, OCI_MANIFEST, descriptor, digest_of

pytestmark = pytest.mark.anyio

PUSHERS = 4
ROUNDS = {"local": 75, "s3": 40}  # per pusher: 300 pushes (160 on S3 and PostgreSQL, slower per push)
MORE_ROUNDS = 4  # at most this many times ROUNDS while no push has raced the collector yet
LAYER_POOL = 6
# Longer than one whole push attempt on a loaded machine (p99 0.6-0.8 s measured), else a push can
# starve: its first blob outlives the grace before its manifest arrives, attempt after attempt.
# Old layers still turn into garbage between a pusher's HEAD and its manifest, so the race is run.
GRACE_S = 1.5


async def push_blob_like_docker(client: httpx.AsyncClient, repository: str, data: bytes) -> None:
    """HEAD first (skip if present), else POST + PATCH + PUT; retried while the collector is busy."""
    digest = digest_of(data)
    while True:
        if (await client.head(f"/v2/{repository}/blobs/{digest}")).status_code == 200:
            return
        location = (await client.post(f"/v2/{repository}/blobs/uploads/")).headers["Location"]
        await client.patch(location, content=data)
        r = await client.put(location, params={"digest": digest})
        if r.status_code == 201:
            return
        assert r.status_code == 503, r.text


async def push_image_retrying(
    client: httpx.AsyncClient, repository: str, tag: str, layers: list[bytes], refused: list[int], rng: random.Random
) -> bytes:
    config = json.dumps({"os": "linux", "tag": tag, "nonce": os.urandom(4).hex()}).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": descriptor(OCI_CONFIG, config),
            "layers": [descriptor(OCI_LAYER, layer) for layer in layers],
        }
    ).encode()
    for _ in range(50):
        # Like docker: the layers at once, then the config, then the manifest.
        await asyncio.gather(*(push_blob_like_docker(client, repository, layer) for layer in layers))
        await push_blob_like_docker(client, repository, config)
        await asyncio.sleep(rng.random() * 0.005)  # the client's think time widens the race window
        r = await client.put(
            f"/v2/{repository}/manifests/{tag}", content=manifest, headers={"Content-Type": OCI_MANIFEST}
        )
        if r.status_code == 201:
            return manifest
        # A blob was collected between its upload and the manifest: push it again, as a client would.
        refused.append(1)
        assert r.status_code in (400, 503) and r.json()["errors"][0]["code"] in ("MANIFEST_BLOB_UNKNOWN", "UNAVAILABLE")
    raise AssertionError("the push never got through")


async def check_everything_pulls(client: httpx.AsyncClient, repositories: list[str]) -> int:
    checked = 0
    for repository in repositories:
        tags = (await client.get(f"/v2/{repository}/tags/list")).json()["tags"]
        for tag in tags:
            r = await client.get(f"/v2/{repository}/manifests/{tag}", headers={"Accept": OCI_MANIFEST})
            assert r.status_code == 200
            assert "sha256:" + hashlib.sha256(r.content).hexdigest() == r.headers["Docker-Content-Digest"]
            doc = r.json()
            for d in [doc["config"], *doc["layers"]]:
                blob = await client.get(f"/v2/{repository}/blobs/{d['digest']}")
                assert blob.status_code == 200, (repository, tag, d["digest"])
                assert digest_of(blob.content) == d["digest"] and len(blob.content) == d["size"]
            checked += 1
    return checked


async def find_violations(client: httpx.AsyncClient, repositories: list[str], found: list[str]) -> None:
    """Record every manifest seen to exist while a blob it refers to does not."""
    for repository in repositories:
        r = await client.get(f"/v2/{repository}/manifests/t", headers={"Accept": OCI_MANIFEST})
        if r.status_code != 200:
            continue
        digest = r.headers["Docker-Content-Digest"]
        for d in [r.json()["config"], *r.json()["layers"]]:
            if (await client.head(f"/v2/{repository}/blobs/{d['digest']}")).status_code == 200:
                continue
            if (await client.head(f"/v2/{repository}/manifests/{digest}")).status_code == 200:
                found.append(f"{repository}@{digest} refers to {d['digest']}, which is gone")


@pytest.mark.parametrize("kind", ["full", "reviews"])
async def test_pushes_racing_a_looping_collector_never_lose_a_referenced_blob(settings: Settings, kind: str) -> None:
    rng = random.Random(int.from_bytes(os.urandom(4), "big"))
    # The incremental collector looks at a layer only when a change queues it: with more old layers, more
    # of them are unreferenced when it does, so pushes race it about as often as a full collection.
    old_layers = [os.urandom(2048) for _ in range(LAYER_POOL * (1 if kind == "full" else 3))]
    repositories = [f"race/p{n}" for n in range(PUSHERS)]
    settings = copy.deepcopy(settings)
    settings.gc.grace, settings.gc.reviews = f"{GRACE_S}s", False  # reviews due a grace after each change
    async with running_app(settings) as (app, client):
        for layer in old_layers:
            await push_blob_like_docker(client, "seed/base", layer)
        metadata, driver = app.state.registry.metadata, app.state.registry.driver
        collector = Collector(metadata, driver, grace_s=GRACE_S, purge_after_s=60)
        reviewer = ReviewCollector(metadata, driver, GRACE_S, delete_untagged=True, batch=5, rest=0)
        old_digests = [digest_of(layer) for layer in old_layers]
        stop = asyncio.Event()
        reports: list = []
        refused: list[int] = []
        violations: list[str] = []

        async def collect_forever() -> None:
            while not stop.is_set():
                if kind == "full":
                    reports.append(await collector.run(delete_untagged=rng.random() < 0.5))
                else:
                    # As if changes kept queuing the old layers (a full collection looks at every blob
                    # on each run): each is decided again and again while pushes rely on it.
                    await metadata.db.write(lambda c: queue_blobs(c, old_digests, 0.0))
                    report = ReviewReport()  # one batch: the incremental collector's step
                    await reviewer.run_batch(report)
                    reports.append(report)
                await asyncio.sleep(0 if kind == "full" else 0.005)

        async def check_forever() -> None:
            while not stop.is_set():
                await find_violations(client, repositories, violations)
                await asyncio.sleep(0)

        async def pusher(repository: str) -> None:
            rounds = ROUNDS[settings.storage.kind]
            pushed = 0
            while True:
                layers = [*rng.sample(old_layers, 2), os.urandom(512)]
                manifest = await push_image_retrying(client, repository, "t", layers, refused, rng)
                pushed += 1
                # Pushes go on past `rounds` until one raced the collector (bounded): the race is what
                # this test is about, and how soon it comes depends on the machine's timing.
                if pushed >= rounds and (refused or pushed >= rounds * MORE_ROUNDS):
                    return  # the last image stays, to be checked
                # Drop the image (its old layers may become garbage again).
                if rng.random() < 0.7:
                    await client.delete(f"/v2/{repository}/manifests/{digest_of(manifest)}")

        background = [asyncio.create_task(collect_forever()), asyncio.create_task(check_forever())]
        await asyncio.gather(*(pusher(r) for r in repositories))
        stop.set()
        await asyncio.gather(*background)
        removed = sum(r.blobs_removed for r in reports)
        print(f"{len(reports)} collections removed {removed} blobs; {len(refused)} manifest pushes refused and redone")
        assert violations == []
        assert len(reports) >= 20, f"only {len(reports)} collections ran during the pushes"
        assert refused, "no push ever raced the collector: the test proves nothing"
        assert await check_everything_pulls(client, repositories) == PUSHERS
        await (collector.run(delete_untagged=True) if kind == "full" else reviewer.run_due())
        assert await check_everything_pulls(client, repositories) == PUSHERS
