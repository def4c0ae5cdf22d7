"""The local driver beyond the common contract: direct I/O at every alignment, and appends into one file."""

from __future__ import annotations

import os

import pytest

from storage.drivers import NotFound, Piece
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


async def append(driver: LocalDriver, start: int, data: bytes, key: str = "uploads/u/data") -> Piece:
    writer = await driver.append(key, start)
    await writer.write(data)
    return await writer.commit()


async def test_chunks_appended_at_unaligned_offsets_go_into_one_file_that_the_seal_renames(
    driver: LocalDriver,
) -> None:
    chunks = [os.urandom(size) for size in (5000, PIECE + 100, 3, ALIGN)]
    pieces = []
    for chunk in chunks:
        pieces.append(await append(driver, pieces[-1].end if pieces else 0, chunk))
    assert {piece.key for piece in pieces} == {"uploads/u/data"}
    data_file = os.stat(os.path.join(driver.root, "uploads", "u", "data"))
    await driver.seal("uploads/u/data", pieces, "blobs/b")
    assert await driver.get("blobs/b") == b"".join(chunks)
    assert os.stat(os.path.join(driver.root, "blobs", "b")).st_ino == data_file.st_ino  # no byte copied
    with pytest.raises(NotFound):
        await driver.stat("uploads/u/data")


async def test_an_append_never_writes_into_the_file_while_another_holds_it(driver: LocalDriver) -> None:
    head = await append(driver, 0, b"head")
    holder = await driver.append("uploads/u/data", 4)
    await holder.write(b"held")
    racer = await append(driver, 4, b"racer")
    assert racer.key != "uploads/u/data"  # a piece file of its own
    held = await holder.commit()
    await holder.discard()  # the racer was recorded: the file is cut back
    assert os.path.getsize(os.path.join(driver.root, "uploads", "u", "data")) == 4
    tail = await append(driver, 9, b"tail")
    assert tail.key != "uploads/u/data"  # the file ends at 4, not 9: never written past a gap
    await driver.seal("uploads/u/data", [head, racer, tail], "blobs/b")
    assert await driver.get("blobs/b") == b"headracertail"
    assert held.key == "uploads/u/data"


async def test_a_seal_while_an_append_holds_the_file_copies_and_leaves_it(driver: LocalDriver) -> None:
    head = await append(driver, 0, b"recorded")
    late = await driver.append("uploads/u/data", 8)
    await late.write(b" late")
    await driver.seal("uploads/u/data", [head], "blobs/b")
    await late.commit()
    assert await driver.get("blobs/b") == b"recorded"
    assert await driver.get("uploads/u/data") == b"recorded late"


async def test_a_cancelled_append_cuts_the_file_back(driver: LocalDriver) -> None:
    first = os.urandom(10_000)
    head = await append(driver, 0, first)
    cancelled = await driver.append("uploads/u/data", 10_000)
    await cancelled.write(os.urandom(PIECE + 1))
    await cancelled.cancel()
    assert os.path.getsize(os.path.join(driver.root, "uploads", "u", "data")) == 10_000
    second = await append(driver, 10_000, b"again")
    assert second.key == "uploads/u/data"
    await driver.seal("uploads/u/data", [head, second], "blobs/c")
    assert await driver.get("blobs/c") == first + b"again"


async def test_a_data_file_shorter_than_its_pieces_is_not_found(driver: LocalDriver) -> None:
    """What a power loss could leave of bytes not yet synced: never sealed as if whole."""
    piece = await append(driver, 0, b"0123456789")
    os.truncate(os.path.join(driver.root, "uploads", "u", "data"), 5)
    with pytest.raises(NotFound):
        await driver.seal("uploads/u/data", [piece], "blobs/d")
    with pytest.raises(NotFound):
        await driver.stat("blobs/d")


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
        piece = await append(driver, 0, b"appended")
        await driver.seal("uploads/u/data", [piece], "blobs/sha256/cc/ccc")
        holder = await driver.append("uploads/v/data", 0)
        await holder.write(b"a")
        racer = await append(driver, 0, b"b", "uploads/v/data")
        await driver.seal("uploads/v/data", [racer], "blobs/sha256/dd/ddd")
        await driver.put("uploads/w/x", b"x")
        await driver.move("uploads/w/x", "blobs/sha256/ee/eee")
        assert open_to_others(str(tmp_path / "data")) == []
        await holder.cancel()
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
