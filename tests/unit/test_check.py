"""`registry check` finds where index and storage disagree, and changes nothing."""

from __future__ import annotations

import os

import pytest

from registry.check import check
from registry.config import Settings
from registry.layout import blob_key
from tests.support import digest_of, make_image, push_image, running_app

pytestmark = pytest.mark.anyio


async def test_check_reports_missing_resized_corrupt_and_orphaned_bytes(settings: Settings) -> None:
    async with running_app(settings) as (app, client):
        image = make_image(layers=3)
        await push_image(client, "team/app", image, "v1")
        index, driver = app.state.registry.index, app.state.registry.driver
        report = await check(index, driver, verify_digests=True)
        assert report.ok and report.blobs == 5 and report.manifests == 1 and report.orphans == []

        root = settings.storage_root
        missing, resized, corrupt = (digest_of(layer) for layer in image.layers)
        os.unlink(os.path.join(root, blob_key(missing)))
        with open(os.path.join(root, blob_key(resized)), "ab") as f:
            f.write(b"extra")
        with open(os.path.join(root, blob_key(corrupt)), "r+b") as f:
            first = f.read(1)
            f.seek(0)
            f.write(bytes([first[0] ^ 0xFF]))
        await driver.put(blob_key(digest_of(b"stray")), b"stray")
        await driver.put("uploads/not-an-upload/0", b"x")

        quick = await check(index, driver)
        assert quick.problems == sorted(
            [f"blob {missing}: no bytes in storage", f"blob {resized}: 69 bytes stored, 64 recorded"]
        )
        thorough = await check(index, driver, verify_digests=True)
        assert f"blob {corrupt}: the stored bytes hash to another digest" in thorough.problems
        assert sorted(thorough.orphans) == [blob_key(digest_of(b"stray")), "uploads/not-an-upload/0"]
        assert (await client.get("/v2/team/app/tags/list")).json()["tags"] == ["v1"]  # nothing changed


async def test_check_lists_the_leftovers_of_writes_killed_mid_way(settings: Settings) -> None:
    async with running_app(settings) as (app, client):
        await push_image(client, "team/app", make_image(), "v1")
        index, driver = app.state.registry.index, app.state.registry.driver
        writer = await driver.writer(blob_key(digest_of(b"in progress")))  # alive: not a leftover
        await writer.write(b"in progress")
        with open(os.path.join(settings.storage_root, ".tmp", "killed-mid-write"), "wb") as f:
            f.write(b"half of a layer")  # a temp file no process holds: its writer died
        report = await check(index, driver)
        assert report.ok and report.orphans == [] and report.leftovers == [".tmp/killed-mid-write"]
        await writer.cancel()
