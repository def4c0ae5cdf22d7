"""The incremental collector (registry/reviews.py) on every backend: it removes exactly what a full
collection (registry/gc.py, the oracle) removes after the same changes, keeps the untagged, multi-arch
and referrer rules, shares the work between collectors without doing any twice, and writes short
transactions."""

from __future__ import annotations

import asyncio
import copy
import os
from typing import TypeVar

import httpx
import pytest
from starlette.applications import Starlette

from registry.app import create_app
from registry.config import Settings
from registry.gc import Collector
from registry.reviews import Pace, ReviewCollector, ReviewReport, run_due_side_by_side
from storage.metadata import Connection, Metadata, open_metadata
from tests.support.app import running_app, stored_keys
from tests.support.backends import backend_settings
from tests.support.content import (
    OCI_INDEX,
    digest_of,
    index_of,
    make_image,
    push_blob,
    push_image,
    push_referrer,
)
from tests.support.counting import CountingDatabase

pytestmark = pytest.mark.anyio

T = TypeVar("T")
SIGNATURE = "application/vnd.example.signature"


def reviewing(settings: Settings) -> Settings:
    """`settings` with reviews due at once, and no collector of the app's own (the test runs them)."""
    settings = copy.deepcopy(settings)
    settings.gc.grace, settings.gc.reviews = "0s", False
    return settings


def reviewer(
    app: Starlette, delete_untagged: bool = False, batch: int = 50, budget_s: float | None = None
) -> ReviewCollector:
    registry = app.state.registry
    return ReviewCollector(registry.metadata, registry.driver, 0.0, delete_untagged, batch=batch, budget_s=budget_s)


class Scenario:
    """Content pushed, then changed, the same way into any registry: every kind of change that queues
    a review, over shared layers, multi-arch images and referrers."""

    def __init__(self) -> None:
        self.base = os.urandom(64)  # a layer every image shares
        self.images = {name: make_image(shared=[self.base]) for name in ("a1", "a2", "a3", "b1", "d1", "keep")}
        self.children = [make_image() for _ in range(4)]
        self.multi = index_of(*self.children[:2])
        self.dropped_index = index_of(*self.children[2:])
        self.orphan = os.urandom(80)

    async def play(self, app: Starlette, client: httpx.AsyncClient) -> None:
        images = self.images
        await push_image(client, "team/a", images["a1"], "v1")
        await push_image(client, "team/a", images["a2"], "v2")
        await push_image(client, "team/a", images["keep"], "keep")
        await push_referrer(client, "team/a", images["keep"].manifest, SIGNATURE)  # subject kept
        await push_image(client, "team/b", images["b1"], "v1")
        await push_referrer(client, "team/b", images["b1"].manifest, SIGNATURE)  # subject deleted below
        for child in self.children:
            await push_image(client, "team/multi", child)
        for tag, body in (("multi", self.multi), ("dropped", self.dropped_index)):
            r = await client.put(f"/v2/team/multi/manifests/{tag}", content=body, headers={"Content-Type": OCI_INDEX})
            assert r.status_code == 201
        await push_image(client, "team/d", images["d1"], "v1")
        await push_blob(client, "team/a", self.orphan)  # no manifest refers to it
        # The changes.
        assert (await client.delete("/v2/team/a/manifests/v1")).status_code == 202  # a tag deleted
        await push_image(client, "team/a", images["a3"], "v2")  # a tag moved
        assert (await client.delete(f"/v2/team/b/manifests/{images['b1'].digest}")).status_code == 202
        assert (await client.delete("/v2/team/multi/manifests/dropped")).status_code == 202
        assert await app.state.registry.metadata.delete_repository("team/d") is not None


async def contents(app: Starlette) -> tuple[set[tuple[str, str]], set[str], list[str]]:
    """The manifests (repository, digest), the blobs and the stored blob keys of a registry."""
    metadata = app.state.registry.metadata

    def read(c: Connection) -> tuple[set[tuple[str, str]], set[str]]:
        manifests = {(row[0], row[1]) for row in c.execute("SELECT repository, digest FROM manifests").fetchall()}
        return manifests, {row[0] for row in c.execute("SELECT digest FROM blobs").fetchall()}

    manifests, blobs = await metadata.db.scan(read)
    return manifests, blobs, await stored_keys(app.state.registry.driver, "blobs/")


@pytest.mark.parametrize("delete_untagged", [False, True])
async def test_reviews_remove_exactly_what_a_full_collection_removes(
    settings: Settings, request: pytest.FixtureRequest, tmp_path, delete_untagged: bool
) -> None:
    scenario = Scenario()
    oracle_settings = reviewing(backend_settings(request.node.callspec.params["settings"], tmp_path / "o", request))
    async with running_app(oracle_settings) as (app, client):
        await scenario.play(app, client)
        before = await contents(app)
        registry = app.state.registry
        await Collector(registry.metadata, registry.driver, 0.0, 3600.0).run(delete_untagged=delete_untagged)
        expected = await contents(app)
    async with running_app(reviewing(settings)) as (app, client):
        await scenario.play(app, client)
        assert await contents(app) == before, "the same state on both"
        report = await reviewer(app, delete_untagged).run_due()
        assert await contents(app) == expected
        assert (await app.state.registry.metadata.reviews.totals()).blobs_due == 0
    removed = before[1] - expected[1]
    assert report.blobs_removed == len(removed) and removed, "garbage there was, and all of it went"
    images = scenario.images
    manifests_left, blobs_left, _ = expected
    # The rules, as the oracle keeps them: multi-arch children of a tagged index and the referrer of a
    # kept image stay; the referrer of a deleted image goes; untagged manifests only when asked.
    assert {("team/multi", c.digest) for c in scenario.children[:2]} <= manifests_left
    assert digest_of(scenario.orphan) not in blobs_left and digest_of(images["d1"].layers[1]) not in blobs_left
    assert scenario.images["keep"].digest in blobs_left and digest_of(scenario.base) in blobs_left
    assert (("team/a", images["a1"].digest) in manifests_left) is not delete_untagged
    assert (("team/multi", scenario.children[2].digest) in manifests_left) is not delete_untagged
    assert not any(repository == "team/b" for repository, _ in manifests_left), "the referrer of b1 went with it"


async def test_a_review_after_a_push_that_refers_to_the_blob_again_keeps_it(served) -> None:
    app, client = served
    image = make_image()
    await push_image(client, "team/app", image, "v1")
    assert (await client.delete(f"/v2/team/app/manifests/{image.digest}")).status_code == 202
    await push_image(client, "team/app", image, "v1")  # pushed again before the review
    collector = ReviewCollector(app.state.registry.metadata, app.state.registry.driver, 0.0, True)
    await app.state.registry.metadata.db.write(lambda c: c.execute("UPDATE gc_blob_reviews SET due_at = 0"))
    await app.state.registry.metadata.db.write(lambda c: c.execute("UPDATE gc_manifest_reviews SET due_at = 0"))
    report = await collector.run_due()
    assert report.blobs_removed == 0 and report.manifests_removed == 0
    for blob in [image.config, *image.layers]:
        assert (await client.get(f"/v2/team/app/blobs/{digest_of(blob)}")).status_code == 200


async def test_run_due_ends_while_pushes_keep_queueing_reviews_and_follows_its_removals(settings: Settings) -> None:
    async with running_app(reviewing(settings)) as (app, client):
        doomed = make_image()
        await push_image(client, "team/old", doomed, "v1")
        assert (await client.delete("/v2/team/old/manifests/v1")).status_code == 202  # the manifest's review
        stop = asyncio.Event()

        async def push_forever() -> None:  # each push moves the tag: one more review, due at once
            while not stop.is_set():
                await push_image(client, "team/busy", make_image(), "latest")

        pushing = asyncio.create_task(push_forever())
        try:
            await asyncio.sleep(0.2)
            report = await asyncio.wait_for(reviewer(app, delete_untagged=True).run_due(), 60)
        finally:
            stop.set()
            await pushing
        # The manifest removed, and in a later round the blobs its removal queued (due only then).
        assert report.manifests_removed >= 1 and report.blobs_removed >= len(doomed.layers) + 1
        for blob in [doomed.config, *doomed.layers]:
            assert (await client.head(f"/v2/team/old/blobs/{digest_of(blob)}")).status_code == 404


async def test_two_collectors_on_one_index_share_the_work_without_doing_any_twice(settings: Settings) -> None:
    settings = reviewing(settings)
    orphans = [os.urandom(40) for _ in range(60)]
    images = [make_image(layers=2) for _ in range(15)]
    async with running_app(settings) as (one, client), running_app(settings) as (two, _):
        for blob in orphans:
            await push_blob(client, "team/orphans", blob)
        for n, image in enumerate(images):
            await push_image(client, "team/app", image, f"v{n}")
            assert (await client.delete(f"/v2/team/app/manifests/{image.digest}")).status_code == 202
        garbage = len(orphans) + 4 * len(images)  # each image: its config, two layers and its own bytes
        reports = await asyncio.gather(reviewer(one, batch=5).run_due(), reviewer(two, batch=5).run_due())
        assert all(r.blobs_removed > 0 for r in reports), "both collectors took part"
        assert sum(r.blobs_removed for r in reports) == garbage, "each garbage blob removed once, none left"
        assert sum(r.lost for r in reports) == 0
        assert await stored_keys(one.state.registry.driver, "blobs/") == []
        totals = await one.state.registry.metadata.reviews.totals()
        assert (totals.blobs, totals.manifests) == (0, 0)


async def test_collectors_side_by_side_share_the_work_and_sum_their_reports(settings: Settings) -> None:
    images = [make_image(layers=2) for _ in range(12)]
    async with running_app(reviewing(settings)) as (app, client):
        for n, image in enumerate(images):
            await push_image(client, "team/app", image, f"v{n}")
            assert (await client.delete(f"/v2/team/app/manifests/{image.digest}")).status_code == 202
        report = await run_due_side_by_side([reviewer(app, batch=4) for _ in range(3)])
        # Each image: its config, two layers and its own bytes, each removed once.
        assert (report.blobs_removed, report.lost) == (4 * len(images), 0)
        assert report.blob_bytes_removed == sum(len(image.manifest) + len(image.config) for image in images) + sum(
            len(layer) for image in images for layer in image.layers
        )
        assert await stored_keys(app.state.registry.driver, "blobs/") == []


async def test_each_decision_changes_rows_bounded_by_one_manifest_not_by_the_index(settings: Settings) -> None:
    settings = reviewing(settings)
    layers = 5
    counting = CountingDatabase(open_metadata(settings.index_url, 0.0).db)
    app = create_app(settings, metadata=Metadata(counting, 0.0))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://registry.test") as client,
    ):
        shared = [os.urandom(64) for _ in range(layers)]

        async def garbage(first: int) -> None:
            for n in range(first, first + 40):
                await push_image(client, f"team/app{n % 4}", make_image(shared=shared, layers=1), f"v{n}")
                assert (await client.delete(f"/v2/team/app{n % 4}/manifests/v{n}")).status_code == 202
            counting.writes.clear()

        await garbage(0)
        # No budget: one decision a transaction.
        report: ReviewReport = await reviewer(app, delete_untagged=True, batch=10, budget_s=0).run_due()
        assert report.manifests_removed == 40 and report.blobs_removed == 40 * 3 + layers
        # A manifest's removal: its row, its references (config and layers), its link, and a review
        # queued for each; a claim: one row per review claimed; a blob: its row, its links, its review.
        references = layers + 2
        bound = 1 + 2 * references + 2 + 1
        rows_per_write = [sum(changed.values()) for changed in counting.writes]
        print(f"{len(rows_per_write)} write transactions, at most {max(rows_per_write)} rows each")
        assert max(rows_per_write) <= max(bound, 10), rows_per_write
        one_each = len(rows_per_write)
        # With a budget, decisions share transactions: fewer of them for the same work.
        await garbage(40)
        report = await reviewer(app, delete_untagged=True, batch=10, budget_s=1.0).run_due()
        assert report.manifests_removed == 40 and report.blobs_removed == 40 * 3 + layers
        print(f"with a budget: {len(counting.writes)} write transactions")
        assert len(counting.writes) < one_each / 3


async def test_every_app_collects_due_reviews_by_itself_unless_read_only(settings: Settings) -> None:
    settings = copy.deepcopy(settings)
    settings.gc.grace, settings.gc.poll = "0s", "0.1s"
    image = make_image()
    async with running_app(settings) as (app, client):
        await push_image(client, "team/app", image, "v1")
        await push_blob(client, "team/app", b"orphan")
        assert (await client.delete(f"/v2/team/app/manifests/{image.digest}")).status_code == 202
        for _ in range(100):
            if await stored_keys(app.state.registry.driver, "blobs/") == []:
                break
            await asyncio.sleep(0.1)
        assert await stored_keys(app.state.registry.driver, "blobs/") == [], "collected without being asked"
    settings.gc.reviews = False
    async with running_app(settings) as (app, client):
        await push_blob(client, "team/app", b"kept while read-only")
    settings.gc.reviews, settings.maintenance.read_only = True, True
    async with running_app(settings) as (app, client):
        await asyncio.sleep(0.5)
        assert (await client.get(f"/v2/team/app/blobs/{digest_of(b'kept while read-only')}")).status_code == 200


def test_a_pace_fits_the_decisions_of_a_transaction_to_its_budget() -> None:
    pace = Pace(budget_s=0.010)
    assert pace.take(50) == 1, "one decision at first"
    pace.took(0.001)
    assert pace.take(50) == 2, "at most twice as many as the last time"
    pace.took(0.001)  # 0.5 ms a decision: 20 fit
    assert [pace.take(50), pace.took(0.004), pace.take(50)] == [4, None, 8]
    pace.took(0.004)
    assert pace.take(50) == 16
    pace.took(0.008)
    assert pace.take(50) == 20, "as many as fit the budget"
    pace.took(0.100)  # 5 ms a decision: fewer
    assert pace.take(50) == 2
    pace.took(1.0)
    assert pace.take(50) == 1, "never none"
    pace.took(0.0)
    assert pace.take(3) == 2 and pace.take(1) == 1, "never more than are left"
