"""The review queues of the incremental collector: what a change may have made garbage is queued in the
change's own transaction (`queue_*`, called inside the store's writes), and a collector takes the due
reviews (`ReviewQueries.claim_*`) and decides them in short transactions of their own (`decide_*`).

A decision re-checks everything in its transaction, so a push that lands meanwhile is never undone:
it either committed first (and the manifest or blob is kept) or it sees the row gone, or the blob
`deleting`, and is refused (then uploads again). Decisions order themselves against pushes with row
locks (`Database.write_locking`), not as SERIALIZABLE transactions: on PostgreSQL a decision locks
the manifest or blob it decides on, and every manifest its walk reads, FOR UPDATE before reading
what keeps it; a push locks the blobs and manifests it refers to, and the manifest it records, FOR
KEY SHARE (store.py), or updates their rows. Whichever locks first, the other sees its outcome.
Several decisions share a transaction, up to BUDGET_S of work (per database). The rules are those of
the full collection (registry/gc.py): a manifest is kept when a root reaches it through index
children and referrer subjects (a root is tagged, created within the grace period, or, unless
untagged manifests are collected, any manifest but a referrer whose subject is gone); a blob is kept
while a manifest refers to it, is it, or it was used within the grace period.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from storage.metadata.database import Connection, Database, one, row_lock
from storage.metadata.schema import DELETING, PRESENT

WALK_LIMIT = 256  # manifests read to find what keeps one; beyond it, it is kept and reviewed again later
RETRY_S = 60.0  # a manifest whose walk went past WALK_LIMIT is reviewed again this much later at least
LINK_BATCH = 1000  # repository links of a deleted blob dropped per transaction
# Decisions share a transaction until their work has taken this long. SQLite's one writer makes every
# write wait for the whole transaction; PostgreSQL's row locks make only writes of the same rows wait,
# and each of its statements is a round trip, so one decision a transaction would pay a commit each.
BUDGET_S = {"sqlite": 0.001, "postgresql": 0.01}

# What a decision did (`Decision.outcome`).
REMOVED = "removed"  # a manifest deleted (its children, referrers and blobs queued)
DOOMED = "doomed"  # a blob marked `deleting`: its bytes are the caller's to delete, then `forget_blob`
KEPT = "kept"  # something refers to it (or it is gone already): the review is dropped
DUE_FIRST = 0.0  # the due time of reviews a removal leads to: before every other
LATER = "later"  # kept for now (young, or reached through young manifests): reviewed again at `due_at`
WAITING = "waiting"  # an index still lists it: that index's own review comes first, and queues it again
LOST = "lost"  # the review was no longer this collector's (its claim lapsed): nothing done


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of one review; `size` is that of the removed manifest or doomed blob."""

    outcome: str
    size: int = 0
    due_at: float | None = None


@dataclass(frozen=True, slots=True)
class QueueTotals:
    """Reviews queued, and how many of them are due now."""

    blobs: int
    blobs_due: int
    manifests: int
    manifests_due: int


# -- queueing, inside the caller's transaction ------------------------------------------------------


def queue_blobs(c: Connection, digests: Sequence[str], due_at: float) -> None:
    """Queue a review of each blob of `digests` at `due_at` (an earlier one already queued stands)."""
    if digests:
        c.executemany(
            "INSERT INTO gc_blob_reviews (digest, due_at) VALUES (?, ?) ON CONFLICT (digest) DO NOTHING",
            [(d, due_at) for d in digests],
        )


def queue_manifests(c: Connection, repository: str, digests: Sequence[str], due_at: float) -> None:
    """Queue a review of each manifest of `digests` in `repository` at `due_at`."""
    if digests:
        c.executemany(
            "INSERT INTO gc_manifest_reviews (repository, digest, due_at) VALUES (?, ?, ?) "
            "ON CONFLICT (repository, digest) DO NOTHING",
            [(repository, d, due_at) for d in digests],
        )


def queue_unreferenced_blob(c: Connection, digest: str, due_at: float) -> None:
    """Queue a review of a blob just uploaded or mounted, unless a manifest refers to it already (it
    is queued again when the last such manifest goes)."""
    referenced = c.execute(
        "SELECT 1 FROM manifest_references WHERE child = ? UNION ALL SELECT 1 FROM manifests WHERE digest = ? LIMIT 1",
        (digest, digest),
    ).fetchone()
    if referenced is None:
        queue_blobs(c, [digest], due_at)


def queue_untagged_manifest(c: Connection, repository: str, digest: str, due_at: float) -> None:
    """Queue a review of a manifest just pushed without a tag, unless a tag points at it."""
    tagged = c.execute("SELECT 1 FROM tags WHERE repository = ? AND digest = ?", (repository, digest)).fetchone()
    if tagged is None:
        queue_manifests(c, repository, [digest], due_at)


def queue_replaced(c: Connection, repository: str, digest: str, tag: str | None, due_at: float) -> None:
    """Before manifest `digest` is recorded in `repository`: queue a review of the manifest `tag` named
    until now (a tag moved), or, pushed without a tag, of the manifest itself (unless tagged)."""
    if tag is None:
        queue_untagged_manifest(c, repository, digest, due_at)
        return
    c.execute(
        "INSERT INTO gc_manifest_reviews (repository, digest, due_at) "
        "SELECT repository, digest, ? FROM tags WHERE repository = ? AND name = ? AND digest <> ? "
        "ON CONFLICT (repository, digest) DO NOTHING",
        (due_at, repository, tag, digest),
    )


def queue_tag_target(c: Connection, repository: str, tag: str, due_at: float) -> None:
    """Before tag `tag` of `repository` is deleted or moved: queue a review of the manifest it names."""
    c.execute(
        "INSERT INTO gc_manifest_reviews (repository, digest, due_at) "
        "SELECT repository, digest, ? FROM tags WHERE repository = ? AND name = ? "
        "ON CONFLICT (repository, digest) DO NOTHING",
        (due_at, repository, tag),
    )


def queue_manifest_dependents(c: Connection, repository: str, digest: str, due_at: float) -> None:
    """Before manifest `digest` of `repository` is deleted (while its references are still there):
    queue reviews of what may go with it: the manifests it lists, its referrers, its blobs and its own
    bytes."""
    c.execute(
        "INSERT INTO gc_manifest_reviews (repository, digest, due_at) "
        "SELECT repository, child, ? FROM manifest_references WHERE repository = ? AND manifest = ? "
        "AND kind = 'manifest' ON CONFLICT (repository, digest) DO NOTHING",
        (due_at, repository, digest),
    )
    c.execute(
        "INSERT INTO gc_manifest_reviews (repository, digest, due_at) "
        "SELECT repository, digest, ? FROM manifests WHERE repository = ? AND subject = ? "
        "ON CONFLICT (repository, digest) DO NOTHING",
        (due_at, repository, digest),
    )
    c.execute(
        "INSERT INTO gc_blob_reviews (digest, due_at) "
        "SELECT child, ? FROM manifest_references WHERE repository = ? AND manifest = ? AND kind = 'blob' "
        "ON CONFLICT (digest) DO NOTHING",
        (due_at, repository, digest),
    )
    queue_blobs(c, [digest], due_at)


def queue_repository_blobs(c: Connection, repository: str, due_at: float) -> None:
    """Before repository `repository` is deleted: queue a review of every blob linked there or that
    its manifests refer to."""
    c.execute(
        "INSERT INTO gc_blob_reviews (digest, due_at) "
        "SELECT DISTINCT digest, ? FROM repository_blobs WHERE repository = ? "
        "ON CONFLICT (digest) DO NOTHING",
        (due_at, repository),
    )
    c.execute(
        "INSERT INTO gc_blob_reviews (digest, due_at) "
        "SELECT DISTINCT child, ? FROM manifest_references WHERE repository = ? AND kind = 'blob' "
        "ON CONFLICT (digest) DO NOTHING",
        (due_at, repository),
    )


# -- decisions --------------------------------------------------------------------------------------

K = TypeVar("K")
R = TypeVar("R")


def _within_budget(keys: Sequence[K], decide: Callable[[K], R], budget_s: float) -> list[R]:
    """`decide` each of `keys` in turn until their work has taken `budget_s` (at least one)."""
    started = time.perf_counter()
    results: list[R] = []
    for key in keys:
        results.append(decide(key))
        if time.perf_counter() - started >= budget_s:
            break
    return results


def _ours(c: Connection, table: str, where: str, key: tuple[str, ...], lease: str) -> bool:
    sql = f"SELECT 1 FROM {table} WHERE {where} AND lease = ?"
    return c.execute(sql, (*key, lease)).fetchone() is not None


def _manifest(c: Connection, repository: str, digest: str, lock: str) -> tuple[str | None, float, bool] | None:
    """(subject, created_at, tagged) of a manifest, or None when it does not exist; its row locked by
    `lock` first (a statement of its own, so that the read after it sees what the lock waited for)."""
    if (
        lock
        and c.execute(
            f"SELECT 1 FROM manifests WHERE repository = ? AND digest = ?{lock}", (repository, digest)
        ).fetchone()
        is None
    ):
        return None
    row = c.execute(
        "SELECT m.subject, m.created_at, EXISTS (SELECT 1 FROM tags t WHERE t.repository = m.repository "
        "AND t.digest = m.digest) FROM manifests m WHERE m.repository = ? AND m.digest = ?",
        (repository, digest),
    ).fetchone()
    return None if row is None else (row[0], float(row[1]), bool(row[2]))


def _keeper(
    c: Connection, repository: str, digest: str, now: float, grace_s: float, delete_untagged: bool, lock: str
) -> tuple[bool, float | None]:
    """Whether a root reaches manifest `digest` of `repository` for good (walking back from it through
    the indexes that list it and its subject), and, if only young manifests do, when the youngest
    stops being young. More than WALK_LIMIT manifests on the way keep it until a later review. The
    caller has locked `digest` (`lock`); the walk locks every other manifest it reads."""
    cutoff = now - grace_s
    seen = {digest}
    pending = [digest]
    young_until: float | None = None
    while pending:
        node = pending.pop()
        found = _manifest(c, repository, node, "" if node == digest else lock)  # the caller locked `digest`
        if found is None:
            continue
        subject, created_at, tagged = found
        subject_present = subject is not None and _manifest(c, repository, subject, lock) is not None
        if tagged or (not delete_untagged and (subject is None or subject_present)):
            return True, None
        if created_at >= cutoff:
            young_until = max(young_until or 0.0, created_at + grace_s)
        parents = [
            row[0]
            for row in c.execute(
                "SELECT manifest FROM manifest_references WHERE repository = ? AND child = ? AND kind = 'manifest'",
                (repository, node),
            ).fetchall()
        ]
        for parent in [*parents, *([subject] if subject_present and subject is not None else [])]:
            if parent not in seen:
                if len(seen) >= WALK_LIMIT:
                    return False, now + max(grace_s, RETRY_S)
                seen.add(parent)
                pending.append(parent)
    return False, young_until


def _decide_manifest(
    c: Connection,
    repository: str,
    digest: str,
    lease: str,
    now: float,
    grace_s: float,
    delete_untagged: bool,
    lock: str,
) -> Decision:
    key = (repository, digest)
    where = "repository = ? AND digest = ?"
    if not _ours(c, "gc_manifest_reviews", where, key, lease):
        return Decision(LOST)
    row = c.execute(f"SELECT size FROM manifests WHERE repository = ? AND digest = ?{lock}", key).fetchone()
    kept, due_at = (True, None) if row is None else _keeper(c, repository, digest, now, grace_s, delete_untagged, lock)
    if due_at is not None:
        c.execute(f"UPDATE gc_manifest_reviews SET due_at = ?, lease = NULL WHERE {where}", (due_at, *key))
        return Decision(LATER, due_at=due_at)
    c.execute(f"DELETE FROM gc_manifest_reviews WHERE {where}", key)
    if kept or row is None:
        return Decision(KEPT)
    listed = c.execute(
        "SELECT 1 FROM manifest_references WHERE repository = ? AND child = ? AND kind = 'manifest' LIMIT 1", key
    ).fetchone()
    if listed is not None:
        return Decision(WAITING)
    # Reviews this deletion leads to are due at once, before any other (what it frees was already old
    # enough), so a run deciding what was due at its start follows its removals to their end.
    queue_manifest_dependents(c, repository, digest, DUE_FIRST)
    c.execute(f"DELETE FROM manifests WHERE {where}", key)
    c.execute("DELETE FROM manifest_references WHERE repository = ? AND manifest = ?", key)
    c.execute("DELETE FROM repository_blobs WHERE repository = ? AND digest = ?", key)
    return Decision(REMOVED, int(row[0]))


def _decide_blob(
    c: Connection, digest: str, lease: str, now: float, grace_s: float, lease_s: float, lock: str
) -> Decision:
    if not _ours(c, "gc_blob_reviews", "digest = ?", (digest,), lease):
        return Decision(LOST)
    row = c.execute(f"SELECT size, state, last_used_at FROM blobs WHERE digest = ?{lock}", (digest,)).fetchone()
    if row is None:
        c.execute("DELETE FROM gc_blob_reviews WHERE digest = ?", (digest,))
        return Decision(KEPT)
    size, state, last_used_at = int(row[0]), row[1], float(row[2])
    if state == PRESENT:
        referenced = c.execute(
            "SELECT 1 FROM manifest_references WHERE child = ? UNION ALL "
            "SELECT 1 FROM manifests WHERE digest = ? LIMIT 1",
            (digest, digest),
        ).fetchone()
        if referenced is not None:
            c.execute("DELETE FROM gc_blob_reviews WHERE digest = ?", (digest,))
            return Decision(KEPT)
        if last_used_at >= now - grace_s:
            due_at = last_used_at + grace_s
            c.execute("UPDATE gc_blob_reviews SET due_at = ?, lease = NULL WHERE digest = ?", (due_at, digest))
            return Decision(LATER, due_at=due_at)
        c.execute("UPDATE blobs SET state = ?, last_used_at = ? WHERE digest = ?", (DELETING, now, digest))
    # Marked now, or by a collector that stopped before the bytes were gone: this one finishes it. The
    # review stays (claimed for a lease) until the row goes, so a crash in between is reviewed again.
    c.execute("UPDATE gc_blob_reviews SET due_at = ? WHERE digest = ?", (now + lease_s, digest))
    return Decision(DOOMED, size)


def _forget(c: Connection, digest: str) -> bool:
    """Drop up to LINK_BATCH links of a blob whose bytes are gone; once none is left, its row and its
    review too (True)."""
    dropped = c.execute(
        "DELETE FROM repository_blobs WHERE digest = ? AND repository IN "
        "(SELECT repository FROM repository_blobs WHERE digest = ? LIMIT ?)",
        (digest, digest, LINK_BATCH),
    ).rowcount
    if dropped >= LINK_BATCH:
        return False
    c.execute("DELETE FROM blobs WHERE digest = ? AND state = ?", (digest, DELETING))
    c.execute("DELETE FROM gc_blob_reviews WHERE digest = ?", (digest,))
    return True


class ReviewQueries:
    """The review queues over `db` (`Metadata.reviews` gives those of its database)."""

    def __init__(self, db: Database):
        self.db = db
        self.budget_s = BUDGET_S[db.dialect]  # the default work of a transaction of decisions

    def _for_update(self) -> str:
        # PostgreSQL: collectors in other processes skip the rows one is claiming instead of waiting.
        return " FOR UPDATE SKIP LOCKED" if self.db.dialect == "postgresql" else ""

    async def claim_blobs(self, lease: str, limit: int, lease_s: float, until: float | None = None) -> list[str]:
        """Claim up to `limit` blob reviews due now (or by `until`, when earlier), earliest first, for
        `lease_s` seconds under `lease` (a token of the caller's); other collectors skip them until the
        claim lapses."""
        now = time.time()
        due_by = now if until is None else min(now, until)
        select = f"SELECT digest FROM gc_blob_reviews WHERE due_at <= ? ORDER BY due_at LIMIT ?{self._for_update()}"

        def claim(c: Connection) -> list[str]:
            digests = [row[0] for row in c.execute(select, (due_by, limit)).fetchall()]
            c.executemany(
                "UPDATE gc_blob_reviews SET due_at = ?, lease = ? WHERE digest = ?",
                [(now + lease_s, lease, d) for d in digests],
            )
            return digests

        return await self.db.write_locking(claim)

    async def claim_manifests(
        self, lease: str, limit: int, lease_s: float, until: float | None = None
    ) -> list[tuple[str, str]]:
        """Claim up to `limit` due manifest reviews, as `claim_blobs` does; (repository, digest) each."""
        now = time.time()
        due_by = now if until is None else min(now, until)
        select = (
            "SELECT repository, digest FROM gc_manifest_reviews WHERE due_at <= ? ORDER BY due_at LIMIT ?"
            + self._for_update()
        )

        def claim(c: Connection) -> list[tuple[str, str]]:
            keys = [(row[0], row[1]) for row in c.execute(select, (due_by, limit)).fetchall()]
            c.executemany(
                "UPDATE gc_manifest_reviews SET due_at = ?, lease = ? WHERE repository = ? AND digest = ?",
                [(now + lease_s, lease, r, d) for r, d in keys],
            )
            return keys

        return await self.db.write_locking(claim)

    async def decide_manifests(
        self,
        keys: Sequence[tuple[str, str]],
        lease: str,
        grace_s: float,
        delete_untagged: bool,
        budget_s: float | None = None,
    ) -> list[Decision]:
        """Decide claimed manifest reviews ((repository, digest) each) in one transaction, in order,
        until their work has taken `budget_s` (None: `self.budget_s`): the decisions of the first of
        `keys` (at least one).
        Each removes the manifest when no root reaches it (see the module's rules) and no index lists
        it any more, queuing reviews of its children, referrers and blobs, due at once; keeps it for
        good; or reviews it again once what keeps it is no longer young."""
        now, lock = time.time(), row_lock(self.db.dialect, "UPDATE")
        budget = self.budget_s if budget_s is None else budget_s
        return await self.db.write_locking(
            lambda c: _within_budget(
                keys, lambda k: _decide_manifest(c, *k, lease, now, grace_s, delete_untagged, lock), budget
            )
        )

    async def decide_blobs(
        self, digests: Sequence[str], lease: str, grace_s: float, lease_s: float, budget_s: float | None = None
    ) -> list[Decision]:
        """Decide claimed blob reviews in one transaction, in order, until their work has taken
        `budget_s`: the decisions of the first of `digests` (at least one). Each marks the blob
        `deleting` (DOOMED) when no manifest refers to it or is it and it was not used within
        `grace_s`, renewing the claim for `lease_s` while the caller deletes its bytes; or keeps it,
        for good or until its grace ends. A blob found `deleting` (a collector stopped half-way) is
        DOOMED too."""
        now, lock = time.time(), row_lock(self.db.dialect, "UPDATE")
        budget = self.budget_s if budget_s is None else budget_s
        return await self.db.write_locking(
            lambda c: _within_budget(digests, lambda d: _decide_blob(c, d, lease, now, grace_s, lease_s, lock), budget)
        )

    async def forget_blobs(self, digests: Sequence[str], budget_s: float | None = None) -> None:
        """Once the bytes of DOOMED blobs are gone: drop their links, rows and reviews, in transactions
        of up to `budget_s` of work (a blob with more than LINK_BATCH links takes one per batch)."""
        budget = self.budget_s if budget_s is None else budget_s

        def forget(c: Connection, digests: Sequence[str]) -> list[bool]:
            return _within_budget(digests, lambda digest: _forget(c, digest), budget)

        pending = list(digests)
        while pending:
            done = await self.db.write_locking(lambda c, batch=pending: forget(c, batch))  # type: ignore[misc]
            pending = [d for d, gone in zip(pending, done, strict=False) if not gone] + pending[len(done) :]

    async def next_due(self) -> float | None:
        """When the earliest queued review is due (None when the queues are empty); a read."""

        def read(c: Connection) -> float | None:
            times = [
                row[0]
                for sql in ("SELECT MIN(due_at) FROM gc_blob_reviews", "SELECT MIN(due_at) FROM gc_manifest_reviews")
                for row in [one(c.execute(sql))]
                if row[0] is not None
            ]
            return min(times) if times else None

        return await self.db.read(read)

    async def totals(self) -> QueueTotals:
        """How many reviews are queued, and how many are due now."""
        now = time.time()

        def count(c: Connection) -> QueueTotals:
            figures: list[int] = []
            for table in ("gc_blob_reviews", "gc_manifest_reviews"):
                total, due = one(
                    c.execute(
                        f"SELECT COUNT(*), COALESCE(SUM(CASE WHEN due_at <= ? THEN 1 ELSE 0 END), 0) FROM {table}",
                        (now,),
                    )
                )
                figures += [int(total), int(due)]
            return QueueTotals(*figures)

        return await self.db.scan(count)
