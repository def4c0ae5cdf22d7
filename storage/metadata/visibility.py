"""Which repository names a caller may see, as the index filters them: a decision list of globs turned
into SQL, so that a filtered listing reads one index range per glob instead of walking every name.

A `Visibility` is an ordered list of (glob, shown): the first glob that matches a name decides whether
it is shown, and a name no glob matches is hidden (registry/auth/rules.py builds one from the access
rules). A glob is a tuple of parts alternating literal text and wildcards: parts 0, 2, 4... are
literals (maybe empty), parts 1, 3... are `*` (any characters but `/`) or `**` (any characters).

In SQL, every glob is exact: a literal is `=`; a glob of literals and `**` is GLOB on SQLite (LIKE on
PostgreSQL); one of literals and `*` is the same with every wildcard crossing `/`, and the name holding
exactly as many `/` as the literals (so no wildcard took one); a glob mixing both is that GLOB (LIKE),
then a regular expression: PostgreSQL's own, and on SQLite Python's, through the REGEXP function the
registry's SQLite connections define (`regexp`, below). The glob's leading literal bounds the names it can match, so
each glob also gives a range of `repositories.name` (`name >= prefix AND name < prefix_next`); a
query reads the ranges of the showing globs only, less the namespaces hidden before them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

STAR, STARS = "*", "**"
Glob = tuple[str, ...]
MAX_RANGES = 32  # index ranges of one query; more are joined into wider ones (the predicate stays exact)
_LIKE_SPECIAL = str.maketrans({"\\": "\\\\", "%": "\\%", "_": "\\_"})
_GLOB_SPECIAL = str.maketrans({"*": "[*]", "?": "[?]", "[": "[[]"})


def parse_glob(pattern: str) -> Glob:
    """The parts of a glob written as in the access rules (`*`, `**`, everything else literal), with
    a `*` next to a `**` folded into it (they match the same names)."""
    parts = re.split(r"(\*\*|\*)", pattern)
    folded = [parts[0]]
    for wildcard, literal in zip(parts[1::2], parts[2::2], strict=True):
        if folded[-1] == "" and len(folded) > 1 and STARS in (wildcard, folded[-2]):
            folded[-2] = STARS  # `*` + `**`, `**` + `*`, `**` + `**`: one `**`
            folded[-1] = literal
        else:
            folded += [wildcard, literal]
    return tuple(folded)


def literal_glob(name: str) -> Glob:
    """The glob matching `name` alone, whatever characters it holds."""
    return (name,)


@lru_cache(maxsize=4096)
def glob_regex(glob: Glob) -> re.Pattern[str]:
    """The glob as a Python regular expression, for `fullmatch`."""
    return re.compile("".join(_regex_parts(glob, re.escape, ".*", "[^/]*")), re.DOTALL)


def _regex_parts(glob: Glob, escape: Callable[[str], str], stars: str, star: str) -> list[str]:
    return [escape(part) if i % 2 == 0 else stars if part == STARS else star for i, part in enumerate(glob)]


def _pg_escape(text: str) -> str:
    """`text` as a literal in a PostgreSQL (ARE) regular expression: a backslash before every ASCII
    character that is not a letter or digit ("\\" and a non-alphanumeric character is that character)."""
    return "".join(f"\\{c}" if c < "\x80" and not c.isalnum() else c for c in text)


def regexp(pattern: str, value: str | None) -> bool:
    """SQLite's `value REGEXP pattern`: whether `pattern` (Python syntax) matches all of `value`."""
    return value is not None and re.fullmatch(pattern, value, re.DOTALL) is not None


def _next(prefix: str) -> str | None:
    """The least string greater than every string that starts with `prefix` (None: there is none)."""
    while prefix and prefix[-1] == "\U0010ffff":
        prefix = prefix[:-1]
    if not prefix:
        return None
    code = ord(prefix[-1]) + 1
    if 0xD800 <= code <= 0xDFFF:  # surrogates are no characters of UTF-8 text
        code = 0xE000
    return prefix[:-1] + chr(code)


Range = tuple[str, str | None]  # lo <= name < hi (hi None: no bound)
Query = tuple[str, list[str | int]]  # SQL with `?` placeholders, and its parameters


def glob_range(glob: Glob) -> Range:
    """Names the glob can match lie in this range; exactly those when `is_prefix_glob(glob)`."""
    if len(glob) == 1:
        return glob[0], glob[0] + "\x01"  # the name alone (no name holds a character below "\x01")
    return glob[0], _next(glob[0])


def is_prefix_glob(glob: Glob) -> bool:
    """Whether the glob matches exactly the names in its range: a literal, or a literal then `**`."""
    return len(glob) == 1 or (len(glob) == 3 and glob[1] == STARS and glob[2] == "")


@dataclass(frozen=True, slots=True)
class Visibility:
    """The names shown: the first of `rules` (glob, shown) that matches a name decides; none: hidden."""

    rules: tuple[tuple[Glob, bool], ...]

    def normal(self) -> Visibility:
        """The same decisions with no rule that cannot change one: rules after a `**` (it matches every
        name), hiding rules at the end, and globs that hold a NUL (no name does)."""
        kept: list[tuple[Glob, bool]] = []
        for glob, shown in self.rules:
            if any("\x00" in part for part in glob[::2]):
                continue
            kept.append((glob, shown))
            if glob == ("", STARS, ""):
                break
        while kept and not kept[-1][1]:
            kept.pop()
        return Visibility(tuple(kept))

    @property
    def indexed(self) -> bool:
        """Whether the index ranges hold exactly the names shown, so that a page reads no name it
        does not show: every glob is a literal or a literal then `**` (and every hiding one the latter)."""
        return all(is_prefix_glob(glob) and (shown or len(glob) == 3) for glob, shown in self.normal().rules)

    def ranges(self) -> list[Range]:
        """Disjoint ranges of names, in order, that hold every name shown (at most MAX_RANGES): the
        range of each showing glob, less those of the hiding globs before it that match their whole
        range (a literal then `**`)."""
        spans: list[Range] = []
        cuts: list[Range] = []
        for glob, shown in self.normal().rules:
            if not shown:
                if len(glob) == 3 and is_prefix_glob(glob):
                    cuts.append(glob_range(glob))
                continue
            found = [glob_range(glob)]
            for cut in cuts:
                found = _without(found, cut)
            spans += found
        spans.sort(key=lambda span: span[0])
        merged: list[Range] = []
        for lo, hi in spans:
            if merged and (merged[-1][1] is None or lo <= merged[-1][1]):
                top = merged[-1][1]
                merged[-1] = (merged[-1][0], None if top is None or hi is None else max(top, hi))
            else:
                merged.append((lo, hi))
        while len(merged) > MAX_RANGES:  # join neighbours: wider ranges, the same names shown
            merged = [(merged[i][0], merged[min(i + 1, len(merged) - 1)][1]) for i in range(0, len(merged), 2)]
        return merged


def _without(spans: list[Range], cut: Range) -> list[Range]:
    """`spans` less the names in `cut`."""
    low, high = cut
    kept: list[Range] = []
    for lo, hi in spans:
        if lo < low:
            kept.append((lo, low if hi is None or low < hi else hi))
        if high is not None and (hi is None or high < hi):
            kept.append((max(lo, high), hi))
    return kept


EVERYTHING = Visibility(((("", STARS, ""), True),))


def _match_sql(glob: Glob, dialect: str) -> Query:
    """`name` matches `glob`, as SQL of `dialect` with its parameters."""
    if len(glob) == 1:
        return "name = ?", [glob[0]]
    literals = glob[::2]
    # Every wildcard as one that crosses `/`: the same names for `**`, more for `*`.
    if dialect == "postgresql":
        crossing = "name LIKE ? ESCAPE '\\'", "%".join(p.translate(_LIKE_SPECIAL) for p in literals)
    else:
        crossing = "name GLOB ?", "*".join(p.translate(_GLOB_SPECIAL) for p in literals)
    wildcards = set(glob[1::2])
    if wildcards == {STARS}:
        return crossing[0], [crossing[1]]
    if wildcards == {STAR}:  # and no wildcard took a `/`: the name has as many as the literals
        slashes = sum(p.count("/") for p in literals)
        return f"({crossing[0]} AND LENGTH(name) - LENGTH(REPLACE(name, '/', '')) = ?)", [crossing[1], slashes]
    # Both: a regular expression, for the names the crossing glob lets through (it is quicker).
    if dialect == "postgresql":
        regex = "^" + "".join(_regex_parts(glob, _pg_escape, ".*", "[^/]*")) + "$"
        return f"({crossing[0]} AND name ~ ?)", [crossing[1], regex]
    return f"({crossing[0]} AND name REGEXP ?)", [crossing[1], glob_regex(glob).pattern]


def shown_sql(visibility: Visibility, dialect: str) -> Query:
    """A SQL condition on `name` true exactly for the names `visibility` shows, with its parameters."""
    rules = visibility.normal().rules
    if not rules:
        return "1 = 0", []
    if rules == EVERYTHING.rules:
        return "1 = 1", []
    whens, params = [], []
    for glob, shown in rules:
        sql, values = _match_sql(glob, dialect)
        whens.append(f"WHEN {sql} THEN {1 if shown else 0}")
        params += values
    return f"(CASE {' '.join(whens)} ELSE 0 END) = 1", params


def range_sql(lo: str, hi: str | None) -> Query:
    """`name` in [lo, hi), using the index on it."""
    if hi is None:
        return "name >= ?", [lo]
    return "name >= ? AND name < ?", [lo, hi]


def _branches(visibility: Visibility, dialect: str, columns: str, where: Query, after: str = "") -> list[Query]:
    """One SELECT of `columns` per range of `visibility` that may hold names after `after`, each with
    `where` and the condition that the name is shown."""
    shown, shown_params = shown_sql(visibility, dialect)
    branches = []
    for lo, hi in visibility.ranges():
        if hi is not None and hi <= after:
            continue
        bounds, bound_params = range_sql(lo, hi)
        sql = f"SELECT {columns} FROM repositories WHERE {bounds} AND {where[0]} AND {shown}"
        branches.append((sql, bound_params + where[1] + shown_params))
    return branches


def listing_sql(visibility: Visibility, dialect: str, last: str, limit: int | None) -> Query | None:
    """The names after `last` that `visibility` shows, in order, at most `limit` (all: None): one
    index range scan per range; None when no name can be shown."""
    tail = " ORDER BY name" if limit is None else " ORDER BY name LIMIT ?"
    tail_params: list[str | int] = [] if limit is None else [limit]
    branches = _branches(visibility, dialect, "name", ("name > ?", [last]), last)
    if not branches:
        return None
    if len(branches) == 1:
        return branches[0][0] + tail, branches[0][1] + tail_params
    selects, params = [], []
    for i, (sql, values) in enumerate(branches):
        selects.append(f"SELECT name FROM ({sql}{tail}) AS r{i}")
        params += values + tail_params
    return " UNION ALL ".join(selects) + tail, params + tail_params


def names_sql(visibility: Visibility, dialect: str) -> Query | None:
    """A SELECT of the names (`name`) `visibility` shows, in no order, to drive a query from: one
    index range scan per range; None when no name can be shown."""
    branches = _branches(visibility, dialect, "name", ("1 = 1", []))
    if not branches:
        return None
    return " UNION ALL ".join(sql for sql, _ in branches), [p for _, values in branches for p in values]


def search_sql(visibility: Visibility, dialect: str, term: str) -> Query | None:
    """A SELECT of (name, description) of the repositories `visibility` shows whose name or description
    holds `term` (ignoring case; every one for ""), to wrap in a count or an ordered page; None when no
    name can be shown."""
    if term:
        pattern = f"%{term.translate(_LIKE_SPECIAL)}%"
        # SQLite's LIKE ignores case (of ASCII letters) by itself, measured twice as fast as LOWER() on
        # both sides; PostgreSQL's ILIKE does the same.
        like = "ILIKE" if dialect == "postgresql" else "LIKE"
        where = f"(name {like} ? ESCAPE '\\' OR description {like} ? ESCAPE '\\')"
        branches = _branches(visibility, dialect, "name, description", (where, [pattern, pattern]))
    else:
        branches = _branches(visibility, dialect, "name, description", ("1 = 1", []))
    if not branches:
        return None
    return " UNION ALL ".join(sql for sql, _ in branches), [p for _, values in branches for p in values]
