"""Garbage collection from the metadata: what is kept, what is removed, and races with pushes."""

from __future__ import annotations

import asyncio
import os
import time
import uuid

import httpx
import pytest
from starlette.applications import Starlette

from registry.check import check
from registry.config import Settings
from registry.gc import DELETE_CONCURRENCY, Collector, CollectorBusy
from registry.layout import blob_key
from storage.drivers import Driver, NotFound
from storage.drivers.local import LocalDriver
from storage.drivers.memory import MemoryDriver
from storage.drivers.s3 import S3Driver
from storage.metadata import Blob, RemovedRepository, open_metadata
from tests.support.app import running_app, stored_keys
from tests.support.content import (
    OCI_INDEX,
    OCI_MANIFEST,
    digest_of,
    error_codes,
    index_of,
    make_image,
    push_blob,
    push_image,
    push_referrer,
)

pytestmark = pytest.mark.anyio

SIGNATURE = "application/vnd.example.signature"


def collector(app: Starlette, grace_s: float = 0.0, purge_after_s: float = 3600.0) -> Collector:
    state = app.state
    return Collector(state.registry.metadata, state.registry.driver, grace_s, purge_after_s)


async def blob_ok(client: httpx.AsyncClient, repository: str, data: bytes) -> bool:
    r = await client.get(f"/v2/{repository}/blobs/{digest_of(data)}")
    return r.status_code == 200 and r.content == data


async def stored(app: Starlette, data: bytes) -> bool:
    try:
        await app.state.registry.driver.stat(blob_key(digest_of(data)))
    except NotFound:
        return False
    return True


async def test_shared_layer_survives_deleting_one_of_two_images(served) -> None:
    app, client = served
    shared = os.urandom(100)
    one, two = make_image(shared=[shared]), make_image(shared=[shared])
    await push_image(client, "team/one", one, "v1")
    await push_image(client, "team/two", two, "v1")
    await client.delete(f"/v2/team/one/manifests/{one.digest}")
    report = await collector(app).run()
    assert await blob_ok(client, "team/two", shared)
    assert await stored(app, shared)
    assert not await stored(app, one.layers[1]) and not await stored(app, one.config)
    assert await blob_ok(client, "team/two", two.layers[1])
    assert report.blobs_removed == 3  # one's config, its own layer and its manifest bytes
    assert report.manifests_removed == 0


async def test_orphan_blob_is_removed_and_reads_answer_blob_unknown(served) -> None:
    app, client = served
    await push_blob(client, "team/app", b"orphan")
    report = await collector(app).run()
    assert report.blobs_removed == 1 and report.blob_bytes_removed == len(b"orphan")
    r = await client.get(f"/v2/team/app/blobs/{digest_of(b'orphan')}")
    assert r.status_code == 404 and error_codes(r) == ["BLOB_UNKNOWN"]
    assert not await stored(app, b"orphan")


async def test_blob_younger_than_the_grace_period_survives(served) -> None:
    app, client = served
    await push_blob(client, "team/app", b"young")
    report = await collector(app, grace_s=3600).run()
    assert report.blobs_removed == 0
    assert await blob_ok(client, "team/app", b"young")


async def test_dry_run_reports_and_changes_nothing(served) -> None:
    app, client = served
    await push_blob(client, "team/app", b"orphan")
    report = await collector(app).run(dry_run=True)
    assert (report.dry_run, report.blobs_removed) == (True, 1)
    assert await blob_ok(client, "team/app", b"orphan")
    assert await collector(app).last_report() is None


async def test_untagged_manifests_stay_unless_asked(served) -> None:
    app, client = served
    image = make_image()
    await push_image(client, "team/app", image)  # by digest: untagged
    assert (await collector(app).run()).manifests_removed == 0
    assert (await client.get(f"/v2/team/app/manifests/{image.digest}")).status_code == 200
    report = await collector(app).run(delete_untagged=True)
    assert report.manifests_removed == 1 and report.blobs_removed == 3
    assert (await client.get(f"/v2/team/app/manifests/{image.digest}")).status_code == 404
    assert not await stored(app, image.layers[0])


async def test_children_of_a_tagged_index_survive_delete_untagged(served) -> None:
    app, client = served
    children = [make_image(), make_image()]
    for child in children:
        await push_image(client, "team/multi", child)
    body = index_of(*children)
    r = await client.put("/v2/team/multi/manifests/latest", content=body, headers={"Content-Type": OCI_INDEX})
    assert r.status_code == 201
    report = await collector(app).run(delete_untagged=True)
    assert report.manifests_removed == 0 and report.blobs_removed == 0
    for child in children:
        assert (await client.get(f"/v2/team/multi/manifests/{child.digest}")).status_code == 200
        assert await blob_ok(client, "team/multi", child.layers[0])


async def test_signature_of_a_tagged_image_survives_delete_untagged(served) -> None:
    app, client = served
    image = make_image()
    await push_image(client, "team/app", image, "v1")
    signature = await push_referrer(client, "team/app", image.manifest, SIGNATURE)
    report = await collector(app).run(delete_untagged=True)
    assert report.manifests_removed == 0
    assert (await client.get(f"/v2/team/app/manifests/{signature}")).status_code == 200
    referrers = (await client.get(f"/v2/team/app/referrers/{image.digest}")).json()["manifests"]
    assert [m["digest"] for m in referrers] == [signature]


async def test_referrer_whose_subject_is_gone_is_removed(served) -> None:
    app, client = served
    image = make_image()
    await push_image(client, "team/app", image, "v1")
    signature = await push_referrer(client, "team/app", image.manifest, SIGNATURE)
    await client.delete(f"/v2/team/app/manifests/{image.digest}")
    report = await collector(app).run()
    assert report.manifests_removed == 1
    assert (await client.get(f"/v2/team/app/manifests/{signature}")).status_code == 404


async def test_abandoned_uploads_are_purged_after_their_age(served) -> None:
    app, client = served
    location = (await client.post("/v2/team/app/blobs/uploads/")).headers["Location"]
    await client.patch(location, content=b"x" * 1000)
    assert (await collector(app, purge_after_s=3600).run()).uploads_purged == 0
    report = await collector(app, purge_after_s=0).run()
    assert (report.uploads_purged, report.upload_bytes_purged) == (1, 1000)
    assert (await client.get(location)).status_code == 404
    assert await stored_keys(app.state.registry.driver, "uploads/") == []


async def test_deleted_repository_feeds_the_collector(served) -> None:
    app, client = served
    image = make_image()
    await push_image(client, "team/gone", image, "v1")
    assert await app.state.registry.metadata.delete_repository("team/gone") == RemovedRepository(1, 1, ())
    assert (await client.get("/v2/team/gone/tags/list")).status_code == 404
    report = await collector(app).run()
    assert report.blobs_removed == 3
    assert (await client.get("/v2/_catalog")).json()["repositories"] == []


async def test_one_collection_at_a_time(served) -> None:
    app, _ = served
    first = collector(app)
    assert await first.queries.lock("someone-else", 60)
    with pytest.raises(CollectorBusy):
        await first.run()
    await first.queries.unlock("someone-else")
    await first.run()


async def test_last_run_report_is_kept_in_the_metadata(served) -> None:
    app, client = served
    await push_blob(client, "team/app", b"orphan")
    await collector(app).run()
    report = await collector(app).last_report()
    assert report is not None and report.blobs_removed == 1 and report.seconds >= 0


async def test_manifest_referring_to_a_blob_being_deleted_is_refused(served) -> None:
    app, client = served
    image = make_image()
    for blob in [image.config, *image.layers]:
        await push_blob(client, "team/app", blob)
    queries = collector(app).queries
    marked = await queries.mark_blobs(time.time() + 1)  # as a collection does, mid-way
    assert digest_of(image.layers[0]) in {b.digest for b in marked.blobs}
    r = await client.put("/v2/team/app/manifests/v1", content=image.manifest, headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 400 and error_codes(r) == ["MANIFEST_BLOB_UNKNOWN"]
    assert (await client.head(f"/v2/team/app/blobs/{digest_of(image.layers[0])}")).status_code == 404
    mount = await client.post(
        "/v2/team/two/blobs/uploads/", params={"mount": digest_of(image.config), "from": "team/app"}
    )
    assert mount.status_code == 202  # no mount of a blob being deleted


async def test_upload_of_a_blob_being_deleted_waits_for_the_collector(served) -> None:
    app, client = served
    await push_blob(client, "team/app", b"layer")
    c = collector(app)
    marked = await c.queries.mark_blobs(time.time() + 1)
    assert marked.blobs == [Blob(digest_of(b"layer"), len(b"layer"))]

    async def finish_collection() -> None:
        await asyncio.sleep(0.3)
        await app.state.registry.driver.delete(blob_key(digest_of(b"layer")))
        await c.queries.forget_blobs([digest_of(b"layer")])

    finisher = asyncio.create_task(finish_collection())
    await push_blob(client, "team/app", b"layer")  # waits, then stores the bytes anew
    await finisher
    assert await blob_ok(client, "team/app", b"layer")


async def test_the_server_collects_on_its_schedule(settings: Settings) -> None:
    settings.gc.grace, settings.gc.interval = "0", "0.1"
    async with running_app(settings) as (app, client):
        await push_blob(client, "team/app", b"orphan")
        for _ in range(50):
            await asyncio.sleep(0.1)
            report = await collector(app).last_report()
            if report is not None and report.blobs_removed:
                break
        assert report is not None and report.blobs_removed == 1
        assert (await client.head(f"/v2/team/app/blobs/{digest_of(b'orphan')}")).status_code == 404


def leave_abandoned_write(driver: Driver, data: bytes) -> None:
    """Leave in storage what a push killed mid-write leaves: a temp file no process holds on disk, a
    multipart upload with a part on S3."""
    if isinstance(driver, LocalDriver):
        with open(os.path.join(driver.root, ".tmp", uuid.uuid4().hex), "wb") as f:
            f.write(data)
        return
    assert isinstance(driver, S3Driver)
    at = {"Bucket": driver.bucket, "Key": driver.prefix + blob_key(digest_of(data))}
    upload = driver.client.create_multipart_upload(**at)
    driver.client.upload_part(**at, UploadId=upload["UploadId"], PartNumber=1, Body=data)


async def test_leftovers_of_a_push_killed_mid_write_are_purged_once_older_than_the_grace(served) -> None:
    app, client = served
    driver = app.state.registry.driver
    await push_image(client, "team/app", make_image(), "v1")
    leave_abandoned_write(driver, b"half a layer" * 1000)
    report = await collector(app, grace_s=3600).run()
    assert (report.leftovers_removed, len([e async for e in driver.abandoned(time.time() + 60)])) == (0, 1)
    await asyncio.sleep(1.1)  # S3 keeps times to the second
    assert (await collector(app).run(dry_run=True)).leftovers_removed == 1
    report = await collector(app).run()
    assert (report.leftovers_removed, report.leftover_bytes_removed) == (1, 12000)
    assert [e async for e in driver.abandoned(time.time() + 60)] == []
    assert (await check(app.state.registry.metadata, driver)).leftovers == []
    assert (await client.get("/v2/team/app/manifests/v1")).status_code == 200


async def test_storage_orphans_are_removed_once_older_than_the_grace(served) -> None:
    app, client = served
    driver = app.state.registry.driver
    image = make_image()
    await push_image(client, "team/app", image, "v1")
    location = (await client.post("/v2/team/app/blobs/uploads/")).headers["Location"]
    await client.patch(location, content=b"an upload in progress")
    # Bytes the metadata does not know: a blob whose row was never written, an upload whose row is gone.
    stray = b"stored, then the process died before its row"
    await driver.put(blob_key(digest_of(stray)), stray)
    await driver.put(f"uploads/{uuid.uuid4()}/data", b"forgotten upload")
    assert len((await check(app.state.registry.metadata, driver)).orphans) == 2

    report = await collector(app, grace_s=3600).run()
    assert report.orphans_removed == 0 and len((await check(app.state.registry.metadata, driver)).orphans) == 2
    await asyncio.sleep(1.1)  # S3 keeps times to the second
    planned = await collector(app).run(dry_run=True)
    assert (planned.orphans_removed, planned.orphan_bytes_removed) == (2, len(stray) + len(b"forgotten upload"))
    report = await collector(app).run()
    assert (report.orphans_removed, report.orphan_bytes_removed) == (2, len(stray) + len(b"forgotten upload"))
    after = await check(app.state.registry.metadata, driver, verify_digests=True)
    assert after.ok and after.orphans == []
    assert await blob_ok(client, "team/app", image.layers[0])
    assert (await client.get(location)).status_code == 204  # the upload in progress is untouched
    assert (await client.put(location, params={"digest": digest_of(b"an upload in progress")})).status_code == 201


async def test_an_orphan_a_push_links_before_the_collector_marks_it_is_kept(served) -> None:
    app, client = served
    data = b"orphan, then pushed"
    await app.state.registry.driver.put(blob_key(digest_of(data)), data)
    await push_blob(client, "team/app", data)  # links the digest (the bytes are written again)
    assert await collector(app).queries.mark_orphans([Blob(digest_of(data), len(data))]) == []
    assert (await collector(app, grace_s=3600).run()).orphans_removed == 0
    assert await blob_ok(client, "team/app", data)


async def test_a_push_of_an_orphan_being_deleted_waits_and_stores_it_anew(served) -> None:
    app, client = served
    data = b"orphan being deleted"
    driver = app.state.registry.driver
    await driver.put(blob_key(digest_of(data)), data)
    c = collector(app)
    assert await c.queries.mark_orphans([Blob(digest_of(data), len(data))]) == [digest_of(data)]

    async def finish_collection() -> None:
        await asyncio.sleep(0.3)
        await driver.delete(blob_key(digest_of(data)))
        await c.queries.forget_blobs([digest_of(data)])

    finisher = asyncio.create_task(finish_collection())
    await push_blob(client, "team/app", data)  # waits, then stores the bytes anew
    await finisher
    assert await blob_ok(client, "team/app", data)


async def test_an_orphan_an_upload_was_finishing_into_is_kept_for_the_retried_put(served) -> None:
    app, client = served
    driver, data = app.state.registry.driver, os.urandom(3000)
    location = (await client.post("/v2/team/app/blobs/uploads/")).headers["Location"]
    location = (await client.patch(location, content=data)).headers["Location"]
    # A final PUT killed between placing the blob and writing its row leaves the bytes, no row.
    await driver.put(blob_key(digest_of(data)), data)
    await asyncio.sleep(1.1)  # S3 keeps times to the second
    assert (await collector(app).run()).orphans_removed == 0
    assert (await client.put(location, params={"digest": digest_of(data)})).status_code == 201
    assert await blob_ok(client, "team/app", data)
    assert (await check(app.state.registry.metadata, driver)).orphans == []


class TaskCountingDriver(MemoryDriver):
    """The memory driver, noting how many tasks the loop has at each delete."""

    def __init__(self) -> None:
        super().__init__()
        self.tasks_at_delete: list[int] = []

    async def delete(self, key: str) -> None:
        self.tasks_at_delete.append(len(asyncio.all_tasks()))
        await super().delete(key)


async def test_deleting_many_keys_runs_a_bounded_number_of_tasks(tmp_path) -> None:
    driver = TaskCountingDriver()
    keys = [f"blobs/k{i}" for i in range(3000)]
    for key in keys:
        await driver.put(key, b"x")
    collector = Collector(open_metadata(f"sqlite:///{tmp_path}/index.db"), driver, 0, 0)
    await collector._delete_all(keys)
    assert await stored_keys(driver, "blobs/") == []
    assert max(driver.tasks_at_delete) <= DELETE_CONCURRENCY + 4
