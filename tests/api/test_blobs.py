"""Blob reads (`GET`, `HEAD`, `Range`) and deletes."""

from __future__ import annotations

import os

import httpx
import pytest

from registry.config import Settings
from registry.layout import blob_key
from tests.support.app import app_client, stored_keys
from tests.support.content import digest_of, error_codes, make_image, push_blob

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


@pytest.mark.parametrize("method", ["GET", "HEAD"])
async def test_a_range_starting_past_any_possible_size_answers_416(client: httpx.AsyncClient, method: str) -> None:
    digest = await push_blob(client, "r/app", b"0123456789")
    for header in ["bytes=" + "9" * 5000 + "-", "bytes=" + "9" * 30 + "-" + "9" * 31, "bytes=9223372036854775808-"]:
        r = await client.request(method, f"/v2/r/app/blobs/{digest}", headers={"Range": header})
        assert r.status_code == 416, (header[:40], r.status_code)
        assert r.headers["Content-Range"] == "bytes */10"
        if method == "GET":
            assert error_codes(r) == ["RANGE_INVALID"]


async def test_huge_range_ends_and_suffixes_read_as_the_whole_rest_of_the_blob(client: httpx.AsyncClient) -> None:
    digest = await push_blob(client, "r/app", b"0123456789")
    for header, content in [("bytes=4-" + "9" * 5000, b"456789"), ("bytes=-" + "9" * 5000, b"0123456789")]:
        r = await client.get(f"/v2/r/app/blobs/{digest}", headers={"Range": header})
        assert r.status_code == 206 and r.content == content, header[:40]
        assert r.headers["Content-Range"] == f"bytes {10 - len(content)}-9/10"


@pytest.mark.parametrize("content_range", ["0-" + "9" * 5000, "9" * 5000 + "-" + "9" * 5001, "0-9223372036854775808"])
async def test_upload_content_ranges_past_any_possible_size_answer_416_and_store_nothing(
    client: httpx.AsyncClient, content_range: str
) -> None:
    location = (await client.post("/v2/r/app/blobs/uploads/")).headers["Location"]
    r = await client.patch(location, content=b"01234", headers={"Content-Range": content_range.encode()})
    assert r.status_code == 416 and error_codes(r) == ["RANGE_INVALID"]
    status = await client.get(location)
    assert status.status_code == 204 and status.headers["Range"] == "0-0"


async def test_a_huge_declared_length_is_refused_without_reading_it(client: httpx.AsyncClient) -> None:
    image = make_image()
    for blob in [image.config, *image.layers]:
        await push_blob(client, "r/app", blob)
    for declared in ["9" * 5000, "99999999999999999999"]:
        r = await client.put(
            "/v2/r/app/manifests/v1",
            content=image.manifest,
            headers={"Content-Type": image.media_type, "Content-Length": declared},
        )
        assert r.status_code == 413 and error_codes(r) == ["MANIFEST_INVALID"], declared[:30]
    assert (await client.get("/v2/r/app/manifests/v1")).status_code == 404
