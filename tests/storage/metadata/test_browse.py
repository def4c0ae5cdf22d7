"""storage/metadata/browse.py, the web UI's queries, on SQLite and PostgreSQL: a page of repositories' stats,
tags sorted and paginated with sizes, storage per repository and in all (each blob once) of the repositories
a Visibility shows, read from their index ranges only."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import pytest

from registry.auth.rules import Rules
from registry.rule_syntax import PULL, make_rule
from storage.metadata import (
    DELETING,
    EVERYTHING,
    PRESENT,
    BrowseQueries,
    Connection,
    Cursor,
    Database,
    ManifestRecord,
    Metadata,
    RepositoryUsage,
    StoredTotal,
    Visibility,
    literal_glob,
)
from storage.metadata.browse import NAMES_PER_STATEMENT
from tests.support.counting import DelegatingDatabase

pytestmark = pytest.mark.anyio
T = TypeVar("T")

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


def only(*names: str) -> Visibility:
    """The repositories `names`, as a token granting a list of names shows them."""
    return Visibility(tuple((literal_glob(name), True) for name in names))


async def test_usage_per_repository_and_what_only_it_holds(metadata: Metadata) -> None:
    await image(metadata, "a", D[0], {D[1]: 10, D[2]: 20}, "1")
    await image(metadata, "b", D[3], {D[1]: 10, D[4]: 40}, "1")
    usage = await metadata.browse.usage(EVERYTHING, 0, 10)
    assert usage == (2, [RepositoryUsage("b", 3, 150, 140), RepositoryUsage("a", 3, 130, 120)])
    assert await metadata.browse.usage(only("a"), 0, 10) == (1, [RepositoryUsage("a", 3, 130, 120)])


async def test_stored_totals_count_each_blob_once_over_the_repositories_shown(metadata: Metadata) -> None:
    await image(metadata, "a", D[0], {D[1]: 10, D[2]: 20}, "1")
    await image(metadata, "b", D[3], {D[1]: 10, D[4]: 40}, "1")
    await metadata.link_blob("c", D[6], 1000)
    browse = metadata.browse
    assert await browse.stored_total(EVERYTHING) == StoredTotal(6, 10 + 20 + 40 + 100 + 100 + 1000)
    assert await browse.stored_total(only("a", "b")) == StoredTotal(5, 10 + 20 + 40 + 100 + 100)
    assert await browse.stored_total(only("a")) == StoredTotal(3, 130)
    assert await browse.stored_total(Visibility(())) == StoredTotal(0, 0)
    await metadata.unlink_blob("c", D[6])
    assert await browse.stored_total(EVERYTHING) == StoredTotal(5, 270), "a blob no repository holds is not counted"


async def test_usage_and_totals_of_what_a_users_rules_show(metadata: Metadata) -> None:
    await image(metadata, "alice/app", D[0], {D[1]: 10, D[2]: 20}, "1")
    await metadata.link_blob("alice/tools", D[3], 5)
    await metadata.link_blob("alice/tools", D[4], 7)
    await metadata.link_blob("bob/secret", D[2], 20)  # held by a repository alice does not see
    await metadata.link_blob("bob/secret", D[5], 1000)
    await metadata.db.write(lambda c: c.execute("UPDATE blobs SET state = ? WHERE digest = ?", (DELETING, D[4])))
    await metadata.db.write(
        lambda c: c.execute("INSERT INTO repositories (name, created_at) VALUES ('alice/empty', 0)")
    )
    shown = Rules([make_rule("*", "{user}/**", ["pull"])], {}).visibility("alice", PULL)
    browse = metadata.browse
    # D[2] is in bob/secret too: not alice/app's alone, though alice cannot see where else it is.
    # D[4] is being deleted: not counted. alice/empty holds nothing: left out.
    expected = [RepositoryUsage("alice/app", 3, 130, 110), RepositoryUsage("alice/tools", 1, 5, 5)]
    assert await browse.usage(shown, 0, 10) == (2, expected)
    assert await browse.stored_total(shown) == StoredTotal(4, 135)
    nobody = Rules([make_rule("*", "{user}/**", ["pull"])], {}).visibility("carol", PULL)
    assert await browse.usage(nobody, 0, 10) == (0, []) and await browse.stored_total(nobody) == StoredTotal(0, 0)


async def test_usage_pages_largest_first_ties_by_name(metadata: Metadata) -> None:
    sizes = {"r/e": 10, "r/a": 30, "r/d": 20, "r/b": 20, "r/c": 20, "s/x": 99}
    for i, (name, size) in enumerate(sizes.items()):
        await metadata.link_blob(name, D[i], size)
    shown = Rules([make_rule("*", "r/**", ["pull"])], {}).visibility("alice", PULL)
    pages = [await metadata.browse.usage(shown, offset, 2) for offset in (0, 2, 4, 6)]
    assert [count for count, _ in pages] == [5, 5, 5, 5]
    assert [[u.name for u in rows] for _, rows in pages] == [["r/a", "r/b"], ["r/c", "r/d"], ["r/e"], []]


class Recorded(DelegatingDatabase):
    """`db` with `statements`: the SQL and parameters of every statement its scans ran, in order."""

    def __init__(self, db: Database):
        super().__init__(db)
        self.statements: list[tuple[str, list[Any]]] = []

    async def scan(self, fn: Callable[[Connection], T]) -> T:
        return await self.db.scan(lambda c: fn(_Recording(c, self.statements)))  # type: ignore[arg-type]

    async def read(self, fn: Callable[[Connection], T]) -> T:
        return await self.db.read(lambda c: fn(_Recording(c, self.statements)))  # type: ignore[arg-type]


class _Recording:
    def __init__(self, conn: Connection, statements: list[tuple[str, list[Any]]]):
        self.conn, self.statements = conn, statements

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> Cursor:
        self.statements.append((sql, list(parameters)))
        return self.conn.execute(sql, parameters)


async def walks(metadata: Metadata, sql: str, parameters: list[Any]) -> list[str]:
    """The steps of the statement's plan that read a whole table (or all its blobs of a state)."""
    if metadata.db.dialect == "sqlite":
        plan = await metadata.db.read(lambda c: c.execute("EXPLAIN QUERY PLAN " + sql, parameters).fetchall())
        steps = [str(row[-1]) for row in plan]
        return [s for s in steps if re.match(r"SCAN (repositories|l|b|o)\b", s) or "blobs_by_state" in s]

    def explain(c: Connection) -> list[Any]:
        # A whole table read only where no index can serve, whatever the planner thinks of a small table.
        c.execute("SET LOCAL enable_seqscan = off")
        return c.execute("EXPLAIN " + sql, parameters).fetchall()

    plan = await metadata.db.scan(explain)
    return [str(row[0]) for row in plan if "Seq Scan" in str(row[0])]


async def test_a_storage_page_is_three_statements_reading_the_shown_names_only(metadata: Metadata) -> None:
    names = [f"r{i:04}/app" for i in range(2000)]

    def seed(c: Connection) -> None:
        c.executemany("INSERT INTO repositories (name, created_at) VALUES (?, 0)", [(n,) for n in names])
        c.executemany(
            "INSERT INTO blobs (digest, size, state, created_at, last_used_at) VALUES (?, ?, ?, 0, 0)",
            [(f"sha256:{i:064x}", i + 1, PRESENT) for i in range(len(names) + 1)],
        )
        shared = f"sha256:{len(names):064x}"  # in every repository
        links = [(n, f"sha256:{i:064x}") for i, n in enumerate(names)] + [(n, shared) for n in names]
        c.executemany("INSERT INTO repository_blobs (repository, digest, linked_at) VALUES (?, ?, 0)", links)

    await metadata.db.write(seed)
    if metadata.db.dialect == "postgresql":
        await metadata.db.write(lambda c: c.execute("ANALYZE"))  # SQLite's planner gets no statistics: the worst case
    shown = Rules([make_rule("*", "{user}/**", ["pull"])], {}).visibility("r0042", PULL)
    recorded = Recorded(metadata.db)
    browse = BrowseQueries(recorded)
    shared_size = len(names) + 1
    assert await browse.usage(shown, 0, 100) == (1, [RepositoryUsage("r0042/app", 2, 43 + shared_size, 43)])
    assert await browse.stored_total(shown) == StoredTotal(2, 43 + shared_size)
    assert len(recorded.statements) == 3  # a count, a page, a total
    for sql, parameters in recorded.statements:
        assert await walks(metadata, sql, parameters) == [], sql
    count, rows = await browse.usage(EVERYTHING, 0, 3)
    assert count == len(names) and [u.name for u in rows] == names[::-1][:3]
    # The repositories page's stats of a page of names: index lookups too.
    recorded.statements.clear()
    stats = await browse.repository_stats(names[:50])
    assert len(stats) == 50 and stats["r0042/app"].size == 43 + shared_size
    for sql, parameters in recorded.statements:
        assert await walks(metadata, sql, parameters) == [], sql
