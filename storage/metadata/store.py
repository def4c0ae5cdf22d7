"""The metadata store: repositories, blobs and their links, manifests, tags and uploads.

Every public method is one transaction (or one read statement) against a `Database` (database.py).
The SQL is written once, with `?` placeholders, for SQLite and PostgreSQL.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from storage.errors import MissingReferences
from storage.metadata.browse import BrowseQueries
from storage.metadata.cache import CacheQueries
from storage.metadata.database import Connection, Database, one, placeholders, row_lock
from storage.metadata.events import EventQueries, OutboxEvent, insert_events
from storage.metadata.figures import FigureQueries
from storage.metadata.garbage import GarbageQueries
from storage.metadata.leases import Leases
from storage.metadata.logins import Logins
from storage.metadata.reviews import (
    ReviewQueries,
    queue_manifest_dependents,
    queue_replaced,
    queue_repository_blobs,
    queue_tag_target,
    queue_unreferenced_blob,
)
from storage.metadata.rows import ManifestRecord, link_blob, put_manifest_rows
from storage.metadata.schema import PRESENT
from storage.metadata.visibility import EVERYTHING, Visibility, listing_sql, search_sql

REVIEW_DELAY_S = 3600.0  # a review queued by a change is due this long after it (gc.grace)
TOUCH_INTERVAL_S = 1.0  # a blob used this recently is not marked used again (saves a write per push)


@dataclass(frozen=True, slots=True)
class Chunk:
    start: int
    size: int
    key: str  # the key of the driver's Piece holding the chunk's bytes (see Driver.append)
    hash_state: str  # hex of the upload's resumable SHA-256 state after this chunk, or ""


@dataclass(frozen=True, slots=True)
class Upload:
    """An upload's row: its size and the resumable SHA-256 state after its last chunk (hex; "" when
    that chunk could not save one, or when it has no chunk yet). Its chunks are `upload_chunks`."""

    id: str
    repository: str
    size: int
    started_at: float
    updated_at: float
    hash_state: str = ""


@dataclass(frozen=True, slots=True)
class RemovedRepository:
    """What `delete_repository` removed: how many tags and manifests, and the ids of the uploads
    (whose bytes are the caller's to delete)."""

    tags: int
    manifests: int
    uploads: tuple[str, ...]


def _sizes(
    c: Connection, sql: str, parameters: tuple[str, ...], digests: dict[str, int], lock: str = ""
) -> dict[str, int]:
    """Digest -> size of the rows `sql` (digest, size; ending in `IN`) selects for those of `digests`,
    locked by `lock` (a `row_lock` clause) when given."""
    if not digests:
        return {}
    return dict(c.execute(f"{sql} ({placeholders(len(digests))}){lock}", (*parameters, *digests)).fetchall())


def _check_references(
    c: Connection, repository: str, blobs: dict[str, int], children: dict[str, int], lock: str = ""
) -> None:
    """Raise MissingReferences unless every blob of `blobs` is present in `repository` and every
    manifest of `children` is there, each with the size stated (digest -> size). With `lock` (the
    `row_lock` clause of a write relying on them) their rows stay locked until it ends."""
    found = _sizes(
        c,
        "SELECT b.digest, b.size FROM repository_blobs r JOIN blobs b ON b.digest = r.digest "
        "WHERE r.repository = ? AND b.state = ? AND r.digest IN",
        (repository, PRESENT),
        blobs,
        f"{lock} OF b" if lock else "",
    )
    known = _sizes(
        c, "SELECT digest, size FROM manifests WHERE repository = ? AND digest IN", (repository,), children, lock
    )
    missing: list[str] = []
    wrong_size: list[str] = []
    for stated, stored in ((blobs, found), (children, known)):
        missing += sorted(d for d in stated if d not in stored)
        wrong_size += sorted(d for d, size in stated.items() if d in stored and stored[d] != size)
    if missing or wrong_size:
        raise MissingReferences(missing, wrong_size)


class Metadata:
    """The registry's metadata over `db`; holds no state of its own besides the database.

    `garbage`, `logins`, `cache`, `browse`, `figures` and `events` are the garbage collector's, the login
    limiter's, the pull-through cache's, the web UI's, the metrics' and the event outbox's queries over the
    same database; `leases` its named leases. `db` is there for tests and tools that inspect rows; the
    registry uses the methods.

    The methods that change what a client sees take `events`, the outbox rows reporting the change:
    written in the same transaction when the change is made, not at all when it is not. Those that may
    leave garbage (a tag deleted or moved, a manifest or repository deleted, a blob uploaded that no
    manifest refers to) queue its review (`reviews`) in the same transaction, due `review_delay_s`
    later.
    """

    def __init__(self, db: Database, review_delay_s: float = REVIEW_DELAY_S):
        self.db = db
        self.review_delay_s = review_delay_s
        self.garbage = GarbageQueries(db)
        self.reviews = ReviewQueries(db)
        self.logins = Logins(db)
        self.cache = CacheQueries(db, review_delay_s)
        self.leases = Leases(db)
        self.browse = BrowseQueries(db)
        self.figures = FigureQueries(db)
        self.events = EventQueries(db)

    async def open(self) -> None:
        """Connect, and bring the schema up to date."""
        await self.db.open()

    async def close(self) -> None:
        """Release the database's connections."""
        await self.db.close()

    # -- repositories ---------------------------------------------------------------------------

    async def repository_exists(self, repository: str) -> bool:
        """Whether `repository` exists (it does from its first blob link until it is deleted)."""
        return await self.db.read(
            lambda c: c.execute("SELECT 1 FROM repositories WHERE name = ?", (repository,)).fetchone() is not None
        )

    async def search_repositories(
        self, term: str, shown: Visibility, offset: int, limit: int
    ) -> tuple[int, list[tuple[str, str | None]]]:
        """How many repositories `shown` shows whose name or description holds `term` (ignoring case;
        every one for ""), and (name, description) of `limit` of them after the first `offset`, in
        lexical order of name. Only the index ranges of `shown` are read."""
        query = search_sql(shown, self.db.dialect, term)
        if query is None:
            return 0, []
        found, params = query
        count = f"SELECT COUNT(*) FROM ({found}) AS found"
        page = f"SELECT name, description FROM ({found}) AS found ORDER BY name LIMIT ? OFFSET ?"

        def run(c: Connection) -> tuple[int, list[tuple[str, str | None]]]:
            total = one(c.execute(count, params))[0]
            rows = c.execute(page, [*params, limit, offset]).fetchall() if offset < total else []
            return total, [(row[0], row[1]) for row in rows]

        return await self.db.scan(run)

    async def list_repositories(self, last: str, limit: int | None, shown: Visibility = EVERYTHING) -> list[str]:
        """Names after `last` that `shown` shows, in lexical order, at most `limit` (all when None).
        One index range scan per range of `shown`; on the event loop (SQLite) only when the ranges hold
        no other name, else in a worker thread."""
        query = listing_sql(shown, self.db.dialect, last, limit)
        if query is None:
            return []
        sql, params = query
        run = self.db.read if shown.indexed else self.db.scan
        return await run(lambda c: [row[0] for row in c.execute(sql, params).fetchall()])

    async def delete_repository(self, repository: str, events: Sequence[OutboxEvent] = ()) -> RemovedRepository | None:
        """Delete a repository with its tags, manifests, blob links and uploads, in one transaction;
        returns what was removed, or None when it does not exist. The bytes are left to the garbage
        collector (and the uploads' to the caller)."""
        now = time.time()

        def delete(c: Connection) -> RemovedRepository | None:
            if c.execute("DELETE FROM repositories WHERE name = ?", (repository,)).rowcount == 0:
                return None
            queue_repository_blobs(c, repository, now + self.review_delay_s)
            tags = c.execute("DELETE FROM tags WHERE repository = ?", (repository,)).rowcount
            manifests = c.execute("DELETE FROM manifests WHERE repository = ?", (repository,)).rowcount
            c.execute("DELETE FROM manifest_references WHERE repository = ?", (repository,))
            c.execute("DELETE FROM repository_blobs WHERE repository = ?", (repository,))
            rows = c.execute("SELECT id FROM uploads WHERE repository = ?", (repository,)).fetchall()
            uploads = tuple(row[0] for row in rows)
            for upload_id in uploads:
                _delete_upload(c, upload_id)
            insert_events(c, events, now)
            return RemovedRepository(tags, manifests, uploads)

        return await self.db.write(delete)

    # -- blobs ----------------------------------------------------------------------------------

    async def blob_size(self, repository: str, digest: str) -> int | None:
        """Size of `digest` if it is present and linked into `repository`, else None."""
        row = await self.db.read(
            lambda c: c.execute(
                "SELECT b.size FROM repository_blobs r JOIN blobs b ON b.digest = r.digest "
                "WHERE r.repository = ? AND r.digest = ? AND b.state = ?",
                (repository, digest, PRESENT),
            ).fetchone()
        )
        if row is None:
            return None
        size: int = row[0]
        return size

    async def stored_blob_size(self, digest: str) -> int | None:
        """Size of `digest` if it is present in any repository, else None."""
        row = await self.db.read(
            lambda c: c.execute("SELECT size FROM blobs WHERE digest = ? AND state = ?", (digest, PRESENT)).fetchone()
        )
        return None if row is None else int(row[0])

    async def repositories_with_blob(self, digest: str) -> list[str]:
        """Repositories where `digest` is present, in lexical order."""
        return await self.db.read(
            lambda c: [
                row[0]
                for row in c.execute(
                    "SELECT r.repository FROM repository_blobs r JOIN blobs b ON b.digest = r.digest "
                    "WHERE r.digest = ? AND b.state = ? ORDER BY r.repository",
                    (digest, PRESENT),
                ).fetchall()
            ]
        )

    async def reserve_blob(self, digest: str) -> str | None:
        """Before storing the bytes of `digest`: its state (None when unknown). A present blob is
        marked used now (unless it was within the last TOUCH_INTERVAL_S), so the collector keeps it
        for a grace period at least. Unknown blobs cost no write: the collector only deletes rows."""
        row = await self.db.read(
            lambda c: c.execute("SELECT state, last_used_at FROM blobs WHERE digest = ?", (digest,)).fetchone()
        )
        if row is None:
            return None
        state: str = row[0]
        if state != PRESENT:
            return state
        now = time.time()
        if row[1] >= now - TOUCH_INTERVAL_S:
            return PRESENT

        def touch(c: Connection) -> str | None:
            cursor = c.execute(
                "UPDATE blobs SET last_used_at = ? WHERE digest = ? AND state = ?", (now, digest, PRESENT)
            )
            if cursor.rowcount == 1:
                return PRESENT
            row = c.execute("SELECT state FROM blobs WHERE digest = ?", (digest,)).fetchone()  # deleting, or gone
            if row is None:
                return None
            state: str = row[0]
            return state

        return await self.db.write(touch)

    async def link_blob(self, repository: str, digest: str, size: int, events: Sequence[OutboxEvent] = ()) -> None:
        """Record that the stored blob `digest` is present and visible in `repository`; raises
        BlobCollecting when the collector is deleting it."""
        now = time.time()

        def link(c: Connection) -> None:
            link_blob(c, repository, digest, size, now)
            queue_unreferenced_blob(c, digest, now + self.review_delay_s)
            insert_events(c, events, now)

        await self.db.write(link)

    async def unlink_blob(self, repository: str, digest: str, events: Sequence[OutboxEvent] = ()) -> bool:
        """Remove `digest` from `repository`; False when it was not linked there."""
        now = time.time()

        def unlink(c: Connection) -> bool:
            cursor = c.execute("DELETE FROM repository_blobs WHERE repository = ? AND digest = ?", (repository, digest))
            if cursor.rowcount == 0:
                return False
            insert_events(c, events, now)
            return True

        return await self.db.write(unlink)

    # -- uploads --------------------------------------------------------------------------------

    async def create_upload(self, upload_id: str, repository: str) -> None:
        now = time.time()
        await self.db.write(
            lambda c: c.execute(
                "INSERT INTO uploads (id, repository, size, started_at, updated_at) VALUES (?, ?, 0, ?, ?)",
                (upload_id, repository, now, now),
            )
        )

    async def get_upload(self, upload_id: str) -> Upload | None:
        """The upload's row, or None; one row read however many chunks it has."""
        row = await self.db.read(
            lambda c: c.execute(
                "SELECT id, repository, size, started_at, updated_at, hash_state FROM uploads WHERE id = ?",
                (upload_id,),
            ).fetchone()
        )
        return None if row is None else Upload(*row)

    async def upload_chunks(self, upload_id: str) -> list[Chunk]:
        """The upload's chunks in order (one row each: read them only where every chunk is needed)."""
        return await self.db.read(
            lambda c: [
                Chunk(*row)
                for row in c.execute(
                    "SELECT start, size, key, hash_state FROM upload_chunks WHERE upload = ? ORDER BY start",
                    (upload_id,),
                ).fetchall()
            ]
        )

    async def add_chunk(self, upload_id: str, chunk: Chunk) -> bool:
        """Append `chunk` if the upload's size is still `chunk.start`, its hash state becoming the
        upload's; False if the upload moved on or is gone."""
        now = time.time()

        def append(c: Connection) -> bool:
            cursor = c.execute(
                "UPDATE uploads SET size = size + ?, hash_state = ?, updated_at = ? WHERE id = ? AND size = ?",
                (chunk.size, chunk.hash_state, now, upload_id, chunk.start),
            )
            if cursor.rowcount != 1:
                return False
            c.execute(
                "INSERT INTO upload_chunks (upload, start, size, key, hash_state) VALUES (?, ?, ?, ?, ?)",
                (upload_id, chunk.start, chunk.size, chunk.key, chunk.hash_state),
            )
            return True

        return await self.db.write(append)

    async def delete_upload(self, upload_id: str) -> None:
        """Forget the upload and its chunks (their bytes are the caller's to delete)."""
        await self.db.write(lambda c: _delete_upload(c, upload_id))

    async def finish_upload(
        self,
        upload_id: str,
        repository: str,
        digest: str,
        size: int,
        upload_size: int | None = None,
        events: Sequence[OutboxEvent] = (),
    ) -> bool:
        """In one transaction, if the upload still has `upload_size` bytes (`size` unless given: no
        chunk was added meanwhile), forget it and link blob `digest` of `size` bytes into `repository`;
        False (nothing changed) if it has not or is gone. Raises BlobCollecting, changing nothing,
        when the collector is deleting the blob."""
        now = time.time()
        expected = size if upload_size is None else upload_size

        def finish(c: Connection) -> bool:
            if c.execute("DELETE FROM uploads WHERE id = ? AND size = ?", (upload_id, expected)).rowcount != 1:
                return False
            c.execute("DELETE FROM upload_chunks WHERE upload = ?", (upload_id,))
            link_blob(c, repository, digest, size, now)
            queue_unreferenced_blob(c, digest, now + self.review_delay_s)
            insert_events(c, events, now)
            return True

        return await self.db.write(finish)

    # -- manifests and tags ---------------------------------------------------------------------

    async def put_manifest(
        self,
        repository: str,
        manifest: ManifestRecord,
        blobs: dict[str, int],
        children: dict[str, int],
        tag: str | None,
        description: str | None = None,
        events: Sequence[OutboxEvent] = (),
    ) -> None:
        """Store a manifest, its references and optionally a tag pointing at it, in one transaction;
        with a tag, the image's `description` becomes the repository's.

        `blobs` maps each referenced blob digest to the size the manifest states, `children` each
        manifest an index lists to its stated size. Raises MissingReferences, changing nothing, when
        any of them is not present in `repository` with that size.
        """
        now = time.time()
        # Locks the collector's decisions (reviews.py) wait for, and which wait for them.
        lock = row_lock(self.db.dialect, "KEY SHARE")

        def put(c: Connection) -> None:
            _check_references(c, repository, blobs, children, lock)
            if lock:
                sql = f"SELECT 1 FROM manifests WHERE repository = ? AND digest = ?{lock}"
                c.execute(sql, (repository, manifest.digest))
            queue_replaced(c, repository, manifest.digest, tag, now + self.review_delay_s)
            put_manifest_rows(c, repository, manifest, blobs, children, tag, now, description=description)
            insert_events(c, events, now)

        await self.db.write(put)

    async def check_references(self, repository: str, blobs: dict[str, int], children: dict[str, int]) -> None:
        """Raise MissingReferences when a blob of `blobs` or a manifest of `children` (digest to stated
        size) is not present in `repository` with that size, as put_manifest would; reads only, so that
        a manifest can be refused before its bytes are stored."""
        await self.db.read(lambda c: _check_references(c, repository, blobs, children))

    async def get_manifest(self, repository: str, digest: str) -> ManifestRecord | None:
        """The manifest `digest` of `repository`, or None."""
        row = await self.db.read(
            lambda c: c.execute(
                "SELECT digest, media_type, size, artifact_type, subject, annotations FROM manifests "
                "WHERE repository = ? AND digest = ?",
                (repository, digest),
            ).fetchone()
        )
        return None if row is None else ManifestRecord(*row)

    async def get_tagged_manifest(self, repository: str, tag: str) -> ManifestRecord | None:
        """The manifest `tag` of `repository` points at, or None."""
        row = await self.db.read(
            lambda c: c.execute(
                "SELECT m.digest, m.media_type, m.size, m.artifact_type, m.subject, m.annotations FROM tags t "
                "JOIN manifests m ON m.repository = t.repository AND m.digest = t.digest "
                "WHERE t.repository = ? AND t.name = ?",
                (repository, tag),
            ).fetchone()
        )
        return None if row is None else ManifestRecord(*row)

    async def delete_manifest(self, repository: str, digest: str, events: Sequence[OutboxEvent] = ()) -> bool:
        """Delete a manifest, its references and every tag pointing at it; False when unknown."""
        now = time.time()

        def delete(c: Connection) -> bool:
            cursor = c.execute("DELETE FROM manifests WHERE repository = ? AND digest = ?", (repository, digest))
            if cursor.rowcount == 0:
                return False
            queue_manifest_dependents(c, [(repository, digest)], now + self.review_delay_s)
            c.execute("DELETE FROM manifest_references WHERE repository = ? AND manifest = ?", (repository, digest))
            c.execute("DELETE FROM tags WHERE repository = ? AND digest = ?", (repository, digest))
            c.execute("DELETE FROM repository_blobs WHERE repository = ? AND digest = ?", (repository, digest))
            insert_events(c, events, now)
            return True

        return await self.db.write(delete)

    async def delete_tag(self, repository: str, tag: str, events: Sequence[OutboxEvent] = ()) -> bool:
        """Delete only the tag; False when unknown."""
        now = time.time()

        def delete(c: Connection) -> bool:
            queue_tag_target(c, repository, tag, now + self.review_delay_s)
            if c.execute("DELETE FROM tags WHERE repository = ? AND name = ?", (repository, tag)).rowcount == 0:
                return False
            insert_events(c, events, now)
            return True

        return await self.db.write(delete)

    async def list_tags(self, repository: str, last: str, limit: int | None) -> list[str]:
        """Tags of `repository` after `last` in lexical order, at most `limit` (all when None)."""
        sql = "SELECT name FROM tags WHERE repository = ? AND name > ? ORDER BY name"
        params: tuple[str | int, ...] = (repository, last)
        if limit is not None:
            sql, params = sql + " LIMIT ?", (*params, limit)
        return await self.db.read(lambda c: [row[0] for row in c.execute(sql, params).fetchall()])

    async def referrers(self, repository: str, subject: str, artifact_type: str | None) -> list[ManifestRecord]:
        """Manifests of `repository` whose subject is `subject`, optionally of one artifact type."""
        sql = (
            "SELECT digest, media_type, size, artifact_type, subject, annotations FROM manifests "
            "WHERE repository = ? AND subject = ?"
        )
        params: tuple[str, ...] = (repository, subject)
        if artifact_type is not None:
            sql, params = sql + " AND artifact_type = ?", (*params, artifact_type)
        rows = await self.db.read(lambda c: c.execute(sql + " ORDER BY digest", params).fetchall())
        return [ManifestRecord(*row) for row in rows]


def _delete_upload(c: Connection, upload_id: str) -> None:
    c.execute("DELETE FROM upload_chunks WHERE upload = ?", (upload_id,))
    c.execute("DELETE FROM uploads WHERE id = ?", (upload_id,))
