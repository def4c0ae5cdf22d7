"""Blob reads (`GET`, `HEAD`, `Range`) and deletes."""

from __future__ import annotations

import os

import httpx
import pytest

from registry.config import Settings
from registry.layout import blob_key
from tests.support import app_client, digest_of, error_codes, push_blob, stored_keys

pytestmark = pytest.mark.anyio


async def test_get_and_head_return_bytes_and_headers(client: httpx.AsyncClient) -> None:
    data = os.urandom(3 << 20)
    digest = await push_blob(client, "team/app", data)
    r = await client.get(f"/v2/team/app/blobs/{digest}")
    assert r.status_code == 200 and r.content == data
    assert r.headers["Docker-Content-Digest"] == digest
    assert r.headers["Content-Length"] == str(len(data))
    assert r.headers["Accept-Ranges"] == "bytes"
    head = await client.head(f"/v2/team/app/blobs/{digest}")
    assert head.status_code == 200 and head.content == b""
    assert head.headers["Content-Length"] == str(len(data))
    assert head.headers["Docker-Content-Digest"] == digest


async def test_a_blob_is_visible_only_in_repositories_it_was_pushed_to(client: httpx.AsyncClient) -> None:
    digest = await push_blob(client, "team/app", b"private layer")
    r = await client.get(f"/v2/team/other/blobs/{digest}")
    assert r.status_code == 404 and error_codes(r) == ["BLOB_UNKNOWN"]
    assert (await client.head(f"/v2/team/other/blobs/{digest}")).status_code == 404


async def test_unknown_and_malformed_digests(client: httpx.AsyncClient) -> None:
    r = await client.get(f"/v2/team/app/blobs/sha256:{'0' * 64}")
    assert r.status_code == 404 and error_codes(r) == ["BLOB_UNKNOWN"]
    r = await client.get("/v2/team/app/blobs/sha256:nothex")
    assert r.status_code == 400 and error_codes(r) == ["DIGEST_INVALID"]


@pytest.mark.parametrize(
    ("header", "start", "end"),
    [("bytes=0-9", 0, 9), ("bytes=100-", 100, 999), ("bytes=-10", 990, 999), ("bytes=995-5000", 995, 999)],
)
async def test_single_ranges_answer_206(client: httpx.AsyncClient, header: str, start: int, end: int) -> None:
    data = os.urandom(1000)
    digest = await push_blob(client, "r/app", data)
    r = await client.get(f"/v2/r/app/blobs/{digest}", headers={"Range": header})
    assert r.status_code == 206
    assert r.content == data[start : end + 1]
    assert r.headers["Content-Range"] == f"bytes {start}-{end}/1000"
    assert r.headers["Content-Length"] == str(end - start + 1)


async def test_unsatisfiable_range_answers_416(client: httpx.AsyncClient) -> None:
    digest = await push_blob(client, "r/app", b"0123456789")
    r = await client.get(f"/v2/r/app/blobs/{digest}", headers={"Range": "bytes=10-20"})
    assert r.status_code == 416
    assert r.headers["Content-Range"] == "bytes */10"
    assert error_codes(r) == ["RANGE_INVALID"]


async def test_malformed_range_is_ignored_and_the_whole_blob_sent(client: httpx.AsyncClient) -> None:
    digest = await push_blob(client, "r/app", b"0123456789")
    for header in ["bytes=a-b", "items=0-1", "bytes=0-1,3-4", "bytes=5-2"]:
        r = await client.get(f"/v2/r/app/blobs/{digest}", headers={"Range": header})
        assert r.status_code == 200 and r.content == b"0123456789", header


async def test_delete_unlinks_the_blob_from_the_repository(client: httpx.AsyncClient) -> None:
    digest = await push_blob(client, "team/app", b"to delete")
    await push_blob(client, "team/keep", b"to delete")
    r = await client.delete(f"/v2/team/app/blobs/{digest}")
    assert r.status_code == 202
    assert (await client.head(f"/v2/team/app/blobs/{digest}")).status_code == 404
    assert (await client.get(f"/v2/team/keep/blobs/{digest}")).content == b"to delete"
    r = await client.delete(f"/v2/team/app/blobs/{digest}")
    assert r.status_code == 404 and error_codes(r) == ["BLOB_UNKNOWN"]


async def test_deletes_answer_405_unsupported_when_disabled(settings: Settings) -> None:
    settings.storage.delete_enabled = False
    async with app_client(settings) as client:
        digest = await push_blob(client, "team/app", b"kept")
        for path in [f"/v2/team/app/blobs/{digest}", "/v2/team/app/manifests/latest"]:
            r = await client.delete(path)
            assert r.status_code == 405 and error_codes(r) == ["UNSUPPORTED"]
        assert (await client.get(f"/v2/team/app/blobs/{digest}")).status_code == 200


async def test_blob_is_stored_once_when_pushed_to_two_repositories(client: httpx.AsyncClient, driver) -> None:
    data = os.urandom(5000)
    await push_blob(client, "one/app", data)
    await push_blob(client, "two/app", data)
    assert await stored_keys(driver, "blobs/") == [blob_key(digest_of(data))]
