"""The web UI's queries: a page of repositories' stats, a repository's tags sorted and paginated with
their push times and sizes, and the bytes stored, in all and per repository.

Every query reads only; the caller decides which repositories may be shown and passes their names.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from storage.metadata.database import Connection, Database, one, placeholders
from storage.metadata.schema import PRESENT

NAMES_PER_STATEMENT = 500  # names bound in one `IN (...)`: well under every database's limit of parameters
TAG_ORDERS = {"name": "t.name", "pushed": "t.updated_at"}


@dataclass(frozen=True, slots=True)
class RepositoryStats:
    """A repository as a listing shows it: its description, its tags, its newest tag's push time (None
    without tags), and the bytes of the distinct present blobs linked into it (manifests included)."""

    name: str
    description: str | None
    tags: int
    last_push: float | None
    size: int


@dataclass(frozen=True, slots=True)
class TagRow:
    """A tag as the repository page shows it: the manifest it names, when it was pushed, and `size`, the
    bytes of the distinct blobs the manifest refers to directly or through the manifests an index lists."""

    name: str
    digest: str
    media_type: str
    pushed_at: float
    size: int


@dataclass(frozen=True, slots=True)
class RepositoryUsage:
    """The bytes of the present blobs linked into one repository (`blobs` of them), and of those linked
    into no other repository (`exclusive`: what deleting the repository would free)."""

    name: str
    blobs: int
    size: int
    exclusive: int


@dataclass(frozen=True, slots=True)
class StoredTotal:
    """Distinct present blobs and their bytes, each blob counted once however many repositories hold it."""

    blobs: int
    size: int


def _batches(names: list[str]) -> Iterable[list[str]]:
    for start in range(0, len(names), NAMES_PER_STATEMENT):
        yield names[start : start + NAMES_PER_STATEMENT]


# The bytes of the blobs a manifest (of repository t.repository, digest t.digest) refers to, directly or
# through its children, each blob once.
_IMAGE_SIZE = (
    "(SELECT COALESCE(SUM(b.size), 0) FROM blobs b WHERE b.digest IN ("
    "SELECT r.child FROM manifest_references r "
    "WHERE r.repository = t.repository AND r.manifest = t.digest AND r.kind = 'blob' "
    "UNION SELECT c.child FROM manifest_references p JOIN manifest_references c "
    "ON c.repository = p.repository AND c.manifest = p.child AND c.kind = 'blob' "
    "WHERE p.repository = t.repository AND p.manifest = t.digest AND p.kind = 'manifest'))"
)


class BrowseQueries:
    """The UI's reads over `db`."""

    def __init__(self, db: Database):
        self.db = db

    async def repository_stats(self, names: list[str]) -> dict[str, RepositoryStats]:
        """The stats of each of `names` that exists (a page's worth: one statement per NAMES_PER_STATEMENT)."""

        def read(c: Connection) -> dict[str, RepositoryStats]:
            found: dict[str, RepositoryStats] = {}
            for batch in _batches(names):
                rows = c.execute(
                    "SELECT r.name, r.description, "
                    "(SELECT COUNT(*) FROM tags t WHERE t.repository = r.name), "
                    "(SELECT MAX(t.updated_at) FROM tags t WHERE t.repository = r.name), "
                    "(SELECT COALESCE(SUM(b.size), 0) FROM repository_blobs l JOIN blobs b ON b.digest = l.digest "
                    " WHERE l.repository = r.name AND b.state = ?) "
                    f"FROM repositories r WHERE r.name IN ({placeholders(len(batch))})",
                    (PRESENT, *batch),
                ).fetchall()
                for name, description, tags, last_push, size in rows:
                    found[name] = RepositoryStats(name, description, int(tags), last_push, int(size))
            return found

        return await self.db.read(read)

    async def tag_count(self, repository: str) -> int:
        """How many tags `repository` has."""
        row = await self.db.read(
            lambda c: one(c.execute("SELECT COUNT(*) FROM tags WHERE repository = ?", (repository,)))
        )
        return int(row[0])

    async def tags(self, repository: str, order: str, descending: bool, offset: int, limit: int) -> list[TagRow]:
        """Tags `offset` to `offset + limit` of `repository`, by `order` (a key of TAG_ORDERS: `name` or
        `pushed`), ties broken by name; raises KeyError for another order."""
        column = TAG_ORDERS[order]
        direction = "DESC" if descending else "ASC"
        sql = (
            f"SELECT t.name, t.digest, m.media_type, t.updated_at, {_IMAGE_SIZE} FROM tags t "
            "JOIN manifests m ON m.repository = t.repository AND m.digest = t.digest "
            f"WHERE t.repository = ? ORDER BY {column} {direction}, t.name {direction} LIMIT ? OFFSET ?"
        )
        rows = await self.db.scan(lambda c: c.execute(sql, (repository, limit, offset)).fetchall())
        return [
            TagRow(name, digest, media_type, pushed_at, int(size)) for name, digest, media_type, pushed_at, size in rows
        ]

    async def usage(self) -> list[RepositoryUsage]:
        """Every repository's usage, in lexical order of name (repositories without blobs left out)."""
        sql = (
            "SELECT l.repository, COUNT(*), COALESCE(SUM(b.size), 0), "
            "COALESCE(SUM(CASE WHEN s.holders = 1 THEN b.size ELSE 0 END), 0) "
            "FROM repository_blobs l JOIN blobs b ON b.digest = l.digest "
            "JOIN (SELECT digest, COUNT(*) AS holders FROM repository_blobs GROUP BY digest) s ON s.digest = l.digest "
            "WHERE b.state = ? GROUP BY l.repository ORDER BY l.repository"
        )
        rows = await self.db.scan(lambda c: c.execute(sql, (PRESENT,)).fetchall())
        return [RepositoryUsage(name, int(blobs), int(size), int(exclusive)) for name, blobs, size, exclusive in rows]

    async def stored_total(self, names: list[str] | None) -> StoredTotal:
        """The distinct present blobs linked into any of `names`; with None, into any repository at all."""

        def read(c: Connection) -> StoredTotal:
            if names is None:
                row = one(
                    c.execute(
                        "SELECT COUNT(*), COALESCE(SUM(b.size), 0) FROM blobs b WHERE b.state = ? AND EXISTS "
                        "(SELECT 1 FROM repository_blobs l WHERE l.digest = b.digest)",
                        (PRESENT,),
                    )
                )
                return StoredTotal(int(row[0]), int(row[1]))
            sizes: dict[str, int] = {}
            for batch in _batches(names):
                rows = c.execute(
                    "SELECT DISTINCT b.digest, b.size FROM repository_blobs l JOIN blobs b ON b.digest = l.digest "
                    f"WHERE b.state = ? AND l.repository IN ({placeholders(len(batch))})",
                    (PRESENT, *batch),
                ).fetchall()
                sizes.update((digest, int(size)) for digest, size in rows)
            return StoredTotal(len(sizes), sum(sizes.values()))

        return await self.db.scan(read)
