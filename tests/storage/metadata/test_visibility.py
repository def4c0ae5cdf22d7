"""storage/metadata/visibility.py on SQLite and PostgreSQL: the access rules compiled to SQL give the
same names as the rules checked in Python (registry/auth/rules.py), page by page, and read one index
range per query."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from registry.auth.rules import Rules
from registry.rule_syntax import PULL, make_rule
from storage.metadata import EVERYTHING, Connection, Metadata, Visibility, literal_glob, parse_glob
from storage.metadata.visibility import MAX_RANGES, listing_sql
from tests.support.counting import counted, uncounted

pytestmark = pytest.mark.anyio
T = TypeVar("T")

USERS = [None, "alice", "bob", "a*b"]  # a user whose name holds a wildcard, for `{user}`
GROUPS = {"g": ["alice", "a*b"]}
# Characters that are glob wildcards, GLOB, LIKE and regex specials, a path separator, a character above
# ASCII, a newline: the SQL must treat each as the Python check does.
NAME_CHARS = "ab/-._*?[]%\\é\n"
names_strategy = st.lists(st.text(NAME_CHARS, min_size=1, max_size=7), max_size=25, unique=True)
pattern_strategy = st.lists(
    st.one_of(st.text("ab/.%_?[\\é", max_size=3), st.sampled_from(["*", "**", "{user}", "/"])), max_size=5
).map("".join)
rule_strategy = st.tuples(
    st.sampled_from(["*", "anonymous", "alice", "bob", "group:g", "a*b"]),
    pattern_strategy.filter(bool),
    st.sampled_from([["pull"], ["push"], ["*"], ["delete", "push"]]),
)


async def _seed(metadata: Metadata, names: Iterable[str]) -> None:
    def seed(c: Connection) -> None:
        c.execute("DELETE FROM repositories")
        c.executemany("INSERT INTO repositories (name, created_at) VALUES (?, 0)", [(n,) for n in names])

    await metadata.db.write(seed)


async def _walk(metadata: Metadata, shown: Visibility, limit: int) -> list[str]:
    """Every name `shown` shows, by pages of `limit` as the catalog pages (`last` = the page's end)."""
    found: list[str] = []
    while True:
        page = await metadata.list_repositories(found[-1] if found else "", limit + 1, shown)
        found += page[:limit]
        if len(page) <= limit:
            return found


@st.composite
def rules_and_names(draw: st.DrawFn) -> tuple[list[tuple[str, str, list[str]]], list[str]]:
    """Rules, and names: some random, most made from the rules' patterns (each wildcard and `{user}`
    filled with random text), so that rules match some names and miss others by a character."""
    rules = draw(st.lists(rule_strategy, max_size=6))
    names = set(draw(names_strategy))
    for _, pattern, _ in rules:
        for _ in range(draw(st.integers(0, 4))):
            filled = [
                draw(st.sampled_from(["alice", "bob", "a*b", "ab/"]))
                if part == "{user}"
                else draw(st.text(NAME_CHARS, max_size=3))
                if part in ("*", "**")
                else part
                for part in re.split(r"(\{user\}|\*\*|\*)", pattern)
            ]
            names.add("".join(filled) or "a")
    return rules, sorted(names)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(drawn=rules_and_names(), limit=st.integers(1, 4), term=st.text("ab/._%", max_size=2))
async def test_the_sql_shows_exactly_what_the_rules_let_pull(
    metadata: Metadata, drawn: tuple[list[tuple[str, str, list[str]]], list[str]], limit: int, term: str
) -> None:
    rules, names = drawn
    checked = Rules([make_rule(*rule) for rule in rules], GROUPS)
    await _seed(metadata, names)
    for user in USERS:
        shown = checked.visibility(user, PULL)
        expected = sorted(n for n in names if PULL in checked.actions(user, n))
        assert await metadata.list_repositories("", None, shown) == expected, (user, shown)
        assert await _walk(metadata, shown, limit) == expected, (user, shown)
        searched = [n for n in expected if term.lower() in n.lower()]
        total, page = await metadata.search_repositories(term, shown, limit, limit)
        assert total == len(searched)
        assert [name for name, _ in page] == searched[limit : 2 * limit]


def test_a_star_next_to_two_folds_into_them() -> None:
    assert parse_glob("a/*") == ("a/", "*", "")
    assert parse_glob("a/***") == ("a/", "**", "")
    assert parse_glob("a/*/**") == ("a/", "*", "/", "**", "")
    assert parse_glob("***x") == ("", "**", "x")
    assert parse_glob("a") == ("a",)


async def test_a_namespace_hidden_before_everything_shown_is_left_out_of_the_ranges(metadata: Metadata) -> None:
    names = ["a/x", "secret", "secret/a", "secret/b/c", "secret0", "secrets/x", "z"]
    await _seed(metadata, names)
    rules = Rules([make_rule("*", "secret/**", ["push"]), make_rule("*", "**", ["pull"])], {})
    shown = rules.visibility("alice", PULL)
    assert shown.ranges() == [("", "secret/"), ("secret0", None)] and shown.indexed
    assert await metadata.list_repositories("", None, shown) == ["a/x", "secret", "secret0", "secrets/x", "z"]
    assert await _walk(metadata, shown, 1) == ["a/x", "secret", "secret0", "secrets/x", "z"]


async def test_more_literal_names_than_ranges_in_a_query_are_all_shown(metadata: Metadata) -> None:
    names = [f"team/app{i:03}" for i in range(300)]
    await _seed(metadata, names)
    granted = names[::3]  # as a token of another issuer grants: a list of names
    shown = Visibility(tuple((literal_glob(name), True) for name in granted))
    assert len(shown.ranges()) <= MAX_RANGES
    assert await metadata.list_repositories("", None, shown) == granted
    assert await _walk(metadata, shown, 7) == granted


async def test_a_catalog_page_is_one_statement_however_few_names_are_shown(metadata: Metadata) -> None:
    names = [f"r{i:05}/app" for i in range(20_000)] + ["zz/app"]
    await _seed(metadata, names)
    counter = counted(metadata)
    try:
        shown = Rules([make_rule("*", "{user}/**", ["pull"])], {}).visibility("zz", PULL)
        assert await metadata.list_repositories("", 101, shown) == ["zz/app"]
        assert len(counter.statements) == 1
        assert await metadata.list_repositories("", 101, EVERYTHING) == names[:101]
        assert len(counter.statements) == 2
    finally:
        uncounted(metadata)


async def test_a_page_is_a_range_scan_of_the_name_index(metadata: Metadata) -> None:
    await _seed(metadata, [f"r{i:04}/app" for i in range(2000)])
    rules = Rules([make_rule("*", "public/**", ["push"]), make_rule("*", "{user}/**", ["pull"])], {})
    sql, params = listing_sql(rules.visibility("r0042", PULL), metadata.db.dialect, "", 101) or ("", [])
    if metadata.db.dialect == "sqlite":
        plan = await metadata.db.read(lambda c: c.execute("EXPLAIN QUERY PLAN " + sql, params).fetchall())
        details = " ".join(str(row[-1]) for row in plan)
        assert "SEARCH repositories USING COVERING INDEX sqlite_autoindex_repositories_1 (name>? AND name<?)" in details
    else:
        plan = await metadata.db.read(lambda c: c.execute("EXPLAIN " + sql, params).fetchall())
        details = " ".join(str(row[0]) for row in plan)
        assert "Seq Scan" not in details  # an index scan (or a bitmap of one), of the rule's range only
        assert "Index Cond: ((name >= 'r0042/'::text) AND (name < 'r00420'::text)" in details
