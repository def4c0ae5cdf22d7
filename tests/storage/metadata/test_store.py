"""The metadata store on SQLite: transactions, conditional appends, schema versions."""

from __future__ import annotations

import sqlite3

import pytest

from storage.metadata import Chunk, ManifestRecord, Metadata, MissingReferences, SQLiteDatabase, Upload
from storage.metadata.schema import MIGRATIONS, SCHEMA_VERSION

pytestmark = pytest.mark.anyio

D = ["sha256:" + str(i) * 64 for i in range(1, 6)]


async def test_opening_twice_applies_the_schema_once(tmp_path) -> None:
    for _ in range(2):
        metadata = Metadata(SQLiteDatabase(str(tmp_path / "i.db")))
        await metadata.open()
        await metadata.close()
    versions = sqlite3.connect(tmp_path / "i.db").execute("SELECT version FROM schema_version").fetchall()
    assert versions == [(v,) for v in range(1, SCHEMA_VERSION + 1)]


async def test_a_newer_schema_is_refused(tmp_path) -> None:
    conn = sqlite3.connect(tmp_path / "i.db")
    conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    conn.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION + 1,))
    conn.commit()
    with pytest.raises(RuntimeError, match="schema version"):
        await Metadata(SQLiteDatabase(str(tmp_path / "i.db"))).open()


async def test_put_manifest_with_missing_references_changes_nothing(metadata: Metadata) -> None:
    await metadata.link_blob("r", D[0], 10)
    record = ManifestRecord(D[2], "application/vnd.oci.image.manifest.v1+json", 100)
    with pytest.raises(MissingReferences) as e:
        await metadata.put_manifest("r", record, {D[0]: 10, D[1]: 5}, {D[3]: 7}, "v1")
    assert e.value.missing == [D[1], D[3]]
    assert await metadata.get_manifest("r", D[2]) is None
    assert await metadata.list_tags("r", "", None) == []
    assert await metadata.blob_size("r", D[2]) is None


async def test_put_manifest_reports_wrong_sizes(metadata: Metadata) -> None:
    await metadata.link_blob("r", D[0], 10)
    record = ManifestRecord(D[2], "application/vnd.oci.image.manifest.v1+json", 100)
    with pytest.raises(MissingReferences) as e:
        await metadata.put_manifest("r", record, {D[0]: 11}, {}, None)
    assert (e.value.missing, e.value.wrong_size) == ([], [D[0]])


async def test_put_manifest_reports_children_listed_with_another_size(metadata: Metadata) -> None:
    await metadata.put_manifest(
        "r", ManifestRecord(D[4], "application/vnd.oci.image.manifest.v1+json", 9), {}, {}, None
    )
    record = ManifestRecord(D[2], "application/vnd.oci.image.index.v1+json", 100)
    with pytest.raises(MissingReferences) as e:
        await metadata.put_manifest("r", record, {}, {D[4]: 10}, None)
    assert (e.value.missing, e.value.wrong_size) == ([], [D[4]])
    assert await metadata.get_manifest("r", D[2]) is None


async def test_check_references_refuses_what_put_manifest_would_without_writing(metadata: Metadata) -> None:
    await metadata.link_blob("r", D[0], 10)
    await metadata.put_manifest(
        "r", ManifestRecord(D[4], "application/vnd.oci.image.manifest.v1+json", 9), {}, {}, None
    )
    with pytest.raises(MissingReferences) as e:
        await metadata.check_references("r", {D[0]: 11, D[1]: 5}, {D[3]: 1, D[4]: 9})
    assert (e.value.missing, e.value.wrong_size) == ([D[1], D[3]], [D[0]])
    await metadata.check_references("r", {D[0]: 10}, {D[4]: 9})
    assert await metadata.list_repositories("", None) == ["r"]


async def test_chunks_append_only_at_the_current_size(metadata: Metadata) -> None:
    await metadata.create_upload("u1", "r")
    assert await metadata.add_chunk("u1", Chunk(0, 10, "k0", D[0]))
    assert not await metadata.add_chunk("u1", Chunk(0, 10, "k0b", D[0]))
    assert not await metadata.add_chunk("u1", Chunk(20, 10, "k2", D[0]))
    assert await metadata.add_chunk("u1", Chunk(10, 5, "k1", D[1]))
    upload = await metadata.get_upload("u1")
    assert upload is not None and (upload.size, upload.hash_state) == (15, D[1])
    assert [c.key for c in await metadata.upload_chunks("u1")] == ["k0", "k1"]
    assert not await metadata.add_chunk("missing", Chunk(0, 1, "k", D[0]))


async def test_uploads_started_before_schema_5_keep_their_last_hash_state(tmp_path) -> None:
    """Upgrading moves the hash state of each open upload's last chunk onto the upload."""
    path = str(tmp_path / "old.db")
    conn = sqlite3.connect(path)
    for migration in MIGRATIONS[:4]:
        for statement in migration:
            if isinstance(statement, str):
                conn.execute(statement)
    conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    conn.executemany("INSERT INTO schema_version VALUES (?)", [(v,) for v in range(1, 5)])
    conn.executemany("INSERT INTO uploads VALUES (?, 'r', ?, 0, 0)", [("u1", 15), ("u2", 0)])
    conn.executemany("INSERT INTO upload_chunks VALUES ('u1', ?, ?, ?, ?)", [(10, 5, "k1", D[1]), (0, 10, "k0", D[0])])
    conn.commit()
    conn.close()
    metadata = Metadata(SQLiteDatabase(path))
    await metadata.open()
    try:
        assert await metadata.get_upload("u1") == Upload("u1", "r", 15, 0, 0, D[1])
        assert await metadata.get_upload("u2") == Upload("u2", "r", 0, 0, 0, "")
    finally:
        await metadata.close()


async def test_finish_upload_links_the_blob_and_forgets_the_upload(metadata: Metadata) -> None:
    await metadata.create_upload("u1", "r")
    await metadata.add_chunk("u1", Chunk(0, 10, "k0", D[0]))
    await metadata.finish_upload("u1", "r", D[0], 10)
    assert await metadata.get_upload("u1") is None
    assert await metadata.blob_size("r", D[0]) == 10
    assert await metadata.list_repositories("", None) == ["r"]


async def test_listings_are_in_byte_order_whatever_the_locale(metadata: Metadata) -> None:
    for name in ["b/x", "B/x", "a-b/x", "a_b/x", "a/x", "ab/x"]:
        await metadata.link_blob(name.lower(), "sha256:" + "1" * 64, 1)
    names = await metadata.list_repositories("", None)
    assert names == sorted(names) and names == sorted(set(n.lower() for n in ["b/x", "a-b/x", "a_b/x", "a/x", "ab/x"]))


async def test_concurrent_writes_share_commits_but_fail_alone(tmp_path) -> None:
    """Writes queued together commit together; one that raises undoes only its own changes."""
    import asyncio

    db = SQLiteDatabase(str(tmp_path / "g.db"))
    await db.open()

    def insert(n: int):
        def run(c) -> int:
            c.execute("INSERT INTO repositories (name, created_at) VALUES (?, 0)", (f"r{n}",))
            if n % 5 == 0:
                raise ValueError(n)
            return n

        return run

    results = await asyncio.gather(*(db.write(insert(n)) for n in range(50)), return_exceptions=True)
    assert [isinstance(r, ValueError) for r in results] == [n % 5 == 0 for n in range(50)]
    names = await db.read(lambda c: {row[0] for row in c.execute("SELECT name FROM repositories")})
    assert names == {f"r{n}" for n in range(50) if n % 5}
    await db.close()


def _write_repositories(path: str, first: int, count: int) -> None:
    """In a process of its own: open the database and insert `count` repositories, 8 writes at a time."""
    import asyncio

    async def run() -> None:
        db = SQLiteDatabase(path)
        await db.open()

        def insert(n: int):
            return lambda c: c.execute("INSERT INTO repositories (name, created_at) VALUES (?, 0)", (f"p{n}",))

        for start in range(first, first + count, 8):
            await asyncio.gather(*(db.write(insert(n)) for n in range(start, min(start + 8, first + count))))
        await db.close()

    asyncio.run(run())


def test_processes_sharing_the_file_take_turns_at_writing(tmp_path) -> None:
    """Writers of several processes wait for each other's commits (never 'database is locked')."""
    import multiprocessing

    path = str(tmp_path / "shared.db")
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_write_repositories, args=(path, n * 400, 400)) for n in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert [worker.exitcode for worker in workers] == [0, 0, 0]
    names = {row[0] for row in sqlite3.connect(path).execute("SELECT name FROM repositories")}
    assert names == {f"p{n}" for n in range(1200)}


async def test_a_write_waits_while_another_process_holds_the_write_lock(tmp_path) -> None:
    import asyncio
    import fcntl
    import os

    db = SQLiteDatabase(str(tmp_path / "locked.db"))
    await db.open()
    fd = os.open(str(tmp_path / "locked.db.write-lock"), os.O_RDWR)  # as another process would
    fcntl.flock(fd, fcntl.LOCK_EX)
    insert = "INSERT INTO repositories (name, created_at) VALUES ('w', 0)"
    write = asyncio.ensure_future(db.write(lambda c: c.execute(insert)))
    await asyncio.sleep(0.3)
    assert not write.done()
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)
    await asyncio.wait_for(write, 5)
    assert await db.read(lambda c: c.execute("SELECT name FROM repositories").fetchall()) == [("w",)]
    await db.close()


async def test_an_existing_database_file_is_made_private(tmp_path) -> None:
    """A database file created by an earlier version (0644) is no longer readable by other local users."""
    import os

    path = tmp_path / "old.db"
    sqlite3.connect(path).close()
    os.chmod(path, 0o644)
    metadata = Metadata(SQLiteDatabase(str(path)))
    await metadata.open()
    await metadata.close()
    assert [os.stat(p).st_mode & 0o777 for p in (path, f"{path}.write-lock")] == [0o600, 0o600]
