"""Tags, the catalog and referrers: lexical order, `n`/`last` pagination and `Link` headers."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote

import httpx
import pytest

from registry.config import Settings
from tests.support.app import running_app
from tests.support.content import OCI_MANIFEST, digest_of, error_codes, make_image, push_blob, push_image, push_referrer
from tests.support.counting import counted, uncounted
from tests.support.users import basic, configure, htpasswd_bytes

pytestmark = pytest.mark.anyio


async def walk(client: httpx.AsyncClient, url: str, key: str) -> list[list[str]]:
    """Follow `Link` headers from `url`; returns the items of each page."""
    pages = []
    while url:
        r = await client.get(url)
        assert r.status_code == 200, r.text
        pages.append(r.json()[key])
        link = r.headers.get("Link")
        url = link[1 : link.index(">")] if link else ""
    return pages


async def test_tags_are_listed_lexically_and_paginated(client: httpx.AsyncClient) -> None:
    image = make_image()
    tags = ["b", "a", "c10", "c2", "Z", "latest"]
    for tag in tags:
        await push_image(client, "team/app", image, tag)
    r = await client.get("/v2/team/app/tags/list")
    assert r.json() == {"name": "team/app", "tags": sorted(tags)}
    assert "Link" not in r.headers
    assert await walk(client, "/v2/team/app/tags/list?n=4", "tags") == [sorted(tags)[:4], sorted(tags)[4:]]
    r = await client.get("/v2/team/app/tags/list", params={"n": 2, "last": "b"})
    assert r.json()["tags"] == ["c10", "c2"]
    assert r.headers["Link"] == '</v2/team/app/tags/list?last=c2&n=2>; rel="next"'


async def test_tags_of_an_unknown_repository_answer_name_unknown(client: httpx.AsyncClient) -> None:
    r = await client.get("/v2/nobody/tags/list")
    assert r.status_code == 404 and error_codes(r) == ["NAME_UNKNOWN"]


@pytest.mark.parametrize("n", ["-1", "x", "1.5"])
async def test_invalid_page_sizes_answer_pagination_number_invalid(client: httpx.AsyncClient, n: str) -> None:
    r = await client.get("/v2/_catalog", params={"n": n})
    assert r.status_code == 400 and error_codes(r) == ["PAGINATION_NUMBER_INVALID"]


async def test_zero_page_size_gives_an_empty_page_without_link(client: httpx.AsyncClient) -> None:
    await push_blob(client, "team/app", b"x")
    r = await client.get("/v2/_catalog", params={"n": 0})
    assert r.json() == {"repositories": []} and "Link" not in r.headers


async def test_catalog_lists_every_repository_lexically_across_pages(client: httpx.AsyncClient) -> None:
    names = [f"team/app{i:02d}" for i in range(25)] + ["a/b", "z"]
    for name in names:
        await push_blob(client, name, b"layer")
    pages = await walk(client, "/v2/_catalog?n=10", "repositories")
    assert [len(p) for p in pages] == [10, 10, 7]
    assert [n for page in pages for n in page] == sorted(names)
    assert (await client.get("/v2/_catalog")).json()["repositories"] == sorted(names)


async def test_a_filtered_catalog_page_over_many_repositories_is_one_statement(
    settings: Settings, tmp_path: Path
) -> None:
    names = [f"r{i:05d}/app" for i in range(5000)] + ["alice/app", "alice/tools", "public/base"]
    async with running_app(configure(settings, "htpasswd", htpasswd_bytes(tmp_path))) as (app, client):
        metadata = app.state.registry.metadata
        await metadata.db.write(
            lambda c: c.executemany("INSERT INTO repositories (name, created_at) VALUES (?, 0)", [(n,) for n in names])
        )
        counter = counted(metadata)
        try:
            seen = {}
            for user in ("alice", "root"):
                client.headers.update(basic(user, f"{user}-pw"))
                del counter.statements[:]
                pages = await walk(client, "/v2/_catalog?n=2", "repositories")
                seen[user] = [n for page in pages for n in page]
                assert len(counter.statements) == len(pages), counter.statements  # one a page, never a batch more
        finally:
            uncounted(metadata)
    assert seen == {"alice": ["alice/app", "alice/tools", "public/base"], "root": sorted(names)}


async def test_referrers_list_artifacts_pointing_at_a_manifest(client: httpx.AsyncClient) -> None:
    image = make_image()
    await push_image(client, "team/app", image, "v1")
    signature = await push_referrer(client, "team/app", image.manifest, "application/vnd.example.signature")
    sbom = await push_referrer(client, "team/app", image.manifest, "application/vnd.example.sbom")
    r = await client.get(f"/v2/team/app/referrers/{image.digest}")
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "application/vnd.oci.image.index.v1+json"
    index = r.json()
    assert index["schemaVersion"] == 2 and index["mediaType"] == "application/vnd.oci.image.index.v1+json"
    by_digest = {m["digest"]: m for m in index["manifests"]}
    assert set(by_digest) == {signature, sbom}
    assert by_digest[signature]["artifactType"] == "application/vnd.example.signature"
    assert by_digest[signature]["annotations"] == {"org.example.kind": "signature"}
    assert by_digest[signature]["mediaType"] == OCI_MANIFEST
    assert "OCI-Filters-Applied" not in r.headers


async def test_referrers_filtered_by_artifact_type(client: httpx.AsyncClient) -> None:
    image = make_image()
    await push_image(client, "team/app", image, "v1")
    signature = await push_referrer(client, "team/app", image.manifest, "application/vnd.example.signature")
    await push_referrer(client, "team/app", image.manifest, "application/vnd.example.sbom")
    r = await client.get(
        f"/v2/team/app/referrers/{image.digest}", params={"artifactType": "application/vnd.example.signature"}
    )
    assert [m["digest"] for m in r.json()["manifests"]] == [signature]
    assert r.headers["OCI-Filters-Applied"] == "artifactType"


async def test_referrers_of_an_unknown_digest_are_an_empty_index(client: httpx.AsyncClient) -> None:
    r = await client.get(f"/v2/team/app/referrers/{digest_of(b'unknown')}")
    assert r.status_code == 200 and r.json()["manifests"] == []
    r = await client.get("/v2/team/app/referrers/sha256:bad")
    assert r.status_code == 400 and error_codes(r) == ["DIGEST_INVALID"]


@pytest.mark.parametrize("path", ["/v2/_catalog", "/v2/team/app/tags/list"])
@pytest.mark.parametrize("n", ["9" * 5000, "\u00b2", "\u0661", "9223372036854775808", " 1", "+1"])
async def test_page_sizes_that_are_not_plain_bounded_numbers_answer_400(
    client: httpx.AsyncClient, path: str, n: str
) -> None:
    await push_image(client, "team/app", make_image(), "v1")
    r = await client.get(path, params={"n": n})
    assert r.status_code == 400 and error_codes(r) == ["PAGINATION_NUMBER_INVALID"]


async def test_the_largest_page_size_is_clamped_and_the_listing_still_answers(client: httpx.AsyncClient) -> None:
    image = make_image()
    for tag in ["a", "b"]:
        await push_image(client, "team/app", image, tag)
    r = await client.get("/v2/team/app/tags/list", params={"n": "9223372036854775807"})
    assert r.status_code == 200 and r.json()["tags"] == ["a", "b"] and "Link" not in r.headers
    r = await client.get("/v2/_catalog", params={"n": "9223372036854775807"})
    assert r.status_code == 200 and r.json()["repositories"] == ["team/app"]


@pytest.mark.parametrize(
    "last", ["%00", "a%00b", "%ED%A0%80", "%E2%80%A8", "x" * 10_000, "%5C", "%25", "'", "%F0%9F%98%80"]
)
async def test_any_last_value_pages_as_it_would_without_its_nul(client: httpx.AsyncClient, last: str) -> None:
    image = make_image()
    for tag in ["a", "b"]:
        await push_image(client, "team/app", image, tag)
    after = unquote(last, errors="replace").split("\x00")[0]  # a NUL sorts before any character a tag or name holds
    expected = {
        "tags": [t for t in ["a", "b"] if t > after],
        "repositories": ["team/app"] if after < "team/app" else [],
    }
    for path, key in [("/v2/team/app/tags/list", "tags"), ("/v2/_catalog", "repositories")]:
        r = await client.get(f"{path}?n=10&last={last}")
        assert r.status_code == 200 and r.json()[key] == expected[key], (path, last[:20], r.status_code)


@pytest.mark.parametrize("artifact_type", ["%00", "a%00b", "%ED%A0%80", "%E2%80%8B", "x" * 10_000, "%25", "'"])
async def test_any_artifact_type_filter_answers_an_index(client: httpx.AsyncClient, artifact_type: str) -> None:
    image = make_image()
    await push_image(client, "team/app", image)
    await push_referrer(client, "team/app", image.manifest, "application/x-sig")
    r = await client.get(f"/v2/team/app/referrers/{image.digest}?artifactType={artifact_type}")
    assert r.status_code == 200 and r.json()["manifests"] == []
