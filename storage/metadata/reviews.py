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
A transaction decides several reviews together, a statement for all of them at each step (a lock,
a read, each kind of change); a manifest an index lists or with a subject walks what reaches it on
its own. The collector sizes the transactions to about BUDGET_S of work (per database).

The rules are those of the full collection (registry/gc.py): a manifest is kept when a root reaches
it through index children and referrer subjects (a root is tagged, created within the grace period,
or, unless untagged manifests are collected, any manifest but a referrer whose subject is gone); a
blob is kept while a manifest refers to it, is it, or it was used within the grace period.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from storage.metadata.database import Connection, Database, Row, one, pairs_in, placeholders, row_lock
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


def queue_manifest_dependents(c: Connection, keys: Sequence[tuple[str, str]], due_at: float) -> None:
    """Before manifests `keys` ((repository, digest) each) are deleted (while their references are
    still there): queue reviews of what may go with them: the manifests they list, their referrers,
    their blobs and their own bytes."""
    if not keys:
        return
    pairs, values = pairs_in(keys)
    c.execute(
        "INSERT INTO gc_manifest_reviews (repository, digest, due_at) "
        f"SELECT repository, child, ? FROM manifest_references WHERE (repository, manifest) IN ({pairs}) "
        "AND kind = 'manifest' ON CONFLICT (repository, digest) DO NOTHING",
        (due_at, *values),
    )
    c.execute(
        "INSERT INTO gc_manifest_reviews (repository, digest, due_at) "
        f"SELECT repository, digest, ? FROM manifests WHERE (repository, subject) IN ({pairs}) "
        "ON CONFLICT (repository, digest) DO NOTHING",
        (due_at, *values),
    )
    c.execute(
        "INSERT INTO gc_blob_reviews (digest, due_at) "
        f"SELECT DISTINCT child, ? FROM manifest_references WHERE (repository, manifest) IN ({pairs}) "
        "AND kind = 'blob' ON CONFLICT (digest) DO NOTHING",
        (due_at, *values),
    )
    queue_blobs(c, sorted({digest for _, digest in keys}), due_at)


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

Key = tuple[str, str]  # (repository, digest) of a manifest review
T = TypeVar("T")


def _claimed(c: Connection, table: str, columns: str, keys: tuple[str, list[str]], lease: str) -> set[Row]:
    """Which of `keys` (SQL listing values of `columns`, and its parameters) are reviews of `table`
    still under this collector's claim `lease`, as rows of `columns`."""
    sql, values = keys
    rows = c.execute(f"SELECT {columns} FROM {table} WHERE ({columns}) IN ({sql}) AND lease = ?", (*values, lease))
    return {tuple(row) for row in rows.fetchall()}


def _lock_rows(c: Connection, lock: str, select: str, values: Sequence[str]) -> None:
    """On PostgreSQL, lock the rows `select` reads (`lock`, a `row_lock` clause; in the order it gives,
    so that two transactions sharing rows never deadlock) in a statement of its own, so that the reads
    after it see what the lock waited for; nothing on SQLite (`lock` empty)."""
    if lock:
        c.execute(select + lock, values).fetchall()


def _manifest(c: Connection, repository: str, digest: str, lock: str) -> tuple[str | None, float, bool] | None:
    """(subject, created_at, tagged) of a manifest, or None when it does not exist; its row locked by
    `lock` first."""
    _lock_rows(c, lock, "SELECT 1 FROM manifests WHERE repository = ? AND digest = ?", (repository, digest))
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
    c: Connection, key: Key, size: int, now: float, grace_s: float, delete_untagged: bool, lock: str
) -> Decision:
    """Decide the review of manifest `key` (its row locked and read by the caller: `size`), walking
    what reaches it."""
    kept, due_at = _keeper(c, *key, now, grace_s, delete_untagged, lock)
    if due_at is not None:
        return Decision(LATER, due_at=due_at)
    if kept:
        return Decision(KEPT)
    listed = c.execute(
        "SELECT 1 FROM manifest_references WHERE repository = ? AND child = ? AND kind = 'manifest' LIMIT 1", key
    ).fetchone()
    return Decision(WAITING) if listed is not None else Decision(REMOVED, size)


def _carry_out(c: Connection, decisions: dict[Key, Decision]) -> None:
    """Act on manifest decisions: drop the reviews decided for good, set when the LATER ones are due
    again (their claim released), and remove the REMOVED manifests."""
    done = [key for key, decision in decisions.items() if decision.outcome != LATER]
    if done:
        pairs, values = pairs_in(done)
        c.execute(f"DELETE FROM gc_manifest_reviews WHERE (repository, digest) IN ({pairs})", values)
    later = [(decision.due_at, *key) for key, decision in decisions.items() if decision.outcome == LATER]
    if later:
        c.executemany(
            "UPDATE gc_manifest_reviews SET due_at = ?, lease = NULL WHERE repository = ? AND digest = ?", later
        )
    _remove_manifests(c, [key for key, decision in decisions.items() if decision.outcome == REMOVED])


def _decide_manifests(
    c: Connection,
    keys: Sequence[Key],
    lease: str,
    now: float,
    grace_s: float,
    delete_untagged: bool,
    lock: str,
) -> list[Decision]:
    """Decide the reviews of manifests `keys` together: one lock, one read and one statement a change
    for the batch. A manifest no index lists and without a subject is decided from its own row; one
    that an index lists or that has a subject walks what reaches it (`_decide_manifest`), after the
    others and one at a time, so that it sees their removals."""
    if not keys:
        return []
    claimed = _claimed(c, "gc_manifest_reviews", "repository, digest", pairs_in(keys), lease)
    ours = [key for key in keys if key in claimed]
    if not ours:
        return [Decision(LOST)] * len(keys)
    pairs, values = pairs_in(ours)
    _lock_rows(
        c, lock, f"SELECT 1 FROM manifests WHERE (repository, digest) IN ({pairs}) ORDER BY repository, digest", values
    )
    found = {
        (row[0], row[1]): row[2:]
        for row in c.execute(
            "SELECT m.repository, m.digest, m.size, m.subject, m.created_at, "
            "EXISTS (SELECT 1 FROM tags t WHERE t.repository = m.repository AND t.digest = m.digest), "
            "EXISTS (SELECT 1 FROM manifest_references r WHERE r.repository = m.repository "
            "AND r.child = m.digest AND r.kind = 'manifest') "
            f"FROM manifests m WHERE (m.repository, m.digest) IN ({pairs})",
            values,
        ).fetchall()
    }
    decisions: dict[Key, Decision] = {}
    walks: list[tuple[Key, int]] = []
    for key in ours:
        row = found.get(key)
        if row is None:
            decisions[key] = Decision(KEPT)
            continue
        size, subject, created_at, tagged, listed = int(row[0]), row[1], float(row[2]), bool(row[3]), bool(row[4])
        if tagged or (not delete_untagged and subject is None):
            decisions[key] = Decision(KEPT)  # a root
        elif subject is not None or listed:
            walks.append((key, size))
        elif created_at >= now - grace_s:
            decisions[key] = Decision(LATER, due_at=created_at + grace_s)
        else:
            decisions[key] = Decision(REMOVED, size)
    _carry_out(c, decisions)
    for key, size in walks:
        decisions[key] = _decide_manifest(c, key, size, now, grace_s, delete_untagged, lock)
        _carry_out(c, {key: decisions[key]})
    return [decisions.get(key, Decision(LOST)) for key in keys]


def _remove_manifests(c: Connection, keys: Sequence[Key]) -> None:
    """Delete manifests `keys` (their rows, references and links), queuing reviews of what may go
    with them: the manifests they list, their referrers, their blobs and their own bytes. Reviews
    this leads to are due at once, before any other (what it frees was already old enough), so a run
    deciding what was due at its start follows its removals to their end."""
    if not keys:
        return
    queue_manifest_dependents(c, keys, DUE_FIRST)
    pairs, values = pairs_in(keys)
    c.execute(f"DELETE FROM manifests WHERE (repository, digest) IN ({pairs})", values)
    c.execute(f"DELETE FROM manifest_references WHERE (repository, manifest) IN ({pairs})", values)
    c.execute(f"DELETE FROM repository_blobs WHERE (repository, digest) IN ({pairs})", values)


def _decide_blobs(
    c: Connection, digests: Sequence[str], lease: str, now: float, grace_s: float, lease_s: float, lock: str
) -> list[Decision]:
    """Decide the reviews of blobs `digests` together: one lock, one read and one statement a change
    for the batch."""
    if not digests:
        return []
    claimed = _claimed(c, "gc_blob_reviews", "digest", (placeholders(len(digests)), list(digests)), lease)
    ours = [d for d in digests if (d,) in claimed]
    if not ours:
        return [Decision(LOST)] * len(digests)
    decisions: dict[str, Decision] = {}
    marked: list[str] = []
    marks = placeholders(len(ours))
    _lock_rows(c, lock, f"SELECT 1 FROM blobs WHERE digest IN ({marks}) ORDER BY digest", ours)
    found = {
        row[0]: row[1:]
        for row in c.execute(
            "SELECT b.digest, b.size, b.state, b.last_used_at, "
            "EXISTS (SELECT 1 FROM manifest_references r WHERE r.child = b.digest) "
            "OR EXISTS (SELECT 1 FROM manifests m WHERE m.digest = b.digest) "
            f"FROM blobs b WHERE b.digest IN ({marks})",
            ours,
        ).fetchall()
    }
    for digest in ours:
        row = found.get(digest)
        if row is None:
            decisions[digest] = Decision(KEPT)
            continue
        size, state, last_used_at, referenced = int(row[0]), row[1], float(row[2]), bool(row[3])
        if state == PRESENT and referenced:
            decisions[digest] = Decision(KEPT)
        elif state == PRESENT and last_used_at >= now - grace_s:
            decisions[digest] = Decision(LATER, due_at=last_used_at + grace_s)
        else:
            # Marked now, or by a collector that stopped before the bytes were gone: this one
            # finishes it. The review stays (claimed for a lease) until the row goes, so a crash in
            # between is reviewed again.
            decisions[digest] = Decision(DOOMED, size)
            if state == PRESENT:
                marked.append(digest)
    kept = [d for d, decision in decisions.items() if decision.outcome == KEPT]
    if kept:
        c.execute(f"DELETE FROM gc_blob_reviews WHERE digest IN ({placeholders(len(kept))})", kept)
    later = [(decision.due_at, d) for d, decision in decisions.items() if decision.outcome == LATER]
    if later:
        c.executemany("UPDATE gc_blob_reviews SET due_at = ?, lease = NULL WHERE digest = ?", later)
    if marked:
        sql = f"UPDATE blobs SET state = ?, last_used_at = ? WHERE digest IN ({placeholders(len(marked))})"
        c.execute(sql, (DELETING, now, *marked))
    doomed = [d for d, decision in decisions.items() if decision.outcome == DOOMED]
    if doomed:
        sql = f"UPDATE gc_blob_reviews SET due_at = ? WHERE digest IN ({placeholders(len(doomed))})"
        c.execute(sql, (now + lease_s, *doomed))
    return [decisions.get(d, Decision(LOST)) for d in digests]


def _forget(c: Connection, digests: Sequence[str]) -> bool:
    """Drop up to LINK_BATCH links of blobs whose bytes are gone; once none is left, their rows and
    reviews too (True)."""
    marks = placeholders(len(digests))
    dropped = c.execute(
        "DELETE FROM repository_blobs WHERE (repository, digest) IN "
        f"(SELECT repository, digest FROM repository_blobs WHERE digest IN ({marks}) LIMIT ?)",
        (*digests, LINK_BATCH),
    ).rowcount
    if dropped >= LINK_BATCH:
        return False
    c.execute(f"DELETE FROM blobs WHERE digest IN ({marks}) AND state = ?", (*digests, DELETING))
    c.execute(f"DELETE FROM gc_blob_reviews WHERE digest IN ({marks})", digests)
    return True


def _timed(fn: Callable[[Connection], T], timed: Callable[[float], None] | None) -> Callable[[Connection], T]:
    """`fn`, telling `timed` how many seconds each run of it took."""
    if timed is None:
        return fn

    def run(c: Connection) -> T:
        started = time.perf_counter()
        try:
            return fn(c)
        finally:
            timed(time.perf_counter() - started)

    return run


class ReviewQueries:
    """The review queues over `db` (`Metadata.reviews` gives those of its database)."""

    def __init__(self, db: Database):
        self.db = db
        self.budget_s = BUDGET_S[db.dialect]  # the default work of a transaction of decisions

    def _for_update(self) -> str:
        # PostgreSQL: collectors in other processes skip the rows one is claiming instead of waiting.
        return " FOR UPDATE SKIP LOCKED" if self.db.dialect == "postgresql" else ""

    async def claim_blobs(self, lease: str, limit: int, lease_s: float, until: float | None = None) -> list[str]:
        """Claim the earliest `limit` blob reviews due now (or by `until`, when earlier), in no order,
        for `lease_s` seconds under `lease` (a token of the caller's); other collectors skip them until
        the claim lapses."""
        rows = await self._claim("gc_blob_reviews", "digest", lease, limit, lease_s, until)
        return [row[0] for row in rows]

    async def claim_manifests(
        self, lease: str, limit: int, lease_s: float, until: float | None = None
    ) -> list[tuple[str, str]]:
        """Claim up to `limit` due manifest reviews, as `claim_blobs` does; (repository, digest) each."""
        rows = await self._claim("gc_manifest_reviews", "repository, digest", lease, limit, lease_s, until)
        return [(row[0], row[1]) for row in rows]

    async def _claim(
        self, table: str, key: str, lease: str, limit: int, lease_s: float, until: float | None
    ) -> list[Row]:
        """Claim due reviews of `table` in one statement: the `key` columns of each."""
        now = time.time()
        due_by = now if until is None else min(now, until)
        sql = (
            f"UPDATE {table} SET due_at = ?, lease = ? WHERE ({key}) IN (SELECT {key} FROM {table} "
            f"WHERE due_at <= ? ORDER BY due_at LIMIT ?{self._for_update()}) RETURNING {key}"
        )
        parameters = (now + lease_s, lease, due_by, limit)
        return await self.db.write_locking(lambda c: c.execute(sql, parameters).fetchall())

    async def decide_manifests(
        self,
        keys: Sequence[tuple[str, str]],
        lease: str,
        grace_s: float,
        delete_untagged: bool,
        timed: Callable[[float], None] | None = None,
    ) -> list[Decision]:
        """Decide claimed manifest reviews ((repository, digest) each) in one transaction: a decision
        each, in order. The caller sizes it (`budget_s` is the default work of one), from the seconds
        the work took inside the transaction, which `timed` is given (waiting for the database, BEGIN
        and COMMIT left out).
        Each removes the manifest when no root reaches it (see the module's rules) and no index lists
        it any more, queuing reviews of its children, referrers and blobs, due at once; keeps it for
        good; or reviews it again once what keeps it is no longer young."""
        now, lock = time.time(), row_lock(self.db.dialect, "UPDATE")
        decide = _timed(lambda c: _decide_manifests(c, keys, lease, now, grace_s, delete_untagged, lock), timed)
        return await self.db.write_locking(decide)

    async def decide_blobs(
        self,
        digests: Sequence[str],
        lease: str,
        grace_s: float,
        lease_s: float,
        timed: Callable[[float], None] | None = None,
    ) -> list[Decision]:
        """Decide claimed blob reviews in one transaction: a decision each, in order (sized as in
        `decide_manifests`). Each marks the blob `deleting` (DOOMED) when no manifest refers to it or
        is it and it was not used within `grace_s`, renewing the claim for `lease_s` while the caller
        deletes its bytes; or keeps it, for good or until its grace ends. A blob found `deleting` (a
        collector stopped half-way) is DOOMED too."""
        now, lock = time.time(), row_lock(self.db.dialect, "UPDATE")
        decide = _timed(lambda c: _decide_blobs(c, digests, lease, now, grace_s, lease_s, lock), timed)
        return await self.db.write_locking(decide)

    async def forget_blobs(self, digests: Sequence[str]) -> None:
        """Once the bytes of DOOMED blobs are gone: drop their links, rows and reviews, in one
        transaction (one more for every LINK_BATCH links they have)."""
        if digests:
            while not await self.db.write_locking(lambda c: _forget(c, digests)):
                pass

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
