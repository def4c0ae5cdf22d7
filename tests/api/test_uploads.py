"""Blob uploads: monolithic, streamed, chunked, resumable, cancelled, and cross-repository mounts."""

from __future__ import annotations

import os
import time

import anyio
import httpx
import pytest

from registry.layout import blob_key
from registry.resumable import Sha256
from storage.drivers.local import LocalDriver
from storage.drivers.s3 import PART_SIZE
from tests.support.app import open_to_others, running_app, stored_keys
from tests.support.content import digest_of, error_codes, make_image, push_blob, push_image

pytestmark = pytest.mark.anyio


async def start(client: httpx.AsyncClient, repository: str = "team/app") -> str:
    r = await client.post(f"/v2/{repository}/blobs/uploads/")
    assert r.status_code == 202, r.text
    assert r.headers["Range"] == "0-0"
    assert r.headers["Location"].endswith(r.headers["Docker-Upload-UUID"])
    return r.headers["Location"]


async def test_monolithic_post_with_digest_creates_the_blob(client: httpx.AsyncClient) -> None:
    data = os.urandom(10_000)
    digest = digest_of(data)
    r = await client.post("/v2/team/app/blobs/uploads/", params={"digest": digest}, content=data)
    assert r.status_code == 201
    assert r.headers["Location"] == f"/v2/team/app/blobs/{digest}"
    assert r.headers["Docker-Content-Digest"] == digest
    assert (await client.get(r.headers["Location"])).content == data


async def test_monolithic_post_with_wrong_digest_stores_nothing(client: httpx.AsyncClient, driver) -> None:
    wrong = digest_of(b"something else")
    r = await client.post("/v2/team/app/blobs/uploads/", params={"digest": wrong}, content=b"actual bytes")
    assert r.status_code == 400 and error_codes(r) == ["DIGEST_INVALID"]
    assert (await client.head(f"/v2/team/app/blobs/{wrong}")).status_code == 404
    assert await stored_keys(driver, "blobs/") == []
    if isinstance(driver, LocalDriver):
        assert os.listdir(os.path.join(driver.root, ".tmp")) == []


async def test_streamed_patch_then_put_like_docker_push(client: httpx.AsyncClient, driver) -> None:
    data = os.urandom(3 << 20)
    location = await start(client)

    async def body():
        for i in range(0, len(data), 100_000):
            yield data[i : i + 100_000]

    r = await client.patch(location, content=body())
    assert r.status_code == 202
    assert r.headers["Range"] == f"0-{len(data) - 1}"
    r = await client.put(location, params={"digest": digest_of(data)})
    assert r.status_code == 201
    assert (await client.get(f"/v2/team/app/blobs/{digest_of(data)}")).content == data
    assert await stored_keys(driver, "uploads/") == []


async def test_chunked_upload_with_content_range_and_final_chunk_in_put(client: httpx.AsyncClient) -> None:
    data = os.urandom(2500)
    location = await start(client)
    for start_at in (0, 1000):
        chunk = data[start_at : start_at + 1000]
        r = await client.patch(
            location,
            content=chunk,
            headers={"Content-Range": f"{start_at}-{start_at + 999}", "Content-Type": "application/octet-stream"},
        )
        assert r.status_code == 202, r.text
        assert r.headers["Range"] == f"0-{start_at + 999}"
    r = await client.put(
        location, params={"digest": digest_of(data)}, content=data[2000:], headers={"Content-Range": "2000-2499"}
    )
    assert r.status_code == 201, r.text
    assert (await client.get(f"/v2/team/app/blobs/{digest_of(data)}")).content == data


async def test_out_of_order_or_overlapping_chunk_answers_416_with_progress(client: httpx.AsyncClient) -> None:
    location = await start(client)
    await client.patch(location, content=b"a" * 100, headers={"Content-Range": "0-99"})
    for content_range in ["200-299", "50-149", "0-99"]:
        r = await client.patch(location, content=b"b" * 100, headers={"Content-Range": content_range})
        assert r.status_code == 416, content_range
        assert error_codes(r) == ["RANGE_INVALID"]
        assert r.headers["Range"] == "0-99"
    status = await client.get(location)
    assert status.headers["Range"] == "0-99"


async def test_content_range_that_disagrees_with_the_body_is_refused(client: httpx.AsyncClient) -> None:
    location = await start(client)
    r = await client.patch(location, content=b"a" * 10, headers={"Content-Range": "0-99"})
    assert r.status_code == 400 and error_codes(r) == ["SIZE_INVALID"]
    r = await client.patch(location, content=b"a" * 10, headers={"Content-Range": "garbage"})
    assert r.status_code == 416
    assert (await client.get(location)).headers["Range"] == "0-0"


async def test_upload_is_resumable_after_asking_its_status(client: httpx.AsyncClient) -> None:
    data = os.urandom(4000)
    location = await start(client)
    await client.patch(location, content=data[:1500])
    status = await client.get(location)
    assert status.status_code == 204
    assert status.headers["Range"] == "0-1499"
    resume_at = int(status.headers["Range"].split("-")[1]) + 1
    r = await client.patch(location, content=data[resume_at:], headers={"Content-Range": f"{resume_at}-3999"})
    assert r.status_code == 202
    assert (await client.put(location, params={"digest": digest_of(data)})).status_code == 201
    assert (await client.get(f"/v2/team/app/blobs/{digest_of(data)}")).content == data


async def test_put_with_wrong_digest_fails_and_stores_nothing(client: httpx.AsyncClient, driver) -> None:
    location = await start(client)
    await client.patch(location, content=b"chunk one")
    await client.patch(location, content=b" chunk two")
    wrong = digest_of(b"other")
    r = await client.put(location, params={"digest": wrong})
    assert r.status_code == 400 and error_codes(r) == ["DIGEST_INVALID"]
    assert (await client.head(f"/v2/team/app/blobs/{wrong}")).status_code == 404
    assert (await client.head(f"/v2/team/app/blobs/{digest_of(b'chunk one chunk two')}")).status_code == 404
    assert await stored_keys(driver, "blobs/") == []
    assert (await client.get(location)).status_code == 404


async def test_put_without_digest_is_refused(client: httpx.AsyncClient) -> None:
    location = await start(client)
    r = await client.put(location)
    assert r.status_code == 400 and error_codes(r) == ["DIGEST_INVALID"]


async def test_multi_chunk_upload_of_an_already_stored_blob_is_verified(client: httpx.AsyncClient) -> None:
    data = b"0123456789" * 100
    await push_blob(client, "team/base", data)
    location = await start(client)
    await client.patch(location, content=data[:500])
    await client.patch(location, content=data[500:])
    assert (await client.put(location, params={"digest": digest_of(data)})).status_code == 201
    assert (await client.get(f"/v2/team/app/blobs/{digest_of(data)}")).content == data


async def test_empty_blob_uploads(client: httpx.AsyncClient) -> None:
    location = await start(client)
    assert (await client.put(location, params={"digest": digest_of(b"")})).status_code == 201
    r = await client.get(f"/v2/team/app/blobs/{digest_of(b'')}")
    assert r.status_code == 200 and r.content == b""


async def test_an_empty_patch_then_the_whole_blob_in_the_put_leaves_no_upload_data(client, driver) -> None:
    location = await start(client)
    r = await client.patch(location, content=b"")
    assert r.status_code == 202 and r.headers["Range"] == "0-0"
    data = os.urandom(1000)
    assert (
        await client.put(r.headers["Location"], params={"digest": digest_of(data)}, content=data)
    ).status_code == 201
    assert (await client.get(f"/v2/team/app/blobs/{digest_of(data)}")).content == data
    assert await stored_keys(driver, "uploads/") == []


async def test_a_refused_first_chunk_leaves_no_upload_data(client, driver) -> None:
    location = await start(client)
    r = await client.patch(location, content=b"abcd", headers={"Content-Range": "0-99"})
    assert r.status_code == 400 and error_codes(r) == ["SIZE_INVALID"]
    assert await stored_keys(driver, "uploads/") == []
    r = await client.get(location)
    assert r.status_code == 204 and r.headers["Range"] == "0-0"


async def test_a_push_whose_write_was_swept_as_abandoned_is_refused_and_stores_nothing(client, driver) -> None:
    data = os.urandom(PART_SIZE + 1000)

    async def body():
        yield data[: PART_SIZE + 1]
        await anyio.sleep(1.1)  # S3 keeps times to the second
        # A collector that takes the write for abandoned: on disk the writer's lock says it is live.
        [entry async for entry in driver.abandoned(time.time() + 60, remove=True)]
        yield data[PART_SIZE + 1 :]

    r = await client.post("/v2/team/app/blobs/uploads/", params={"digest": digest_of(data)}, content=body())
    if isinstance(driver, LocalDriver):
        assert r.status_code == 201
        assert (await client.get(f"/v2/team/app/blobs/{digest_of(data)}")).content == data
    else:
        assert r.status_code == 400 and error_codes(r) == ["BLOB_UPLOAD_INVALID"]
        assert await stored_keys(driver, "blobs/") == []


async def test_cancel_deletes_the_upload(client: httpx.AsyncClient, driver) -> None:
    location = await start(client)
    await client.patch(location, content=b"x" * 100)
    assert (await client.delete(location)).status_code == 204
    r = await client.get(location)
    assert r.status_code == 404 and error_codes(r) == ["BLOB_UPLOAD_UNKNOWN"]
    assert await stored_keys(driver, "uploads/") == []


@pytest.mark.parametrize("upload_id", ["00000000-0000-0000-0000-000000000000", "not-a-uuid"])
async def test_unknown_uploads_answer_blob_upload_unknown(client: httpx.AsyncClient, upload_id: str) -> None:
    for method in ("GET", "PATCH", "PUT", "DELETE"):
        r = await client.request(
            method, f"/v2/team/app/blobs/uploads/{upload_id}", params={"digest": digest_of(b"")}, content=b"x"
        )
        assert r.status_code == 404 and error_codes(r) == ["BLOB_UPLOAD_UNKNOWN"], method


async def test_an_upload_belongs_to_its_repository(client: httpx.AsyncClient) -> None:
    location = await start(client, "team/app")
    r = await client.patch(location.replace("team/app", "team/other"), content=b"x")
    assert r.status_code == 404 and error_codes(r) == ["BLOB_UPLOAD_UNKNOWN"]


async def test_mount_from_a_repository_holding_the_blob(client: httpx.AsyncClient) -> None:
    digest = await push_blob(client, "team/base", b"shared layer")
    r = await client.post("/v2/team/app/blobs/uploads/", params={"mount": digest, "from": "team/base"})
    assert r.status_code == 201
    assert r.headers["Location"] == f"/v2/team/app/blobs/{digest}"
    assert r.headers["Docker-Content-Digest"] == digest
    assert (await client.get(f"/v2/team/app/blobs/{digest}")).content == b"shared layer"


async def test_mount_falls_back_to_an_upload_when_the_source_lacks_the_blob(client: httpx.AsyncClient) -> None:
    digest = await push_blob(client, "team/base", b"layer")
    r = await client.post("/v2/team/app/blobs/uploads/", params={"mount": digest, "from": "team/empty"})
    assert r.status_code == 202
    assert "Docker-Upload-UUID" in r.headers
    assert (await client.head(f"/v2/team/app/blobs/{digest}")).status_code == 404


async def test_mount_without_from_finds_the_blob_in_any_repository(client: httpx.AsyncClient) -> None:
    digest = await push_blob(client, "team/base", b"anywhere")
    r = await client.post("/v2/team/app/blobs/uploads/", params={"mount": digest})
    assert r.status_code == 201
    unknown = digest_of(b"nowhere")
    r = await client.post("/v2/team/app/blobs/uploads/", params={"mount": unknown})
    assert r.status_code == 202


async def test_mount_with_invalid_digest_or_source_name(client: httpx.AsyncClient) -> None:
    r = await client.post("/v2/team/app/blobs/uploads/", params={"mount": "sha256:xyz", "from": "team/base"})
    assert r.status_code == 400 and error_codes(r) == ["DIGEST_INVALID"]
    digest = digest_of(b"x")
    r = await client.post("/v2/team/app/blobs/uploads/", params={"mount": digest, "from": "Bad/Name"})
    assert r.status_code == 400 and error_codes(r) == ["NAME_INVALID"]


async def test_finishing_again_after_a_crash_between_move_and_index_update(client: httpx.AsyncClient, driver) -> None:
    """A kill after the chunk became the blob file but before the index knew: the retried PUT works."""
    data = os.urandom(5000)
    digest = digest_of(data)
    location = await start(client)
    await client.patch(location, content=data)
    (chunk,) = await stored_keys(driver, "uploads/")
    await driver.move(chunk, blob_key(digest))
    assert (await client.head(f"/v2/team/app/blobs/{digest}")).status_code == 404
    r = await client.put(location, params={"digest": digest})
    assert r.status_code == 201, r.text
    assert (await client.get(f"/v2/team/app/blobs/{digest}")).content == data


async def test_finishing_an_upload_whose_data_vanished_is_a_clear_error(client: httpx.AsyncClient, driver) -> None:
    data = os.urandom(100)
    location = await start(client)
    await client.patch(location, content=data)
    await driver.delete("uploads")
    r = await client.put(location, params={"digest": digest_of(data)})
    assert r.status_code == 400 and error_codes(r) == ["BLOB_UPLOAD_INVALID"]


async def push_in_chunks(clients: list[httpx.AsyncClient], data: bytes, digest: str) -> int:
    """Start an upload, PATCH `data` in chunks of 10,000 bytes with Content-Range, taking turns over
    `clients`, then PUT it as `digest` through the last client; returns the PUT's status."""
    location = await start(clients[0])
    for n, begin in enumerate(range(0, len(data), 10_000)):
        chunk = data[begin : begin + 10_000]
        headers = {"Content-Range": f"{begin}-{begin + len(chunk) - 1}"}
        assert (await clients[n % len(clients)].patch(location, content=chunk, headers=headers)).status_code == 202
    return (await clients[-1].put(location, params={"digest": digest})).status_code


async def test_chunks_through_several_processes_continue_one_hash(settings) -> None:
    """Each chunk resumes the hash state its predecessor saved in the index, whichever process took it."""
    data = os.urandom(30_000)
    async with running_app(settings) as (_, first), running_app(settings) as (_, second):
        for digest, status in ((digest_of(b"wrong"), 400), (digest_of(data), 201)):
            assert await push_in_chunks([first, second], data, digest) == status
        assert (await first.get(f"/v2/team/app/blobs/{digest_of(data)}")).content == data


async def test_chunks_without_a_saved_hash_state_are_read_again_at_the_end(client, monkeypatch) -> None:
    """Where no hash state could be saved, the final PUT reads the chunks and verifies them."""
    monkeypatch.setattr(Sha256, "available", False)
    data = os.urandom(30_000)
    for digest, status in ((digest_of(b"wrong"), 400), (digest_of(data), 201)):
        assert await push_in_chunks([client], data, digest) == status
    assert (await client.get(f"/v2/team/app/blobs/{digest_of(data)}")).content == data


async def slow_body(first: bytes, release: anyio.Event, second: bytes):
    yield first
    await release.wait()
    yield second


async def test_two_chunks_at_once_never_mix(client, driver) -> None:
    """The first chunk to be recorded counts, whichever started first; the other answers 416 once it
    arrived, and nothing of it is kept. The same on every backend."""
    location = await start(client)
    committed, first_half, second_half = os.urandom(5000), os.urandom(5000), os.urandom(5000)
    assert (await client.patch(location, content=committed)).status_code == 202
    release = anyio.Event()
    answers = {}

    async def slow_patch() -> None:
        answers["slow"] = await client.patch(location, content=slow_body(first_half, release, second_half))

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(slow_patch)
        await anyio.sleep(0.2)
        other = await client.patch(location, content=b"other", headers={"Content-Range": "5000-5004"})
        release.set()
    assert other.status_code == 202 and other.headers["Range"] == "0-5004"
    assert answers["slow"].status_code == 416 and error_codes(answers["slow"]) == ["RANGE_INVALID"]
    assert answers["slow"].headers["Range"] == "0-5004"
    more = os.urandom(3000)
    assert (await client.patch(location, content=more, headers={"Content-Range": "5005-8004"})).status_code == 202
    data = committed + b"other" + more
    assert (await client.put(location, params={"digest": digest_of(data)})).status_code == 201
    assert (await client.get(f"/v2/team/app/blobs/{digest_of(data)}")).content == data
    assert await stored_keys(driver, "uploads/") == []


async def test_a_put_while_a_chunk_streams_in_finishes_with_the_recorded_chunks(client, driver) -> None:
    """The chunk still streaming is not part of the blob; once it arrived, its upload is gone."""
    location = await start(client)
    committed = os.urandom(5000)
    assert (await client.patch(location, content=committed)).status_code == 202
    release = anyio.Event()
    answers = {}

    async def slow_patch() -> None:
        answers["slow"] = await client.patch(location, content=slow_body(b"late", release, b" bytes"))

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(slow_patch)
        await anyio.sleep(0.2)
        finished = await client.put(location, params={"digest": digest_of(committed)})
        release.set()
    assert finished.status_code == 201
    assert answers["slow"].status_code == 404 and error_codes(answers["slow"]) == ["BLOB_UPLOAD_UNKNOWN"]
    assert (await client.get(f"/v2/team/app/blobs/{digest_of(committed)}")).content == committed
    assert await stored_keys(driver, "uploads/") == []


async def test_a_chunk_recorded_while_the_upload_finishes_refuses_the_finish(served, monkeypatch) -> None:
    """The finish checks the upload's size as it forgets it: a chunk recorded meanwhile keeps the
    upload open (the same answer on every backend), and a PUT with the new digest then finishes it."""
    app, client = served
    metadata = app.state.registry.metadata
    location = await start(client)
    data, more = os.urandom(5000), b"recorded meanwhile"
    assert (await client.patch(location, content=data)).status_code == 202
    finish_upload = metadata.finish_upload

    async def chunk_first(upload_id: str, *args):
        r = await client.patch(location, content=more, headers={"Content-Range": f"5000-{5000 + len(more) - 1}"})
        assert r.status_code == 202
        monkeypatch.setattr(metadata, "finish_upload", finish_upload)
        return await finish_upload(upload_id, *args)

    monkeypatch.setattr(metadata, "finish_upload", chunk_first)
    r = await client.put(location, params={"digest": digest_of(data)})
    assert r.status_code == 400 and error_codes(r) == ["BLOB_UPLOAD_INVALID"]
    assert (await client.get(location)).headers["Range"] == f"0-{5000 + len(more) - 1}"


class _CountingCursor:
    """A cursor that counts the rows it hands out into `seen`."""

    def __init__(self, cursor, seen: list[int]):
        self._cursor, self._seen = cursor, seen

    def fetchone(self):
        row = self._cursor.fetchone()
        self._seen[0] += row is not None
        return row

    def fetchall(self):
        rows = self._cursor.fetchall()
        self._seen[0] += len(rows)
        return rows

    def __iter__(self):
        for row in self._cursor:
            self._seen[0] += 1
            yield row

    def __getattr__(self, name):
        return getattr(self._cursor, name)


class _CountingConnection:
    def __init__(self, conn, seen: list[int]):
        self._conn, self._seen = conn, seen

    def execute(self, *args):
        return _CountingCursor(self._conn.execute(*args), self._seen)

    def executemany(self, *args):
        return _CountingCursor(self._conn.executemany(*args), self._seen)


def count_index_rows(monkeypatch, metadata) -> list[int]:
    """From now on, count the rows every index read and write fetches from the database (in [0])."""
    seen = [0]
    for name in ("read", "write"):
        run = getattr(metadata.db, name)
        monkeypatch.setattr(metadata.db, name, lambda fn, run=run: run(lambda c: fn(_CountingConnection(c, seen))))
    return seen


async def test_a_chunk_costs_the_same_however_many_came_before(served, monkeypatch) -> None:
    """A PATCH, and the upload's status, read a fixed number of index rows, not one per earlier chunk."""
    app, client = served
    location = await start(client)
    seen = count_index_rows(monkeypatch, app.state.registry.metadata)

    async def rows_read(request) -> int:
        before = seen[0]
        r = await request
        assert r.status_code in (202, 204), r.text
        return seen[0] - before

    early = [
        await rows_read(client.patch(location, content=b"x", headers={"Content-Range": f"{n}-{n}"})) for n in (0, 1)
    ]
    early_status = await rows_read(client.get(location))
    for n in range(2, 300):
        await client.patch(location, content=b"x", headers={"Content-Range": f"{n}-{n}"})
    late = await rows_read(client.patch(location, content=b"x", headers={"Content-Range": "300-300"}))
    assert late == early[1], (early, late)
    assert await rows_read(client.get(location)) == early_status
    r = await client.put(location, params={"digest": digest_of(b"x" * 301)})
    assert r.status_code == 201, r.text


async def test_what_a_push_leaves_in_the_data_directory_is_private(settings) -> None:
    """Blobs, upload data, the index and its lock file: no other local user may read them, whatever
    the umask."""
    old_umask = os.umask(0o022)
    try:
        async with running_app(settings) as (_, client):
            await push_image(client, "team/app", make_image(layers=2), "v1")
            location = await start(client)
            assert (await client.patch(location, content=b"in progress")).status_code == 202
            assert open_to_others(settings.data_dir) == []
    finally:
        os.umask(old_umask)
