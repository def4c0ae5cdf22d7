"""The review queues (storage/metadata/reviews.py) on SQLite and PostgreSQL: each change that may leave
garbage queues its review in its own transaction, due `review_delay_s` later; claims and decisions."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest

from storage.metadata import DELETING, Connection, Database, ManifestRecord, Metadata, MissingReferences
from storage.metadata.reviews import DOOMED, DUE_FIRST, KEPT, LATER, LOST, REMOVED, WAITING
from tests.support.counting import DelegatingDatabase

pytestmark = pytest.mark.anyio
T = TypeVar("T")
R = TypeVar("R")

D = ["sha256:" + f"{i:02d}" * 32 for i in range(20)]
OCI = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"
DELAY = 3600.0  # the fixture's store queues reviews due an hour after the change


async def blob_reviews(metadata: Metadata) -> dict[str, float]:
    rows = await metadata.db.read(lambda c: c.execute("SELECT digest, due_at FROM gc_blob_reviews").fetchall())
    return {row[0]: row[1] for row in rows}


async def manifest_reviews(metadata: Metadata) -> dict[tuple[str, str], float]:
    rows = await metadata.db.read(
        lambda c: c.execute("SELECT repository, digest, due_at FROM gc_manifest_reviews").fetchall()
    )
    return {(row[0], row[1]): row[2] for row in rows}


async def clear(metadata: Metadata) -> None:
    def delete(c) -> None:
        c.execute("DELETE FROM gc_blob_reviews")
        c.execute("DELETE FROM gc_manifest_reviews")

    await metadata.db.write(delete)


async def image(metadata: Metadata, repository: str, digest: str, layers: list[str], tag: str | None) -> None:
    for layer in layers:
        await metadata.link_blob(repository, layer, 10)
    await metadata.put_manifest(repository, ManifestRecord(digest, OCI, 100), dict.fromkeys(layers, 10), {}, tag)


def due_about_now_plus_delay(due: float) -> bool:
    return time.time() + DELAY - 30 < due <= time.time() + DELAY


async def test_an_upload_no_manifest_refers_to_queues_a_blob_review(metadata: Metadata) -> None:
    await metadata.create_upload("u1", "r")
    assert await metadata.finish_upload("u1", "r", D[0], 0)
    await metadata.link_blob("other", D[1], 10)  # a mount, or a blob stored by the cache
    reviews = await blob_reviews(metadata)
    assert set(reviews) == {D[0], D[1]} and all(due_about_now_plus_delay(due) for due in reviews.values())


async def test_an_upload_of_a_blob_a_manifest_refers_to_queues_nothing(metadata: Metadata) -> None:
    await image(metadata, "r", D[9], [D[0]], "v1")
    await clear(metadata)
    await metadata.link_blob("r2", D[0], 10)
    assert await blob_reviews(metadata) == {}


async def test_a_manifest_pushed_without_a_tag_queues_its_review_and_a_tagged_one_none(metadata: Metadata) -> None:
    await image(metadata, "r", D[9], [D[0]], None)
    await image(metadata, "r", D[8], [D[1]], "v1")
    reviews = await manifest_reviews(metadata)
    assert set(reviews) == {("r", D[9])} and due_about_now_plus_delay(reviews[("r", D[9])])


async def test_deleting_a_tag_queues_the_manifest_it_named(metadata: Metadata) -> None:
    await image(metadata, "r", D[9], [D[0]], "v1")
    await clear(metadata)
    assert await metadata.delete_tag("r", "v1")
    assert not await metadata.delete_tag("r", "v1")
    assert set(await manifest_reviews(metadata)) == {("r", D[9])}


async def test_moving_a_tag_queues_the_manifest_it_named_before(metadata: Metadata) -> None:
    await image(metadata, "r", D[9], [D[0]], "v1")
    await image(metadata, "r", D[8], [D[0]], "v1")  # the tag moves
    await image(metadata, "r", D[8], [D[0]], "v1")  # and stays
    assert set(await manifest_reviews(metadata)) == {("r", D[9])}


async def test_deleting_a_manifest_queues_its_children_referrers_blobs_and_bytes(metadata: Metadata) -> None:
    await image(metadata, "r", D[9], [D[0]], None)
    await image(metadata, "r", D[8], [D[1], D[2]], None)
    index = ManifestRecord(D[7], INDEX, 200)
    await metadata.put_manifest("r", index, {}, {D[9]: 100, D[8]: 100}, "v1")
    signature = ManifestRecord(D[6], OCI, 50, artifact_type="application/x-signature", subject=D[7])
    await metadata.link_blob("r", D[3], 10)
    await metadata.put_manifest("r", signature, {D[3]: 10}, {}, None)
    await clear(metadata)
    assert await metadata.delete_manifest("r", D[7])
    assert set(await manifest_reviews(metadata)) == {("r", D[9]), ("r", D[8]), ("r", D[6])}
    assert set(await blob_reviews(metadata)) == {D[7]}, "an index refers to no blob: only its own bytes"
    await clear(metadata)
    assert await metadata.delete_manifest("r", D[8])
    assert set(await blob_reviews(metadata)) == {D[8], D[1], D[2]}


async def test_deleting_a_repository_queues_every_blob_it_linked_or_referred_to(metadata: Metadata) -> None:
    await image(metadata, "r", D[9], [D[0], D[1]], "v1")
    await metadata.link_blob("r", D[2], 10)
    await clear(metadata)
    assert await metadata.delete_repository("r") is not None
    assert set(await blob_reviews(metadata)) == {D[9], D[0], D[1], D[2]}


async def test_evicting_cached_content_queues_its_blobs(metadata: Metadata) -> None:
    await metadata.cache.put_manifest("cache/app", ManifestRecord(D[9], OCI, 100), {D[0]: 10}, {}, "latest")
    await clear(metadata)
    later = time.time() + 10
    assert await metadata.cache.evict("cache/app", D[9], later, ["cache"], ["cache"]) is not None
    assert set(await blob_reviews(metadata)) == {D[9], D[0]}


async def test_a_cached_tag_that_moves_queues_the_manifest_it_named(metadata: Metadata) -> None:
    await metadata.cache.put_manifest("cache/app", ManifestRecord(D[9], OCI, 100), {D[0]: 10}, {}, "latest")
    await metadata.cache.put_manifest("cache/app", ManifestRecord(D[8], OCI, 100), {D[0]: 10}, {}, "latest")
    assert set(await manifest_reviews(metadata)) == {("cache/app", D[9])}


async def make_due(metadata: Metadata) -> None:
    def due(c) -> None:
        c.execute("UPDATE gc_blob_reviews SET due_at = 0")
        c.execute("UPDATE gc_manifest_reviews SET due_at = 0")

    await metadata.db.write(due)


async def test_a_claim_is_one_collectors_until_it_lapses(metadata: Metadata) -> None:
    await metadata.link_blob("r", D[0], 10)
    await metadata.link_blob("r", D[1], 10)
    assert await metadata.reviews.claim_blobs("a", 10, 300) == []  # not due yet
    await make_due(metadata)
    assert sorted(await metadata.reviews.claim_blobs("a", 10, 300)) == [D[0], D[1]]
    assert await metadata.reviews.claim_blobs("b", 10, 300) == [], "claimed by a"
    assert (await metadata.reviews.decide_blobs([D[0]], "b", 0, 300))[0].outcome == LOST
    assert (await metadata.reviews.decide_blobs([D[0]], "a", 3600, 300))[0].outcome == LATER, "used within the grace"
    await make_due(metadata)  # as when a's claim lapses
    assert sorted(await metadata.reviews.claim_blobs("b", 10, 300)) == [D[0], D[1]]
    assert (await metadata.reviews.decide_blobs([D[1]], "a", 0, 300))[0].outcome == LOST


async def test_a_doomed_blob_stays_deleting_and_claimed_until_forgotten(metadata: Metadata) -> None:
    await metadata.link_blob("r", D[0], 10)
    await make_due(metadata)
    await metadata.reviews.claim_blobs("a", 10, 300)
    decision = (await metadata.reviews.decide_blobs([D[0]], "a", 0, 300))[0]
    assert (decision.outcome, decision.size) == (DOOMED, 10)
    assert await metadata.reserve_blob(D[0]) == DELETING
    assert set(await blob_reviews(metadata)) == {D[0]}, "kept until the row goes: a crash is reviewed again"
    # A collector that stopped here: once the claim lapses, another finishes the work.
    await make_due(metadata)
    assert await metadata.reviews.claim_blobs("b", 10, 300) == [D[0]]
    assert (await metadata.reviews.decide_blobs([D[0]], "b", 0, 300))[0].outcome == DOOMED
    await metadata.reviews.forget_blobs([D[0]])
    assert await metadata.reserve_blob(D[0]) is None and await blob_reviews(metadata) == {}
    assert await metadata.repositories_with_blob(D[0]) == []


async def test_a_referenced_blob_review_is_dropped(metadata: Metadata) -> None:
    await metadata.link_blob("r", D[0], 10)
    await image(metadata, "r", D[9], [D[0]], "v1")
    await make_due(metadata)
    await metadata.reviews.claim_blobs("a", 10, 300)
    assert (await metadata.reviews.decide_blobs([D[0]], "a", 0, 300))[0].outcome == KEPT
    assert D[0] not in await blob_reviews(metadata)


async def test_untagged_manifests_go_only_when_asked_and_children_wait_for_their_index(metadata: Metadata) -> None:
    await image(metadata, "r", D[9], [D[0]], None)
    index = ManifestRecord(D[7], INDEX, 200)
    await metadata.put_manifest("r", index, {}, {D[9]: 100}, None)
    await make_due(metadata)
    assert len(await metadata.reviews.claim_manifests("a", 10, 300)) == 2
    assert (await metadata.reviews.decide_manifests([("r", D[9])], "a", 0, False))[0].outcome == KEPT
    assert (await metadata.reviews.decide_manifests([("r", D[7])], "a", 0, False))[0].outcome == KEPT
    await metadata.db.write(
        lambda c: c.executemany(
            "INSERT INTO gc_manifest_reviews (repository, digest, due_at) VALUES ('r', ?, 0)", [(D[9],), (D[7],)]
        )
    )
    await metadata.reviews.claim_manifests("a", 10, 300)
    assert (await metadata.reviews.decide_manifests([("r", D[9])], "a", 0, True))[0].outcome == WAITING
    assert (await metadata.reviews.decide_manifests([("r", D[7])], "a", 0, True))[0].outcome == REMOVED
    assert await manifest_reviews(metadata) == {("r", D[9]): DUE_FIRST}, "due at once, before any other"
    await metadata.reviews.claim_manifests("a", 10, 300)
    assert (await metadata.reviews.decide_manifests([("r", D[9])], "a", 0, True))[0].outcome == REMOVED
    assert set(await blob_reviews(metadata)) >= {D[9], D[7], D[0]}


async def test_a_transaction_decides_many_manifests_each_as_alone(metadata: Metadata) -> None:
    await image(metadata, "r", D[10], [D[0]], "v1")  # tagged: kept
    await image(metadata, "r", D[11], [D[1]], None)  # nothing keeps it: removed
    await image(metadata, "r", D[12], [D[2]], None)  # listed by index D[13], which goes first: removed
    await metadata.put_manifest("r", ManifestRecord(D[13], INDEX, 200), {}, {D[12]: 100}, None)
    await image(metadata, "r", D[15], [D[3]], None)  # young: later
    await image(metadata, "s", D[11], [D[1]], None)  # claimed by another collector: lost

    def setup(c: Connection) -> None:
        c.execute("UPDATE manifests SET created_at = 0 WHERE NOT (repository = 'r' AND digest = ?)", (D[15],))
        c.execute("INSERT INTO gc_manifest_reviews (repository, digest, due_at) VALUES ('r', ?, 0)", (D[14],))
        c.execute("INSERT INTO gc_manifest_reviews (repository, digest, due_at) VALUES ('r', ?, 0)", (D[10],))
        c.execute("UPDATE gc_manifest_reviews SET due_at = 0, lease = 'a'")
        c.execute("UPDATE gc_manifest_reviews SET lease = 'b' WHERE repository = 's'")

    await metadata.db.write(setup)
    keys = [("r", D[12]), ("r", D[10]), ("r", D[11]), ("r", D[14]), ("s", D[11]), ("r", D[13]), ("r", D[15])]
    decisions = await metadata.reviews.decide_manifests(keys, "a", 600, True)
    assert [d.outcome for d in decisions] == [REMOVED, KEPT, REMOVED, KEPT, LOST, REMOVED, LATER]
    assert decisions[2].size == 100 and decisions[5].size == 200
    assert decisions[6].due_at is not None and decisions[6].due_at > time.time() + 500
    left = await metadata.db.read(lambda c: c.execute("SELECT repository, digest FROM manifests").fetchall())
    assert sorted(map(tuple, left)) == [("r", D[10]), ("r", D[15]), ("s", D[11])]
    reviews = await manifest_reviews(metadata)
    assert set(reviews) == {("s", D[11]), ("r", D[15])}, "decided reviews dropped, the young one kept"
    assert {D[1], D[2], D[11], D[12], D[13]} <= set(await blob_reviews(metadata)), "what the removals freed"
    assert await metadata.repositories_with_blob(D[11]) == ["s"], "the removed manifest's own link gone"


async def test_a_transaction_decides_many_blobs_each_as_alone(metadata: Metadata) -> None:
    for digest in D[:6]:
        await metadata.link_blob("r", digest, 10)
    await image(metadata, "r", D[9], [D[0]], "v1")  # D[0] referred to: kept

    def setup(c: Connection) -> None:
        c.execute("UPDATE blobs SET last_used_at = 0 WHERE digest <> ?", (D[2],))  # D[2] used lately: later
        c.execute("UPDATE blobs SET state = ? WHERE digest = ?", (DELETING, D[5]))  # half-way: doomed again
        c.execute("DELETE FROM blobs WHERE digest = ?", (D[4],))  # gone already: kept
        c.execute("DELETE FROM gc_blob_reviews")
        c.executemany("INSERT INTO gc_blob_reviews (digest, due_at, lease) VALUES (?, 0, 'a')", [(d,) for d in D[:6]])
        c.execute("UPDATE gc_blob_reviews SET lease = 'b' WHERE digest = ?", (D[3],))  # another's: lost

    await metadata.db.write(setup)
    decisions = await metadata.reviews.decide_blobs(D[:6], "a", 600, 300)
    assert [d.outcome for d in decisions] == [KEPT, DOOMED, LATER, LOST, KEPT, DOOMED]
    assert decisions[1].size == 10
    assert await metadata.reserve_blob(D[1]) == DELETING and await metadata.reserve_blob(D[2]) is not None
    assert set(await blob_reviews(metadata)) == {D[1], D[2], D[3], D[5]}
    await metadata.reviews.forget_blobs([D[1], D[5]])
    assert await metadata.reserve_blob(D[1]) is None and await metadata.repositories_with_blob(D[5]) == []
    assert set(await blob_reviews(metadata)) == {D[2], D[3]}


async def test_a_young_manifest_is_reviewed_again_when_its_grace_ends(metadata: Metadata) -> None:
    await image(metadata, "r", D[9], [D[0]], None)
    await make_due(metadata)
    await metadata.reviews.claim_manifests("a", 10, 300)
    decision = (await metadata.reviews.decide_manifests([("r", D[9])], "a", 600, True))[0]
    assert decision.outcome == LATER and decision.due_at == pytest.approx(time.time() + 600, abs=30)
    assert (await manifest_reviews(metadata))[("r", D[9])] == decision.due_at


async def test_queue_totals_count_what_is_due(metadata: Metadata) -> None:
    await metadata.link_blob("r", D[0], 10)
    await image(metadata, "r", D[9], [D[1]], None)
    totals = await metadata.reviews.totals()
    assert (totals.blobs, totals.blobs_due, totals.manifests, totals.manifests_due) == (2, 0, 1, 0)
    await make_due(metadata)
    assert (await metadata.reviews.totals()).blobs_due == 2
    assert await metadata.reviews.next_due() == 0


class Held(DelegatingDatabase):
    """`db` whose writes hold their transaction open, their statements run, until `release` is set:
    a push or a decision caught half-way."""

    def __init__(self, db: Database):
        super().__init__(db)
        self.ran, self.release = threading.Event(), threading.Event()

    def _held(self, fn: Callable[[Connection], T]) -> Callable[[Connection], T]:
        def held(c: Connection) -> T:
            result = fn(c)
            self.ran.set()
            assert self.release.wait(10), "never released"
            return result

        return held

    async def write(self, fn: Callable[[Connection], T]) -> T:
        return await self.db.write(self._held(fn))

    async def write_locking(self, fn: Callable[[Connection], T]) -> T:
        return await self.db.write_locking(self._held(fn))


async def half_way(held: Held, work: Awaitable[R]) -> asyncio.Task[R]:
    task = asyncio.ensure_future(work)
    assert await asyncio.to_thread(held.ran.wait, 10), "the held write never ran"
    return task


async def waits(task: asyncio.Task[Any]) -> bool:
    await asyncio.sleep(0.3)
    return not task.done()


async def test_a_decision_waits_for_a_push_referring_to_its_blob_and_keeps_it(metadata: Metadata) -> None:
    await metadata.link_blob("r", D[0], 10)
    await make_due(metadata)
    await metadata.reviews.claim_blobs("a", 10, 300)
    held = Held(metadata.db)
    push = await half_way(held, Metadata(held).put_manifest("r", ManifestRecord(D[9], OCI, 100), {D[0]: 10}, {}, "v1"))
    decision = asyncio.ensure_future(metadata.reviews.decide_blobs([D[0]], "a", 0, 300))
    assert await waits(decision), "decided while a push referring to the blob was under way"
    held.release.set()
    await push
    assert (await decision)[0].outcome == KEPT
    assert await metadata.reserve_blob(D[0]) == "present"


async def test_a_push_waits_for_a_decision_dooming_its_blob_and_is_refused(metadata: Metadata) -> None:
    await metadata.link_blob("r", D[0], 10)
    await make_due(metadata)
    await metadata.reviews.claim_blobs("a", 10, 300)
    held = Held(metadata.db)
    decision = await half_way(held, Metadata(held).reviews.decide_blobs([D[0]], "a", 0, 300))
    push = asyncio.ensure_future(metadata.put_manifest("r", ManifestRecord(D[9], OCI, 100), {D[0]: 10}, {}, "v1"))
    assert await waits(push), "a push went on while its blob was being doomed"
    held.release.set()
    assert (await decision)[0].outcome == DOOMED
    with pytest.raises(MissingReferences):
        await push
    assert await metadata.get_manifest("r", D[9]) is None


async def test_a_decision_waits_for_a_push_tagging_its_manifest_and_keeps_it(metadata: Metadata) -> None:
    await image(metadata, "r", D[9], [D[0]], None)
    await make_due(metadata)
    await metadata.reviews.claim_manifests("a", 10, 300)
    held = Held(metadata.db)
    push = await half_way(held, Metadata(held).put_manifest("r", ManifestRecord(D[9], OCI, 100), {D[0]: 10}, {}, "v1"))
    decision = asyncio.ensure_future(metadata.reviews.decide_manifests([("r", D[9])], "a", 0, True))
    assert await waits(decision), "decided while a push tagging the manifest was under way"
    held.release.set()
    await push
    assert (await decision)[0].outcome == KEPT
    assert await metadata.get_tagged_manifest("r", "v1") is not None


async def test_a_push_tagging_a_manifest_being_removed_records_it_again(metadata: Metadata) -> None:
    await image(metadata, "r", D[9], [D[0]], None)
    await make_due(metadata)
    await metadata.reviews.claim_manifests("a", 10, 300)
    held = Held(metadata.db)
    decision = await half_way(held, Metadata(held).reviews.decide_manifests([("r", D[9])], "a", 0, True))
    push = asyncio.ensure_future(metadata.put_manifest("r", ManifestRecord(D[9], OCI, 100), {D[0]: 10}, {}, "v1"))
    assert await waits(push), "a push went on while its manifest was being removed"
    held.release.set()
    assert (await decision)[0].outcome == REMOVED
    await push
    assert await metadata.get_tagged_manifest("r", "v1") is not None
    references = await metadata.db.read(
        lambda c: c.execute("SELECT child FROM manifest_references WHERE manifest = ?", (D[9],)).fetchall()
    )
    assert [row[0] for row in references] == [D[0]], "recorded again whole, its references too"
