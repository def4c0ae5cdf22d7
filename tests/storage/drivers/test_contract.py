"""One contract, every driver: what each method promises, checked the same way for all of them."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from storage.drivers import Driver, NotFound, Piece
from storage.drivers.local import LocalDriver
from storage.drivers.memory import MemoryDriver
from storage.drivers.s3 import PART_SIZE, S3Driver
from tests.support.backends import S3_BUCKET

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["memory", "local", "s3"])
def driver(request, tmp_path) -> Driver:
    if request.param == "memory":
        return MemoryDriver()
    if request.param == "s3":
        s3 = request.getfixturevalue("seaweed")
        prefix = f"contract-{uuid.uuid4().hex}/"
        return S3Driver(S3_BUCKET, prefix=prefix, endpoint=s3.endpoint, region=s3.region)
    return LocalDriver(str(tmp_path / "root"))


async def collect(iterator) -> bytes:
    return b"".join([chunk async for chunk in iterator])


async def test_put_then_get_and_stat_return_the_bytes(driver: Driver) -> None:
    await driver.put("a/b/c", b"hello")
    assert await driver.get("a/b/c") == b"hello"
    assert (await driver.stat("a/b/c")).size == 5


async def test_put_replaces_an_existing_object(driver: Driver) -> None:
    await driver.put("k", b"old")
    await driver.put("k", b"new!")
    assert await driver.get("k") == b"new!"


async def test_missing_keys_raise_not_found(driver: Driver) -> None:
    with pytest.raises(NotFound):
        await driver.get("missing")
    with pytest.raises(NotFound):
        await driver.stat("missing")
    with pytest.raises(NotFound):
        await collect(driver.reader("missing"))
    with pytest.raises(NotFound):
        await driver.move("missing", "elsewhere")


async def test_reader_streams_ranges(driver: Driver) -> None:
    data = os.urandom(3 << 20)
    await driver.put("big", data)
    assert await collect(driver.reader("big")) == data
    assert await collect(driver.reader("big", 1000, 5000)) == data[1000:6000]
    assert await collect(driver.reader("big", len(data) - 10)) == data[-10:]
    assert await collect(driver.reader("big", 5, 0)) == b""


async def test_writer_is_invisible_until_commit(driver: Driver) -> None:
    writer = await driver.writer("w")
    await writer.write(b"part one, ")
    await writer.write(os.urandom(2 << 20))
    with pytest.raises(NotFound):
        await driver.stat("w")
    size = await writer.commit()
    assert size == writer.size == 10 + (2 << 20)
    assert (await driver.stat("w")).size == size


async def test_cancelled_writer_leaves_nothing_behind(driver: Driver) -> None:
    writer = await driver.writer("w")
    await writer.write(os.urandom(3 << 20))
    await writer.cancel()
    with pytest.raises(NotFound):
        await driver.stat("w")
    assert [e.key async for e in driver.list("")] == []
    if isinstance(driver, LocalDriver):
        assert os.listdir(os.path.join(driver.root, ".tmp")) == []


async def test_move_replaces_destination(driver: Driver) -> None:
    await driver.put("src", b"payload")
    await driver.put("dst/x", b"old")
    await driver.move("src", "dst/x")
    assert await driver.get("dst/x") == b"payload"
    with pytest.raises(NotFound):
        await driver.stat("src")


async def test_delete_is_idempotent_and_removes_prefixes(driver: Driver) -> None:
    await driver.put("up/1/a", b"1")
    await driver.put("up/1/b", b"2")
    await driver.put("up/2/a", b"3")
    await driver.delete("up/1")
    await driver.delete("up/1")
    await driver.delete("never/was")
    assert [e.key async for e in driver.list("up/")] == ["up/2/a"]


async def test_list_is_recursive_sorted_and_filtered_by_prefix(driver: Driver) -> None:
    for key in ["b/2", "a/1", "b/1/x", "c"]:
        await driver.put(key, b"x")
    assert [e.key async for e in driver.list("")] == ["a/1", "b/1/x", "b/2", "c"]
    assert [e.key async for e in driver.list("b/")] == ["b/1/x", "b/2"]


async def test_large_objects_are_written_in_parts_and_cancels_leave_no_parts(driver: Driver) -> None:
    data = os.urandom(2 * PART_SIZE + 12345)
    writer = await driver.writer("big")
    step = (1 << 20) - 7  # pieces that straddle the part boundaries
    for i in range(0, len(data), step):
        await writer.write(data[i : i + step])
    await writer.commit()
    assert await collect(driver.reader("big")) == data
    assert await collect(driver.reader("big", PART_SIZE - 10, 20)) == data[PART_SIZE - 10 : PART_SIZE + 10]
    cancelled = await driver.writer("cancelled")
    await cancelled.write(os.urandom(PART_SIZE + 1))
    await cancelled.cancel()
    with pytest.raises(NotFound):
        await driver.stat("cancelled")
    if isinstance(driver, S3Driver):
        uploads = driver.client.list_multipart_uploads(Bucket=driver.bucket, Prefix=driver.prefix)
        assert uploads.get("Uploads", []) == []


async def append(driver: Driver, key: str, start: int, data: bytes) -> Piece:
    """Append `data` to `key` at `start` in pieces that straddle every alignment; returns the piece."""
    writer = await driver.append(key, start)
    for i in range(0, len(data), 100_003):
        await writer.write(data[i : i + 100_003])
    piece = await writer.commit()
    assert piece == Piece(piece.key, start, len(data)) and writer.size == len(data)
    return piece


async def append_all(driver: Driver, key: str, chunks: list[bytes]) -> list[Piece]:
    pieces = []
    for chunk in chunks:
        pieces.append(await append(driver, key, pieces[-1].end if pieces else 0, chunk))
    return pieces


async def test_appends_sealed_in_order_become_the_object(driver: Driver) -> None:
    chunks = [os.urandom(5000), os.urandom((3 << 20) + 1), b"x", os.urandom(4096)]
    pieces = await append_all(driver, "up/1/data", chunks)
    await driver.put("blobs/b", b"old")
    await driver.seal("up/1/data", pieces, "blobs/b")
    assert await collect(driver.reader("blobs/b")) == b"".join(chunks)
    await driver.delete("up/1")
    assert [e.key async for e in driver.list("")] == ["blobs/b"]


async def test_a_single_append_and_no_append_seal_too(driver: Driver) -> None:
    data = os.urandom(70_000)
    await driver.seal("up/1/data", await append_all(driver, "up/1/data", [data]), "one")
    await driver.seal("up/2/data", [], "empty")
    assert await driver.get("one") == data and await driver.get("empty") == b""


async def test_appends_are_invisible_until_sealed(driver: Driver) -> None:
    writer = await driver.append("up/1/data", 0)
    await writer.write(b"not yet")
    assert [e.key async for e in driver.list("blobs/")] == []
    await writer.commit()
    with pytest.raises(NotFound):
        await driver.stat("blobs/b")


@pytest.mark.parametrize("recorded", ["first", "second"])
async def test_racing_appends_at_one_offset_seal_only_the_recorded_piece(driver: Driver, recorded: str) -> None:
    """Two appends at one offset, at once: each writes where the other cannot overwrite it; the piece
    the caller recorded is sealed byte for byte, the other is discarded."""
    head_data, tail_data = os.urandom(3000), os.urandom(2000)
    (head,) = await append_all(driver, "up/1/data", [head_data])
    first, second = await driver.append("up/1/data", 3000), await driver.append("up/1/data", 3000)
    first_data, second_data = os.urandom(PART_SIZE // 4 + 7), os.urandom(1000)
    await first.write(first_data[:5000])
    await second.write(second_data)
    await first.write(first_data[5000:])
    pieces = {"second": await second.commit(), "first": await first.commit()}
    await (second if recorded == "first" else first).discard()
    kept = pieces[recorded]
    tail = await append(driver, "up/1/data", kept.end, tail_data)
    await driver.seal("up/1/data", [head, kept, tail], "blobs/b")
    kept_data = first_data if recorded == "first" else second_data
    assert await collect(driver.reader("blobs/b")) == head_data + kept_data + tail_data
    await driver.delete("up/1")
    assert [e.key async for e in driver.list("")] == ["blobs/b"]


async def test_a_cancelled_append_leaves_nothing_and_the_offset_stays_free(driver: Driver) -> None:
    (head,) = await append_all(driver, "up/1/data", [b"head"])
    cancelled = await driver.append("up/1/data", 4)
    await cancelled.write(os.urandom(PART_SIZE + 1))
    await cancelled.cancel()
    after = await append(driver, "up/1/data", 4, b" and tail")
    await driver.seal("up/1/data", [head, after], "sealed")
    assert await driver.get("sealed") == b"head and tail"
    if isinstance(driver, S3Driver):
        uploads = driver.client.list_multipart_uploads(Bucket=driver.bucket, Prefix=driver.prefix)
        assert uploads.get("Uploads", []) == []


async def test_a_cancelled_or_discarded_first_append_leaves_nothing(driver: Driver) -> None:
    cancelled = await driver.append("up/1/data", 0)
    await cancelled.write(b"gone")
    await cancelled.cancel()
    discarded = await driver.append("up/2/data", 0)
    await discarded.write(b"gone too")
    await discarded.commit()
    await discarded.discard()
    empty = await driver.append("up/3/data", 0)
    await empty.cancel()
    assert [e.key async for e in driver.list("")] == []


async def test_sealing_a_missing_piece_raises_not_found_and_stores_nothing(driver: Driver) -> None:
    pieces = await append_all(driver, "up/1/data", [os.urandom(1000), os.urandom(1000)])
    await driver.delete("up/1")
    with pytest.raises(NotFound):
        await driver.seal("up/1/data", pieces, "blobs/b")
    with pytest.raises(NotFound):
        await driver.stat("blobs/b")
    assert [e.key async for e in driver.list("")] == []


async def test_pieces_that_do_not_follow_each_other_are_refused(driver: Driver) -> None:
    first, second = await append_all(driver, "up/1/data", [b"ab", b"cd"])
    for pieces in ([second], [second, first], [first, Piece(second.key, 3, 2)]):
        with pytest.raises(ValueError):
            await driver.seal("up/1/data", pieces, "blobs/b")


@pytest.mark.parametrize("sizes", [[5 << 20, 6 << 20, 100], [1 << 20, 100, 2 << 20]], ids=["5MiB+", "small"])
async def test_pieces_of_every_size_are_joined(driver: Driver, sizes: list[int]) -> None:
    """On S3, pieces of 5 MiB or more but the last are joined on the server, smaller ones through
    the registry; each one appended while another one held the data (as racing chunks do)."""
    chunks = [os.urandom(size) for size in sizes]
    holder = await driver.append("up/1/data", 0)
    pieces = await append_all(driver, "up/1/data", chunks)
    await holder.cancel()
    await driver.seal("up/1/data", pieces, "joined")
    assert await collect(driver.reader("joined")) == b"".join(chunks)


async def test_listing_pages_through_many_keys(driver: Driver) -> None:
    keys = [f"many/{i:05d}" for i in range(1100)]
    await asyncio.gather(*(driver.put(k, b"") for k in keys))
    assert [e.key async for e in driver.list("many/")] == keys
    await driver.delete("many")
    assert [e.key async for e in driver.list("many/")] == []


async def test_presigned_urls_serve_the_bytes_without_credentials(driver: Driver) -> None:
    await driver.put("signed", b"presigned bytes")
    url = await driver.url("signed", 60)
    if not isinstance(driver, S3Driver):
        assert url is None
        return
    async with httpx.AsyncClient() as http:
        assert (await http.get(url)).content == b"presigned bytes"
        assert (await http.get(url.split("?")[0])).status_code == 403


def test_local_driver_rejects_keys_that_escape_the_root(tmp_path) -> None:
    driver = LocalDriver(str(tmp_path))
    for key in ["../x", "/abs", "a//b", "a/./b", ".tmp/x", ""]:
        with pytest.raises(ValueError):
            driver._path(key)


# A process that starts writing "victim" (more than one S3 part) and waits to be killed.
DIE_WRITING = """
import asyncio, os, sys
from storage.drivers.local import LocalDriver
from storage.drivers.s3 import PART_SIZE, S3Driver

async def main() -> None:
    kind, where, prefix, endpoint, region = sys.argv[1:6]
    driver = LocalDriver(where) if kind == "local" else S3Driver(where, prefix=prefix, endpoint=endpoint, region=region)
    writer = await driver.writer("victim")
    await writer.write(os.urandom(PART_SIZE + 1))
    print("writing", flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


def die_writing(driver: Driver) -> None:
    """Leave what a writer killed mid-write (kill -9 of its process) leaves in `driver`'s storage."""
    if isinstance(driver, MemoryDriver):
        return  # its writers live and die with the process's memory
    if isinstance(driver, LocalDriver):
        args = ["local", driver.root, "", "", ""]
    else:
        assert isinstance(driver, S3Driver)
        args = ["s3", driver.bucket, driver.prefix, driver.client.meta.endpoint_url, driver.client.meta.region_name]
    process = subprocess.Popen(
        [sys.executable, "-c", DIE_WRITING, *args], stdout=subprocess.PIPE, cwd=Path(__file__).parents[3]
    )
    try:
        assert process.stdout is not None and process.stdout.readline() == b"writing\n"
    finally:
        process.kill()
        process.wait()


async def test_abandoned_lists_and_removes_only_writes_abandoned_before_the_cutoff(driver: Driver) -> None:
    await driver.put("kept", b"committed")
    started = time.time()
    die_writing(driver)
    await asyncio.sleep(1.1)  # S3 keeps times to the second
    expected = 0 if isinstance(driver, MemoryDriver) else 1
    assert [e async for e in driver.abandoned(started - 5)] == []  # it made progress after that cutoff
    listed = [e async for e in driver.abandoned(time.time())]
    assert len(listed) == expected
    assert [e.key for e in listed] == [e.key async for e in driver.abandoned(time.time())]  # listing changes nothing
    removed = [e async for e in driver.abandoned(time.time(), remove=True)]
    assert [e.key for e in removed] == [e.key for e in listed]
    assert [e async for e in driver.abandoned(time.time() + 60)] == []
    assert [e.key async for e in driver.list("")] == ["kept"] and await driver.get("kept") == b"committed"
    if isinstance(driver, S3Driver):
        uploads = driver.client.list_multipart_uploads(Bucket=driver.bucket, Prefix=driver.prefix)
        assert uploads.get("Uploads", []) == []


async def test_a_write_in_progress_is_never_abandoned_on_disk_whatever_its_age(driver: Driver) -> None:
    if not isinstance(driver, LocalDriver):
        pytest.skip("on S3 a write shows progress by its parts only; memory keeps no leftovers")
    writer = await driver.writer("slow")
    await writer.write(b"first bytes, then a long pause")
    old = time.time() - 7 * 24 * 3600
    for name in os.listdir(os.path.join(driver.root, ".tmp")):
        os.utime(os.path.join(driver.root, ".tmp", name), (old, old))
    assert [e async for e in driver.abandoned(time.time() + 60, remove=True)] == []
    await writer.write(b" and the rest")
    await writer.commit()
    assert await driver.get("slow") == b"first bytes, then a long pause and the rest"
    assert [e async for e in driver.abandoned(time.time() + 60)] == []


async def test_a_live_write_swept_as_abandoned_commits_whole_or_fails_storing_nothing(driver: Driver) -> None:
    data = os.urandom(PART_SIZE + 1000)
    writer = await driver.writer("live")
    await writer.write(data[: PART_SIZE + 1])
    await asyncio.sleep(1.1)  # S3 keeps times to the second
    swept = [e async for e in driver.abandoned(time.time() + 60, remove=True)]
    await writer.write(data[PART_SIZE + 1 :])
    try:
        await writer.commit()
    except NotFound:
        assert isinstance(driver, S3Driver) and len(swept) == 1  # only S3 cannot tell a live write
        with pytest.raises(NotFound):
            await driver.stat("live")
    else:
        assert swept == [] and await collect(driver.reader("live")) == data
