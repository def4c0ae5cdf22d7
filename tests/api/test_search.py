"""`docker search`'s endpoints: `/v1/_ping` and `/v1/search` over names and image descriptions, with
pages, and only what the caller may pull."""

from __future__ import annotations

import json
import os

import httpx
import pytest

from tests.support.app import app_client
from tests.support.content import OCI_CONFIG, OCI_LAYER, OCI_MANIFEST, Image, descriptor, make_image, push_image
from tests.support.users import basic, bearer, configure, htpasswd_bytes

pytestmark = pytest.mark.anyio

DESCRIPTION = "org.opencontainers.image.description"


def labelled_image(description: str) -> Image:
    """An image whose config carries the description label (as `LABEL` in a Dockerfile puts it)."""
    config = json.dumps(
        {"architecture": "amd64", "os": "linux", "config": {"Labels": {DESCRIPTION: description}}}
    ).encode()
    layer = os.urandom(64)
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor(OCI_CONFIG, config),
        "layers": [descriptor(OCI_LAYER, layer)],
    }
    return Image(config, [layer], json.dumps(doc).encode(), OCI_MANIFEST)


async def search(client: httpx.AsyncClient, term: str, **params: object) -> dict:
    r = await client.get("/v1/search", params={"q": term, **params})
    assert r.status_code == 200, r.text
    return r.json()


async def test_ping_says_the_registry_is_standalone(client: httpx.AsyncClient) -> None:
    r = await client.get("/v1/_ping")
    assert r.status_code == 200 and r.headers["X-Docker-Registry-Standalone"] == "true"


async def test_names_match_by_substring_ignoring_case(client: httpx.AsyncClient) -> None:
    for name in ("team/web-api", "team/worker", "tools/Web_proxy".lower(), "other/db"):
        await push_image(client, name, make_image(), "1")
    body = await search(client, "WEB")
    assert [r["name"] for r in body["results"]] == ["team/web-api", "tools/web_proxy"]
    assert body["num_results"] == 2 and body["query"] == "WEB" and body["page"] == 1 and body["page_size"] == 25
    assert body["results"][0] == {
        "name": "team/web-api",
        "description": "",
        "star_count": 0,
        "is_official": False,
        "is_automated": False,
    }
    assert [r["name"] for r in (await search(client, "_"))["results"]] == ["tools/web_proxy"], "LIKE wildcards escaped"
    assert (await search(client, "%"))["results"] == []


async def test_descriptions_come_from_the_newest_tag_by_annotation_or_label(client: httpx.AsyncClient) -> None:
    await push_image(client, "a/labelled", labelled_image("Caches Maven artifacts"), "1")
    annotated = make_image(annotations={DESCRIPTION: "A small HTTP echo server"})
    await push_image(client, "b/annotated", annotated, "1")
    await push_image(client, "c/plain", make_image(), "1")
    body = await search(client, "maven")
    assert [(r["name"], r["description"]) for r in body["results"]] == [("a/labelled", "Caches Maven artifacts")]
    assert [r["name"] for r in (await search(client, "echo"))["results"]] == ["b/annotated"]
    await push_image(client, "b/annotated", make_image(annotations={DESCRIPTION: "now a proxy"}), "2")
    assert (await search(client, "echo"))["results"] == [], "the newest tag's description counts"
    assert (await search(client, "annotated"))["results"][0]["description"] == "now a proxy"
    await push_image(
        client,
        "a/labelled",
        make_image(),
        "by-digest-only",
    )
    assert (await search(client, "maven"))["results"] == [], "a tag without a description clears it"


async def test_pages_of_n(client: httpx.AsyncClient) -> None:
    for i in range(7):
        await push_image(client, f"page/r{i}", make_image(), "1")
    first = await search(client, "page/", n=3)
    assert [r["name"] for r in first["results"]] == ["page/r0", "page/r1", "page/r2"]
    assert (first["num_results"], first["num_pages"], first["page_size"]) == (7, 3, 3)
    last = await search(client, "page/", n=3, page=3)
    assert [r["name"] for r in last["results"]] == ["page/r6"] and last["page"] == 3
    assert (await search(client, "page/", n=1000))["page_size"] == 100
    r = await client.get("/v1/search", params={"q": "x", "n": "many"})
    assert r.status_code == 400 and r.json()["errors"][0]["code"] == "PAGINATION_NUMBER_INVALID"


async def test_results_hold_only_what_the_caller_may_pull(settings, tmp_path) -> None:
    async with app_client(configure(settings, "htpasswd", htpasswd_bytes(tmp_path))) as client:
        for user, name in [("alice", "alice/app"), ("bob", "bob/app"), ("root", "public/app")]:
            client.headers.update(basic(user, f"{user}-pw"))
            await push_image(client, name, make_image(), "1")
        seen = {}
        for user in ("alice", "root", None):
            client.headers.pop("Authorization", None)
            if user:
                client.headers.update(basic(user, f"{user}-pw"))
            seen[user] = [r["name"] for r in (await search(client, "app"))["results"]]
        assert seen == {
            "alice": ["alice/app", "public/app"],
            "root": ["alice/app", "bob/app", "public/app"],
            None: ["public/app"],
        }
        client.headers.update(basic("alice", "wrong"))
        assert (await client.get("/v1/search", params={"q": "app"})).status_code == 401


async def test_token_mode_searches_with_a_token_with_basic_credentials_or_anonymously(settings, tmp_path) -> None:
    """What the engine sends: a token for `registry:catalog:search` after a login that left it an
    identity token, Basic credentials when it holds only those, nothing without a login (it follows no
    challenge, so anonymous searches are answered, not challenged)."""
    async with app_client(configure(settings, "token", htpasswd_bytes(tmp_path))) as client:
        for user, name in [("alice", "alice/app"), ("bob", "bob/app"), ("root", "public/app")]:
            r = await client.get(
                "/auth/token",
                params={"service": "registry", "scope": f"repository:{name}:push,pull"},
                headers=basic(user, f"{user}-pw"),
            )
            client.headers.update(bearer(r.json()["token"]))
            await push_image(client, name, make_image(), "1")
        client.headers.pop("Authorization")
        assert [r["name"] for r in (await search(client, "app"))["results"]] == ["public/app"]
        r = await client.get(
            "/auth/token",
            params={"service": "registry", "scope": "registry:catalog:search"},
            headers=basic("alice", "alice-pw"),
        )
        assert r.json()["scope"] == "registry:catalog:*"
        client.headers.update(bearer(r.json()["token"]))
        assert [r["name"] for r in (await search(client, "app"))["results"]] == ["alice/app", "public/app"]
        client.headers.update(basic("bob", "bob-pw"))
        assert [r["name"] for r in (await search(client, "app"))["results"]] == ["bob/app", "public/app"]
        for wrong in (basic("bob", "nope"), bearer("not-a-token")):
            client.headers.update(wrong)
            r = await client.get("/v1/search", params={"q": "app"})
            assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Bearer ")
