"""storage/metadata/browse.py, the web UI's queries, on SQLite and PostgreSQL: a page of repositories' stats,
tags sorted and paginated with sizes, storage per repository and in all (each blob once)."""

from __future__ import annotations

import time

import pytest

from storage.metadata import ManifestRecord, Metadata, RepositoryUsage, StoredTotal
from storage.metadata.browse import NAMES_PER_STATEMENT

pytestmark = pytest.mark.anyio

IMAGE = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"
D = ["sha256:" + f"{i:x}" * 64 for i in range(1, 15)]  # D[0] ... D[13]: distinct digests


async def image(metadata: Metadata, repository: str, digest: str, blobs: dict[str, int], tag: str | None) -> None:
    """A 100-byte image manifest `digest` over `blobs` (digest -> size), linked first, tagged `tag`."""
    for blob, size in blobs.items():
        await metadata.link_blob(repository, blob, size)
    await metadata.put_manifest(repository, ManifestRecord(digest, IMAGE, 100), blobs, {}, tag)


async def test_stats_of_a_page_of_repositories(metadata: Metadata) -> None:
    await image(metadata, "a", D[0], {D[1]: 10, D[2]: 20}, "1")
    await image(metadata, "a", D[3], {D[1]: 10, D[4]: 5}, "2")  # D[1] shared by both images: counted once
    await image(metadata, "b", D[5], {D[1]: 10}, None)  # no tag
    stats = await metadata.browse.repository_stats(["a", "b", "missing"])
    assert set(stats) == {"a", "b"}
    assert (stats["a"].tags, stats["a"].size, stats["a"].description) == (2, 10 + 20 + 5 + 100 + 100, None)
    assert stats["a"].last_push is not None and abs(stats["a"].last_push - time.time()) < 60
    assert (stats["b"].tags, stats["b"].last_push, stats["b"].size) == (0, None, 110)
    assert await metadata.browse.repository_stats([]) == {}


async def test_stats_of_more_names_than_one_statement_binds(metadata: Metadata) -> None:
    names = [f"r{i:04d}" for i in range(NAMES_PER_STATEMENT + 20)]
    await metadata.db.write(
        lambda c: c.executemany("INSERT INTO repositories (name, created_at) VALUES (?, 0)", [(n,) for n in names])
    )
    stats = await metadata.browse.repository_stats(names)
    assert sorted(stats) == names and {s.tags for s in stats.values()} == {0}


async def test_tags_sorted_by_name_or_push_time_in_pages(metadata: Metadata) -> None:
    await image(metadata, "a", D[0], {D[1]: 10}, None)
    pushed = {"b": 3.0, "a": 1.0, "c": 2.0, "d": 2.0}
    await metadata.db.write(
        lambda c: c.executemany(
            "INSERT INTO tags (repository, name, digest, updated_at) VALUES ('a', ?, ?, ?)",
            [(name, D[0], at) for name, at in pushed.items()],
        )
    )
    browse = metadata.browse
    assert await browse.tag_count("a") == 4 and await browse.tag_count("none") == 0
    names = [t.name for t in await browse.tags("a", "name", False, 0, 10)]
    assert names == ["a", "b", "c", "d"]
    assert [t.name for t in await browse.tags("a", "name", True, 1, 2)] == ["c", "b"]
    assert [t.name for t in await browse.tags("a", "pushed", False, 0, 10)] == ["a", "c", "d", "b"]
    assert [t.name for t in await browse.tags("a", "pushed", True, 0, 10)] == ["b", "d", "c", "a"]
    assert await browse.tags("a", "pushed", True, 4, 10) == []
    row = (await browse.tags("a", "name", False, 0, 1))[0]
    assert (row.digest, row.media_type, row.pushed_at, row.size) == (D[0], IMAGE, 1.0, 10)
    with pytest.raises(KeyError):
        await browse.tags("a", "digest; DROP TABLE tags", False, 0, 1)


async def test_an_index_tag_counts_the_blobs_of_its_platforms_once(metadata: Metadata) -> None:
    await image(metadata, "m", D[0], {D[1]: 10, D[2]: 20}, None)
    await image(metadata, "m", D[3], {D[1]: 10, D[4]: 40}, None)
    await metadata.put_manifest("m", ManifestRecord(D[5], INDEX, 300), {}, {D[0]: 100, D[3]: 100}, "multi")
    (row,) = await metadata.browse.tags("m", "name", False, 0, 10)
    assert (row.name, row.media_type, row.size) == ("multi", INDEX, 10 + 20 + 40)


async def test_usage_per_repository_and_what_only_it_holds(metadata: Metadata) -> None:
    await image(metadata, "a", D[0], {D[1]: 10, D[2]: 20}, "1")
    await image(metadata, "b", D[3], {D[1]: 10, D[4]: 40}, "1")
    usage = await metadata.browse.usage()
    assert usage == [RepositoryUsage("a", 3, 130, 120), RepositoryUsage("b", 3, 150, 140)]


async def test_stored_totals_count_each_blob_once_over_the_repositories_named(metadata: Metadata) -> None:
    await image(metadata, "a", D[0], {D[1]: 10, D[2]: 20}, "1")
    await image(metadata, "b", D[3], {D[1]: 10, D[4]: 40}, "1")
    await metadata.link_blob("c", D[6], 1000)
    browse = metadata.browse
    assert await browse.stored_total(None) == StoredTotal(6, 10 + 20 + 40 + 100 + 100 + 1000)
    assert await browse.stored_total(["a", "b"]) == StoredTotal(5, 10 + 20 + 40 + 100 + 100)
    assert await browse.stored_total(["a"]) == StoredTotal(3, 130)
    assert await browse.stored_total([]) == StoredTotal(0, 0)
    await metadata.unlink_blob("c", D[6])
    assert await browse.stored_total(None) == StoredTotal(5, 270), "a blob no repository holds is not counted"
