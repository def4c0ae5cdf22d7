"""`registry check` finds where metadata and storage disagree, and changes nothing."""

from __future__ import annotations

import asyncio
import os

import pytest

from registry.check import check
from registry.cli import main
from registry.config import Settings
from registry.layout import blob_key
from tests.support.app import running_app
from tests.support.content import digest_of, make_image, push_image

pytestmark = pytest.mark.anyio


async def test_check_reports_missing_resized_corrupt_and_orphaned_bytes(settings: Settings) -> None:
    async with running_app(settings) as (app, client):
        image = make_image(layers=3)
        await push_image(client, "team/app", image, "v1")
        metadata, driver = app.state.registry.metadata, app.state.registry.driver
        report = await check(metadata, driver, verify_digests=True)
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

        quick = await check(metadata, driver)
        assert quick.problems == sorted(
            [f"blob {missing}: no bytes in storage", f"blob {resized}: 69 bytes stored, 64 recorded"]
        )
        thorough = await check(metadata, driver, verify_digests=True)
        assert f"blob {corrupt}: the stored bytes hash to another digest" in thorough.problems
        assert sorted(thorough.orphans) == [blob_key(digest_of(b"stray")), "uploads/not-an-upload/0"]
        assert (await client.get("/v2/team/app/tags/list")).json()["tags"] == ["v1"]  # nothing changed


async def test_check_lists_the_leftovers_of_writes_killed_mid_way(settings: Settings) -> None:
    async with running_app(settings) as (app, client):
        await push_image(client, "team/app", make_image(), "v1")
        metadata, driver = app.state.registry.metadata, app.state.registry.driver
        writer = await driver.writer(blob_key(digest_of(b"in progress")))  # alive: not a leftover
        await writer.write(b"in progress")
        with open(os.path.join(settings.storage_root, ".tmp", "killed-mid-write"), "wb") as f:
            f.write(b"half of a layer")  # a temp file no process holds: its writer died
        report = await check(metadata, driver)
        assert report.ok and report.orphans == [] and report.leftovers == [".tmp/killed-mid-write"]
        await writer.cancel()


def test_check_repair_removes_orphans_and_leftovers_older_than_the_grace(
    settings: Settings, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    async def push_and_strand() -> None:
        async with running_app(settings) as (app, client):
            await push_image(client, "team/app", make_image(), "v1")
            await app.state.registry.driver.put(blob_key(digest_of(b"stray")), b"stray")
        with open(os.path.join(settings.storage_root, ".tmp", "killed-mid-write"), "wb") as f:
            f.write(b"half of a layer")

    asyncio.run(push_and_strand())
    main(["check", "--data-dir", settings.data_dir])
    assert "1 orphans, 1 leftovers of abandoned writes" in capsys.readouterr().out
    monkeypatch.setenv("REGISTRY_GC_GRACE", "0")
    main(["check", "--repair", "--data-dir", settings.data_dir])
    assert "removed 0 manifests, 0 blobs (0.0 MiB), 0 abandoned uploads (0.0 MiB), 1 orphans" in capsys.readouterr().out
    main(["check", "--data-dir", settings.data_dir])
    out = capsys.readouterr().out
    assert "index and storage agree; 0 orphans, 0 leftovers of abandoned writes" in out
