"""The local driver beyond the common contract: direct I/O at every alignment, and appenders."""

from __future__ import annotations

import os

import pytest

from storage.drivers import Busy, NotFound
from storage.drivers.local import ALIGN, PIECE, LocalDriver
from tests.support.app import open_to_others, stored_keys

pytestmark = pytest.mark.anyio

SIZES = [1, ALIGN - 1, ALIGN + 1, 3, PIECE + 3, 2 * ALIGN, PIECE - 7, 100_000]


@pytest.fixture(params=["direct", "buffered"])
def driver(request, tmp_path) -> LocalDriver:
    driver = LocalDriver(str(tmp_path / "storage"))
    if request.param == "direct" and not driver._direct:
        pytest.skip("this filesystem refuses O_DIRECT")
    driver._direct = request.param == "direct"
    return driver


async def test_writes_of_every_size_and_alignment_read_back_exactly(driver: LocalDriver) -> None:
    pieces = [os.urandom(size) for size in SIZES]
    writer = await driver.writer("blobs/a")
    for piece in pieces:
        await writer.write(piece)
    assert await writer.commit() == sum(SIZES)
    assert await driver.get("blobs/a") == b"".join(pieces)
    assert os.listdir(os.path.join(driver.root, ".tmp")) == []


async def test_chunks_appended_at_unaligned_offsets_become_the_object_on_seal(driver: LocalDriver) -> None:
    chunks = [os.urandom(size) for size in (5000, PIECE + 100, 3, ALIGN)]
    offset = 0
    async with driver.appender("uploads/u/data", create=True) as data:
        for chunk in chunks:
            writer = data.writer(offset)
            await writer.write(chunk)
            offset += await writer.commit()
        await data.seal(offset, "blobs/b")
    assert await driver.get("blobs/b") == b"".join(chunks)
    with pytest.raises(NotFound):
        await driver.stat("uploads/u/data")


async def test_a_chunk_rewritten_or_cancelled_leaves_only_committed_bytes(driver: LocalDriver) -> None:
    first, second = os.urandom(10_000), os.urandom(10)
    async with driver.appender("uploads/u/data", create=True) as data:
        writer = data.writer(0)
        await writer.write(first)
        await writer.commit()
        writer = data.writer(5000)  # a retried chunk replaces what followed it
        await writer.write(second)
        await writer.commit()
        assert await driver.get("uploads/u/data") == first[:5000] + second
        cancelled = data.writer(5010)
        await cancelled.write(os.urandom(PIECE + 1))
        await cancelled.cancel()
        await data.seal(5010, "blobs/c")
    assert await driver.get("blobs/c") == first[:5000] + second


async def test_one_appender_at_a_time(driver: LocalDriver) -> None:
    async with driver.appender("uploads/u/data", create=True):
        with pytest.raises(Busy):
            async with driver.appender("uploads/u/data", create=True):
                pass
    async with driver.appender("uploads/u/data", create=False):
        pass


async def test_an_appender_of_a_missing_object_needs_create(driver: LocalDriver) -> None:
    with pytest.raises(NotFound):
        async with driver.appender("uploads/missing/data", create=False):
            pass


async def test_a_cancelled_commit_returns_only_after_its_thread_finished(driver: LocalDriver, monkeypatch) -> None:
    """Else the descriptor could close (and its number be reused) while a worker thread still writes."""
    import asyncio
    import time

    from storage.drivers.local import _File

    finished = []
    pwrite = _File.pwrite

    def slow_pwrite(self, *args) -> None:
        time.sleep(0.3)
        pwrite(self, *args)
        finished.append(True)

    monkeypatch.setattr(_File, "pwrite", slow_pwrite)
    writer = await driver.writer("blobs/slow")
    await writer.write(b"x" * 1000)
    commit = asyncio.ensure_future(writer.commit())
    await asyncio.sleep(0.05)
    commit.cancel()
    with pytest.raises(asyncio.CancelledError):
        await commit
    assert finished == [True]


async def test_what_the_driver_creates_is_private_to_its_user(tmp_path) -> None:
    """Files 0600 and directories 0700, whatever the umask: layers may be private."""
    old_umask = os.umask(0o022)
    try:
        driver = LocalDriver(str(tmp_path / "data" / "storage"))
        await driver.put("blobs/sha256/aa/aaa", b"put")
        writer = await driver.writer("blobs/sha256/bb/bbb", durable=False)
        await writer.write(b"written")
        await writer.commit()
        async with driver.appender("uploads/u/data", create=True) as data:
            writer = data.writer(0)
            await writer.write(b"appended")
            await writer.commit()
            await data.seal(8, "blobs/sha256/cc/ccc")
        await driver.put("uploads/v/0", b"a")
        await driver.put("uploads/v/1", b"b")
        await driver.concat(["uploads/v/0", "uploads/v/1"], "blobs/sha256/dd/ddd")
        await driver.move("uploads/v/0", "blobs/sha256/ee/eee")
        async with driver.appender("uploads/w/data", create=True):
            assert open_to_others(str(tmp_path / "data")) == []
    finally:
        os.umask(old_umask)
    assert open_to_others(str(tmp_path / "data")) == []
    assert len(await stored_keys(driver, "blobs/")) == 5


async def test_an_existing_storage_root_is_made_private(tmp_path) -> None:
    """Blobs stored by earlier versions (0644 in 0755 directories) are no longer reachable by others."""
    root = tmp_path / "storage"
    (root / "blobs").mkdir(parents=True, mode=0o755)
    (root / "blobs" / "old").write_bytes(b"old")
    os.chmod(root, 0o755)
    LocalDriver(str(root))
    assert os.stat(root).st_mode & 0o777 == 0o700
