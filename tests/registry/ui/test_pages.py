"""The browsing pages in auth mode none: repositories with search and pages, a repository's tags, an image,
storage; `/` and `/ui` redirect there; `ui.enabled: false` removes them."""

from __future__ import annotations

import html
import json
import os
import re

import httpx
import pytest
from starlette.applications import Starlette

from registry.config import Settings
from tests.support.app import app_client
from tests.support.content import (
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER,
    OCI_MANIFEST,
    Image,
    descriptor,
    digest_of,
    index_of,
    make_image,
    push_image,
    push_referrer,
)

pytestmark = pytest.mark.anyio

UI = tuple[Starlette, httpx.AsyncClient]


def found(attribute: str, text: str) -> list[str]:
    """The values of `attribute` in the page, in order (HTML entities decoded)."""
    return [html.unescape(v) for v in re.findall(rf'{attribute}="([^"]*)"', text)]


def cell(css_class: str, text: str) -> list[str]:
    """The `data-bytes` of the cells of `css_class`, in order."""
    return re.findall(rf'class="num {css_class}" data-bytes="(\d+)"', text)


async def page(client: httpx.AsyncClient, path: str, **params: object) -> str:
    r = await client.get(path, params=params)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/html")
    return r.text


def described_image(description: str, history: list[dict] | None = None, **config: object) -> Image:
    """An image with one 64-byte and one 32-byte layer, whose config has `config` and `history`, labelled with
    `description`."""
    layers = [os.urandom(64), os.urandom(32)]
    doc_config = {
        "architecture": "arm64",
        "os": "linux",
        "created": "2024-05-01T10:00:00Z",
        "config": {"Labels": {"org.opencontainers.image.description": description}, **config},
        "history": history or [],
    }
    config_bytes = json.dumps(doc_config).encode()
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor(OCI_CONFIG, config_bytes),
        "layers": [descriptor(OCI_LAYER, layer) for layer in layers],
    }
    return Image(config_bytes, layers, json.dumps(doc).encode(), OCI_MANIFEST)


async def test_root_and_ui_redirect_to_the_repository_list(open_ui: UI) -> None:
    _, client = open_ui
    for path in ("/", "/ui"):
        r = await client.get(path)
        assert r.status_code == 307 and r.headers["location"] == "/ui/"


async def test_the_ui_turned_off_answers_404(settings: Settings) -> None:
    settings.ui.enabled = False
    async with app_client(settings) as client:
        for path in ("/ui/", "/ui/storage", "/ui/login", "/"):
            assert (await client.get(path)).status_code == 404, path
        assert (await client.get("/v2/")).status_code == 200


async def test_repositories_list_with_tag_count_last_push_and_size(open_ui: UI) -> None:
    _, client = open_ui
    shared = os.urandom(100)
    one, two = make_image(shared=[shared]), make_image(shared=[shared])
    await push_image(client, "team/app", one, "1")
    await push_image(client, "team/app", two, "2")
    await push_image(client, "team/db", make_image(), "1")
    text = await page(client, "/ui/")
    assert "<title>Repositories · Registry</title>" in text
    assert found("data-repository", text) == ["team/app", "team/db"]
    assert re.findall(r'class="num repository-tags">(\d+)<', text) == ["2", "1"]
    sizes = [len(b) for b in (one.config, *one.layers, one.manifest, two.config, two.layers[1], two.manifest)]
    assert cell("repository-size", text)[0] == str(sum(sizes)), "a layer shared by two tags counts once"
    assert len(re.findall(r'<time datetime="\d{4}-\d\d-\d\dT', text)) == 2


async def test_search_matches_names_and_descriptions_ignoring_case(open_ui: UI) -> None:
    _, client = open_ui
    await push_image(client, "team/web", make_image(), "1")
    await push_image(client, "team/db", described_image("A WEB proxy"), "1")
    await push_image(client, "team/cache", make_image(), "1")
    text = await page(client, "/ui/", q="web")
    assert found("data-repository", text) == ["team/db", "team/web"]
    assert "A WEB proxy" in text and 'value="web"' in text
    assert "2 repositories" in text
    assert found("data-repository", await page(client, "/ui/", q="%")) == [], "LIKE wildcards are escaped"


async def test_repositories_come_in_pages_of_50(open_ui: UI) -> None:
    app, client = open_ui
    now = 1_700_000_000.0
    names = [f"many/r{i:03d}" for i in range(120)]
    await app.state.registry.metadata.db.write(
        lambda c: c.executemany(
            "INSERT INTO repositories (name, created_at) VALUES (?, ?)", [(name, now) for name in names]
        )
    )
    first, third = await page(client, "/ui/"), await page(client, "/ui/", page=3)
    assert found("data-repository", first) == names[:50] and found("data-repository", third) == names[100:]
    assert "Page 1 of 3" in first and 'id="page-next"' in first and 'id="page-prev"' not in first
    assert "Page 3 of 3" in third and 'id="page-next"' not in third and "page=2" in third
    assert found("data-repository", await page(client, "/ui/", page="x")) == names[:50]
    assert found("data-repository", await page(client, "/ui/", page=9)) == []


async def test_descriptions_and_names_are_escaped(open_ui: UI) -> None:
    _, client = open_ui
    await push_image(client, "team/app", described_image('<script>alert("x")</script>'), "1")
    text = await page(client, "/ui/", q="<script>")
    assert "<script>alert" not in text and "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in text


async def test_a_repository_lists_its_tags_sortable_and_paginated(open_ui: UI) -> None:
    app, client = open_ui
    image = make_image()
    await push_image(client, "team/app", image, "b")
    await push_image(client, "team/app", image, "a")
    await push_image(client, "team/app", image, "c")
    text = await page(client, "/ui/repositories/team/app")
    assert "<title>team/app · Registry</title>" in text
    assert found("data-tag", text) == ["c", "a", "b"], "newest push first by default"
    assert found("data-tag", await page(client, "/ui/repositories/team/app", sort="name")) == ["a", "b", "c"]
    by_name_desc = await page(client, "/ui/repositories/team/app", sort="name", order="desc")
    assert found("data-tag", by_name_desc) == ["c", "b", "a"]
    oldest = await page(client, "/ui/repositories/team/app", sort="pushed", order="asc")
    assert found("data-tag", oldest) == ["b", "a", "c"]
    assert 'id="sort-name"' in text and 'id="sort-pushed"' in text
    assert found("data-copy", text)[0] == "docker pull registry.test/team/app:c"
    size = sum(len(b) for b in (image.config, *image.layers))
    assert cell("tag-size", text) == [str(size)] * 3
    assert found("href", text).count(f"/ui/repositories/team/app/manifests/{image.digest}") == 3

    tags = [(f"t{i:03d}", image.digest, 1000.0 + i) for i in range(120)]
    await app.state.registry.metadata.db.write(
        lambda c: c.executemany(
            "INSERT INTO tags (repository, name, digest, updated_at) VALUES ('team/app', ?, ?, ?)", tags
        )
    )
    second = await page(client, "/ui/repositories/team/app", sort="name", page=2)
    assert found("data-tag", second) == [f"t{i:03d}" for i in range(47, 97)]
    assert "123 tags" in second and "Page 2 of 3" in second and "sort=name" in found("href", second)[-1]


async def test_the_pull_command_names_the_host_the_browser_used(open_ui: UI) -> None:
    _, client = open_ui
    await push_image(client, "team/app", make_image(), "1")
    r = await client.get("/ui/repositories/team/app", headers={"Host": "registry.example.com:5000"})
    assert found("data-copy", r.text) == ["docker pull registry.example.com:5000/team/app:1"]


async def test_a_multi_arch_tag_shows_its_platforms_and_its_index_links_each(open_ui: UI) -> None:
    _, client = open_ui
    amd, arm = make_image(), make_image()
    await push_image(client, "team/multi", amd)
    await push_image(client, "team/multi", arm)
    doc = json.loads(index_of(amd, arm))
    doc["manifests"][1]["platform"] = {"os": "linux", "architecture": "arm64", "variant": "v8"}
    index = json.dumps(doc).encode()
    r = await client.put("/v2/team/multi/manifests/1", content=index, headers={"Content-Type": OCI_INDEX})
    assert r.status_code == 201
    text = await page(client, "/ui/repositories/team/multi")
    assert re.findall(r'<span class="platform">([^<]+)<', text) == ["linux/amd64", "linux/arm64/v8"]
    sizes = sum(len(b) for i in (amd, arm) for b in (i.config, *i.layers))
    assert cell("tag-size", text) == [str(sizes)]
    text = await page(client, f"/ui/repositories/team/multi/manifests/{digest_of(index)}")
    assert found("data-platform", text) == ["linux/amd64", "linux/arm64/v8"]
    assert f"/ui/repositories/team/multi/manifests/{arm.digest}" in found("href", text)


async def test_an_image_shows_config_history_layers_and_raw_manifest(open_ui: UI) -> None:
    _, client = open_ui
    history = [
        {"created": "2024-05-01T09:00:00Z", "created_by": "ADD rootfs.tar /"},
        {"created": "2024-05-01T09:01:00Z", "created_by": "ENV A=1", "empty_layer": True},
        {"created": "2024-05-01T09:02:00Z", "created_by": "COPY app /app"},
    ]
    image = described_image(
        "the app",
        history,
        Env=["PATH=/bin", "A=1"],
        Entrypoint=["/app"],
        Cmd=["--serve"],
        ExposedPorts={"8080/tcp": {}},
        WorkingDir="/srv",
        User="1000",
    )
    await push_image(client, "team/app", image, "1")
    text = await page(client, f"/ui/repositories/team/app/manifests/{image.digest}")
    assert f"<title>team/app@{image.digest[:19]} · Registry</title>" in text
    for expected in ("PATH=/bin", "A=1", "/app", "--serve", "8080/tcp", "/srv", "1000", "linux/arm64"):
        assert f"<code>{expected}</code>" in text or f">{expected}<" in text, expected
    assert "org.opencontainers.image.description=the app" in text
    assert cell("history-size", text) == ["32", "0", "64"], "newest first; the empty layer has size 0"
    assert cell("layer-size", text) == ["64", "32"]
    assert text.count(OCI_LAYER) >= 2
    assert html.escape(json.dumps(json.loads(image.manifest), indent=2), quote=False) in text.replace("&#34;", '"')


async def test_an_image_lists_its_referrers_with_their_artifact_types(open_ui: UI) -> None:
    _, client = open_ui
    image = make_image()
    await push_image(client, "team/app", image, "1")
    signature = await push_referrer(
        client, "team/app", image.manifest, "application/vnd.dev.cosign.artifact.sig.v1+json"
    )
    sbom = await push_referrer(client, "team/app", image.manifest, "application/spdx+json")
    text = await page(client, f"/ui/repositories/team/app/manifests/{image.digest}")
    assert sorted(found("data-artifact-type", text)) == [
        "application/spdx+json",
        "application/vnd.dev.cosign.artifact.sig.v1+json",
    ]
    for digest in (signature, sbom):
        assert f"/ui/repositories/team/app/manifests/{digest}" in found("href", text)


async def test_unknown_repositories_manifests_and_malformed_names_answer_404(open_ui: UI) -> None:
    _, client = open_ui
    image = make_image()
    await push_image(client, "team/app", image, "1")
    for path in (
        "/ui/repositories/team/none",
        "/ui/repositories/Team/App",
        f"/ui/repositories/team/app/manifests/{digest_of(b'other')}",
        "/ui/repositories/team/app/manifests/sha256:zz",
        f"/ui/repositories/team/none/manifests/{image.digest}",
        "/ui/nothing-here",
    ):
        r = await client.get(path)
        assert r.status_code == 404 and "text/html" in r.headers["content-type"], path
        assert "<title>404 · Registry</title>" in r.text


async def test_a_repository_whose_name_ends_in_manifests_and_a_tag_has_its_own_page(open_ui: UI) -> None:
    _, client = open_ui
    await push_image(client, "team/manifests/latest", make_image(), "1")
    assert found("data-tag", await page(client, "/ui/repositories/team/manifests/latest")) == ["1"]


async def test_storage_counts_a_shared_layer_once(open_ui: UI) -> None:
    _, client = open_ui
    shared = os.urandom(1000)
    one, two = make_image(shared=[shared]), make_image(shared=[shared])
    await push_image(client, "team/one", one, "1")
    await push_image(client, "team/two", two, "1")
    text = await page(client, "/ui/storage")
    per_image = [sum(len(b) for b in (i.config, *i.layers, i.manifest)) for i in (one, two)]
    total = sum(per_image) - len(shared)
    assert re.search(rf'id="storage-total">Total stored: <strong data-bytes="{total}"', text)
    assert sorted(int(v) for v in cell("usage-size", text)) == sorted(per_image)
    assert sorted(int(v) for v in cell("usage-exclusive", text)) == sorted(s - len(shared) for s in per_image)


async def test_pages_carry_security_headers_and_static_files_are_served(open_ui: UI) -> None:
    _, client = open_ui
    r = await client.get("/ui/")
    assert r.headers["x-frame-options"] == "DENY" and "frame-ancestors 'none'" in r.headers["content-security-policy"]
    assert r.headers["cache-control"] == "no-store"
    for path in ("/ui/static/ui.css", "/ui/static/ui.js"):
        assert (await client.get(path)).status_code == 200
    assert "prefers-color-scheme: dark" in (await client.get("/ui/static/ui.css")).text
