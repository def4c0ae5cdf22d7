"""Incremental garbage collection: what changes queued for review (storage/metadata/reviews.py) is
decided a few items at a time, in short transactions, by a collector in every worker and replica.

The work is proportional to what changed, not to what exists: no snapshot, no lease over the whole
index. A collector claims a small batch of due reviews (other collectors skip them until the claim
lapses), then decides them, several to a short transaction: a manifest nothing keeps is deleted,
queuing its children, referrers and blobs for review at once; a blob nothing refers to and unused
within the grace period goes in the same two steps as in a full collection (registry/gc.py): its
row marked `deleting`, its bytes deleted, its row dropped. A collector that stops between the steps
leaves the review claimed; once the claim lapses, another finishes the work.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from typing import TypeVar

from registry.config import Settings, parse_duration
from registry.layout import blob_key
from storage.drivers import Driver
from storage.metadata import Metadata
from storage.metadata.reviews import DOOMED, KEPT, LATER, LOST, REMOVED, WAITING, Decision

log = logging.getLogger("registry.gc")
K = TypeVar("K")

BATCH = 50  # reviews claimed at once by one collector
LEASE_S = 300.0  # how long a claim lasts: far longer than deciding a batch (and deleting its bytes) takes
REST = 0.5  # after each transaction of decisions, the collector rests this many times as long as it took (gc.rest)


class Pace:
    """How many decisions fit a transaction of `budget_s` seconds of work, from how long the last one
    took: one at first, then at most twice as many as the last time."""

    def __init__(self, budget_s: float):
        self.budget_s, self.size, self.taken = budget_s, 1, 1

    def take(self, left: int) -> int:
        """How many of `left` decisions the next transaction takes."""
        self.taken = max(1, min(left, self.size))
        return self.taken

    def took(self, seconds: float) -> None:
        """Record that the work of the decisions last taken took `seconds`."""
        fit = int(self.budget_s * self.taken / seconds) if seconds > 0 else 2 * self.taken
        self.size = max(1, min(2 * self.taken, fit))


@dataclass
class ReviewReport:
    """What collecting due reviews did."""

    manifests_removed: int = 0
    manifest_bytes_removed: int = 0
    blobs_removed: int = 0
    blob_bytes_removed: int = 0
    reviews: int = 0  # decided by this collector
    kept: int = 0  # dropped: something refers to it, or it is gone already
    later: int = 0  # kept for now, reviewed again when its grace ends
    lost: int = 0  # claimed by another collector meanwhile: left to it
    seconds: float = 0.0
    dry_run: bool = False  # what `registry gc --json` prints has the full collection's `dry_run` too

    def summary(self) -> str:
        return (
            f"reviewed {self.reviews}: removed {self.manifests_removed} manifests, {self.blobs_removed} blobs "
            f"({self.blob_bytes_removed / (1 << 20):.1f} MiB); kept {self.kept}, {self.later} to review again "
            f"later; {self.seconds:.2f}s"
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


class ReviewCollector:
    """Decides the due reviews of `metadata`, deleting bytes through `driver`; one per worker."""

    def __init__(
        self,
        metadata: Metadata,
        driver: Driver,
        grace_s: float,
        delete_untagged: bool = False,
        batch: int = BATCH,
        lease_s: float = LEASE_S,
        rest: float = REST,
        budget_s: float | None = None,
    ):
        self.metadata, self.driver = metadata, driver
        self.reviews = metadata.reviews
        # The work of a transaction of decisions (None: the database's default), for each kind.
        budget = self.reviews.budget_s if budget_s is None else budget_s
        self.manifest_pace, self.blob_pace = Pace(budget), Pace(budget)
        self.grace_s, self.delete_untagged = grace_s, delete_untagged
        self.batch, self.lease_s, self.rest = batch, lease_s, rest
        self.lease = uuid.uuid4().hex  # this collector's token on the reviews it claims

    @classmethod
    def configured(cls, metadata: Metadata, driver: Driver, settings: Settings) -> ReviewCollector:
        """The collector `settings` describe (`gc.grace`, `gc.delete_untagged`, `gc.rest`)."""
        gc = settings.gc
        return cls(metadata, driver, parse_duration(gc.grace), gc.delete_untagged, rest=gc.rest)

    async def run_batch(self, report: ReviewReport, until: float | None = None) -> int:
        """Claim and decide one batch of due manifest reviews, then one of blob reviews (due now, or by
        `until` when given); returns how many reviews it claimed (0: none was due)."""
        manifests = await self.reviews.claim_manifests(self.lease, self.batch, self.lease_s, until)
        async for _ in self._in_turns(
            manifests,
            report,
            self.manifest_pace,
            lambda keys, timed: self.reviews.decide_manifests(
                keys, self.lease, self.grace_s, self.delete_untagged, timed
            ),
        ):
            pass
        blobs = await self.reviews.claim_blobs(self.lease, self.batch, self.lease_s, until)
        async for decided in self._in_turns(
            blobs,
            report,
            self.blob_pace,
            lambda keys, timed: self.reviews.decide_blobs(keys, self.lease, self.grace_s, self.lease_s, timed),
        ):
            doomed = [digest for digest, decision in decided if decision.outcome == DOOMED]
            for digest in doomed:
                await self.driver.delete(blob_key(digest))
            await self.reviews.forget_blobs(doomed)
        return len(manifests) + len(blobs)

    async def _in_turns(
        self,
        keys: list[K],
        report: ReviewReport,
        pace: Pace,
        decide: Callable[[list[K], Callable[[float], None]], Awaitable[list[Decision]]],
    ) -> AsyncIterator[list[tuple[K, Decision]]]:
        """Decide `keys` a transaction at a time, as many as `pace` fits in one (`decide` tells how
        long their work took in it), counting each decision in `report`; yields each transaction's
        (key, decision), then rests `rest` times as long as the transaction and what the caller did
        with it took."""
        while keys:
            started = time.perf_counter()
            n = pace.take(len(keys))
            taken, keys = keys[:n], keys[n:]
            decisions = await decide(taken, pace.took)
            for decision in decisions:
                self._count(report, decision)
            yield list(zip(taken, decisions, strict=True))
            await self._rest(started)

    async def _rest(self, started: float) -> None:
        """Leave the index's writer to pushes for `rest` times as long as the last transaction took."""
        if self.rest > 0:
            await asyncio.sleep((time.perf_counter() - started) * self.rest)

    @staticmethod
    def _count(report: ReviewReport, decision: Decision) -> None:
        if decision.outcome == LOST:
            report.lost += 1
            return
        report.reviews += 1
        if decision.outcome in (KEPT, WAITING):
            report.kept += 1
        elif decision.outcome == LATER:
            report.later += 1
        elif decision.outcome == REMOVED:
            report.manifests_removed += 1
            report.manifest_bytes_removed += decision.size
        elif decision.outcome == DOOMED:
            report.blobs_removed += 1
            report.blob_bytes_removed += decision.size

    async def run_due(self) -> ReviewReport:
        """Decide every review due when it starts, and those its removals lead to (queued due before
        any other), then end, also while pushes keep queueing reviews."""
        started = time.time()
        report = ReviewReport()
        while await self.run_batch(report, started):
            pass
        report.seconds = time.time() - started
        if report.reviews:
            log.info("incremental garbage collection: %s", report.summary())
        return report

    async def run_forever(self, poll_s: float) -> None:
        """Decide due reviews as they come: batch after batch while there are any, then look again
        every `poll_s` seconds (a read). A failure (the index or storage unavailable) is logged and
        retried after `poll_s`; what it left claimed is taken again once the claim lapses."""
        report = ReviewReport()
        while True:
            try:
                due = await self.reviews.next_due()
                if due is not None and due <= time.time():
                    while await self.run_batch(report):
                        await asyncio.sleep(0)
                    if report.reviews:
                        log.info("incremental garbage collection: %s", report.summary())
                    report = ReviewReport()
            except Exception:
                log.exception("incremental garbage collection failed; trying again in %.0fs", poll_s)
            await asyncio.sleep(poll_s)


async def run_due_side_by_side(collectors: Sequence[ReviewCollector]) -> ReviewReport:
    """Decide every review due when it starts with `collectors` at once, each claiming batches of its
    own (on PostgreSQL their round trips and reads from disk overlap; SQLite takes their writes one
    at a time); what they did, summed (`seconds`: the longest)."""
    reports = await asyncio.gather(*(collector.run_due() for collector in collectors))
    total = ReviewReport()
    for report in reports:
        for name, value in asdict(report).items():
            if isinstance(value, int | float) and not isinstance(value, bool) and name != "seconds":
                setattr(total, name, getattr(total, name) + value)
    total.seconds = max((report.seconds for report in reports), default=0.0)
    return total
