"""Manifests: push by tag and digest, every media type, validation, negotiation and deletes."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.support.app import stored_keys
from tests.support.content import (
    DOCKER_LIST,
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
    descriptor,
    digest_of,
    error_codes,
    index_of,
    make_image,
    push_blob,
    push_image,
)

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("media_type", [OCI_MANIFEST, DOCKER_MANIFEST])
async def test_push_by_tag_then_get_by_tag_and_digest_returns_the_exact_bytes(
    client: httpx.AsyncClient, media_type: str
) -> None:
    image = make_image(media_type, layers=2)
    await push_image(client, "team/app", image, "1.0")
    for reference in ("1.0", image.digest):
        r = await client.get(f"/v2/team/app/manifests/{reference}", headers={"Accept": media_type})
        assert r.status_code == 200
        assert r.content == image.manifest
        assert r.headers["Content-Type"] == media_type
        assert r.headers["Docker-Content-Digest"] == image.digest
        head = await client.head(f"/v2/team/app/manifests/{reference}", headers={"Accept": media_type})
        assert head.status_code == 200 and head.content == b""
        assert head.headers["Content-Length"] == str(len(image.manifest))
        assert head.headers["Docker-Content-Digest"] == image.digest


async def test_put_answers_location_and_digest(client: httpx.AsyncClient) -> None:
    image = make_image()
    for blob in [image.config, *image.layers]:
        await push_blob(client, "team/app", blob)
    r = await client.put("/v2/team/app/manifests/v1", content=image.manifest, headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 201
    assert r.headers["Docker-Content-Digest"] == image.digest
    assert r.headers["Location"] == f"/v2/team/app/manifests/{image.digest}"
    assert "OCI-Subject" not in r.headers


@pytest.mark.parametrize("index_type", [OCI_INDEX, DOCKER_LIST])
async def test_index_of_pushed_children(client: httpx.AsyncClient, index_type: str) -> None:
    child_type = OCI_MANIFEST if index_type == OCI_INDEX else DOCKER_MANIFEST
    children = [make_image(child_type), make_image(child_type)]
    for child in children:
        await push_image(client, "team/multi", child)
    body = index_of(*children, media_type=index_type)
    r = await client.put("/v2/team/multi/manifests/latest", content=body, headers={"Content-Type": index_type})
    assert r.status_code == 201, r.text
    r = await client.get("/v2/team/multi/manifests/latest", headers={"Accept": index_type})
    assert r.content == body and r.headers["Content-Type"] == index_type


async def test_index_with_a_child_missing_from_the_repository_is_refused(client: httpx.AsyncClient) -> None:
    child = make_image()
    await push_image(client, "team/elsewhere", child)
    r = await client.put(
        "/v2/team/multi/manifests/latest", content=index_of(child), headers={"Content-Type": OCI_INDEX}
    )
    assert r.status_code == 400 and error_codes(r) == ["MANIFEST_BLOB_UNKNOWN"]
    assert r.json()["errors"][0]["detail"]["missing"] == [child.digest]


async def test_the_refusal_of_many_missing_blobs_names_a_bounded_few(client: httpx.AsyncClient) -> None:
    image = make_image(layers=500)
    r = await client.put("/v2/team/app/manifests/v1", content=image.manifest, headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 400 and error_codes(r) == ["MANIFEST_BLOB_UNKNOWN"]
    detail = r.json()["errors"][0]["detail"]
    assert detail["count"] == 501 and len(detail["missing"]) == 50 and len(r.content) < 8000


async def test_manifest_with_missing_blobs_is_refused_and_nothing_is_stored(client: httpx.AsyncClient) -> None:
    image = make_image(layers=2)
    await push_blob(client, "team/app", image.config)
    await push_blob(client, "team/app", image.layers[0])
    r = await client.put("/v2/team/app/manifests/v1", content=image.manifest, headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 400 and error_codes(r) == ["MANIFEST_BLOB_UNKNOWN"]
    assert r.json()["errors"][0]["detail"]["missing"] == [digest_of(image.layers[1])]
    assert (await client.get("/v2/team/app/manifests/v1")).status_code == 404
    assert (await client.get(f"/v2/team/app/manifests/{image.digest}")).status_code == 404
    assert (await client.get("/v2/team/app/tags/list")).json()["tags"] == []


async def test_blobs_of_another_repository_do_not_satisfy_a_manifest(client: httpx.AsyncClient) -> None:
    image = make_image()
    await push_image(client, "team/one", image, "v1")
    r = await client.put("/v2/team/two/manifests/v1", content=image.manifest, headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 400 and error_codes(r) == ["MANIFEST_BLOB_UNKNOWN"]


async def test_descriptor_size_must_match_the_stored_blob(client: httpx.AsyncClient) -> None:
    config, layer = b"{}", b"layer bytes"
    await push_blob(client, "team/app", config)
    await push_blob(client, "team/app", layer)
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor("application/vnd.oci.image.config.v1+json", config),
        "layers": [{**descriptor("application/vnd.oci.image.layer.v1.tar", layer), "size": 999}],
    }
    r = await client.put("/v2/team/app/manifests/v1", json=doc, headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 400 and error_codes(r) == ["MANIFEST_INVALID"]


async def test_rejected_manifests_leave_no_bytes_in_storage(served) -> None:
    """A manifest refused for its references (unknown blob, wrong size, unknown child) is checked
    before its bytes are stored: nothing new appears under blobs/."""
    app, client = served
    driver = app.state.registry.driver
    image = make_image()
    await push_image(client, "team/app", image, "v1")
    before = await stored_keys(driver, "blobs/")
    unknown_layer = make_image(shared=[image.layers[0]])
    wrong_size = json.loads(image.manifest)
    wrong_size["layers"][0]["size"] += 1
    rejected = [
        (unknown_layer.manifest, OCI_MANIFEST, "MANIFEST_BLOB_UNKNOWN"),
        (json.dumps(wrong_size).encode(), OCI_MANIFEST, "MANIFEST_INVALID"),
        (index_of(image, make_image()), OCI_INDEX, "MANIFEST_BLOB_UNKNOWN"),
    ]
    for body, media_type, code in rejected:
        for reference in ("rejected", digest_of(body)):
            r = await client.put(
                f"/v2/team/app/manifests/{reference}", content=body, headers={"Content-Type": media_type}
            )
            assert r.status_code == 400 and error_codes(r) == [code], r.text
    assert await stored_keys(driver, "blobs/") == before


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"{not json", OCI_MANIFEST),
        (json.dumps({"schemaVersion": 2, "mediaType": "application/x-foo"}).encode(), "application/x-foo"),
        (json.dumps({"schemaVersion": 2}).encode(), "application/json"),
    ],
)
async def test_malformed_manifests_answer_manifest_invalid(
    client: httpx.AsyncClient, body: bytes, content_type: str
) -> None:
    r = await client.put("/v2/team/app/manifests/v1", content=body, headers={"Content-Type": content_type})
    assert r.status_code == 400 and error_codes(r) == ["MANIFEST_INVALID"]


async def test_put_by_digest_must_match_the_body(client: httpx.AsyncClient) -> None:
    image = make_image()
    await push_image(client, "team/app", image)
    wrong = digest_of(b"other")
    r = await client.put(
        f"/v2/team/app/manifests/{wrong}", content=image.manifest, headers={"Content-Type": OCI_MANIFEST}
    )
    assert r.status_code == 400 and error_codes(r) == ["DIGEST_INVALID"]


async def test_manifest_over_4_mib_answers_413(client: httpx.AsyncClient) -> None:
    body = json.dumps({"schemaVersion": 2, "pad": "x" * (4 << 20)}).encode()
    r = await client.put("/v2/team/app/manifests/big", content=body, headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 413 and error_codes(r) == ["MANIFEST_INVALID"]

    async def chunked():
        yield body

    r = await client.put("/v2/team/app/manifests/big", content=chunked(), headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 413


async def test_accept_negotiation(client: httpx.AsyncClient) -> None:
    image = make_image(OCI_MANIFEST)
    await push_image(client, "team/app", image, "v1")
    url = "/v2/team/app/manifests/v1"
    assert (await client.get(url)).status_code == 200
    assert (await client.get(url, headers={"Accept": "*/*"})).status_code == 200
    both = f"{DOCKER_MANIFEST}, {OCI_MANIFEST};q=0.5"
    assert (await client.get(url, headers={"Accept": both})).status_code == 200
    r = await client.get(url, headers={"Accept": DOCKER_MANIFEST})
    assert r.status_code == 404 and error_codes(r) == ["MANIFEST_UNKNOWN"]


async def test_unknown_manifests_answer_manifest_unknown(client: httpx.AsyncClient) -> None:
    for reference in ("nope", digest_of(b"nope")):
        r = await client.get(f"/v2/team/app/manifests/{reference}")
        assert r.status_code == 404 and error_codes(r) == ["MANIFEST_UNKNOWN"]
        assert (await client.head(f"/v2/team/app/manifests/{reference}")).status_code == 404


async def test_retagging_moves_the_tag(client: httpx.AsyncClient) -> None:
    first, second = make_image(), make_image()
    await push_image(client, "team/app", first, "latest")
    await push_image(client, "team/app", second, "latest")
    r = await client.get("/v2/team/app/manifests/latest")
    assert r.headers["Docker-Content-Digest"] == second.digest
    assert (await client.get(f"/v2/team/app/manifests/{first.digest}")).status_code == 200


async def test_deleting_a_tag_removes_only_the_tag(client: httpx.AsyncClient) -> None:
    image = make_image()
    await push_image(client, "team/app", image, "v1")
    await push_image(client, "team/app", image, "v2")
    assert (await client.delete("/v2/team/app/manifests/v1")).status_code == 202
    assert (await client.get("/v2/team/app/manifests/v1")).status_code == 404
    assert (await client.get("/v2/team/app/manifests/v2")).status_code == 200
    assert (await client.get(f"/v2/team/app/manifests/{image.digest}")).status_code == 200
    r = await client.delete("/v2/team/app/manifests/v1")
    assert r.status_code == 404 and error_codes(r) == ["MANIFEST_UNKNOWN"]


async def test_deleting_by_digest_removes_the_manifest_and_its_tags(client: httpx.AsyncClient) -> None:
    image = make_image()
    await push_image(client, "team/app", image, "v1")
    assert (await client.delete(f"/v2/team/app/manifests/{image.digest}")).status_code == 202
    assert (await client.get(f"/v2/team/app/manifests/{image.digest}")).status_code == 404
    assert (await client.get("/v2/team/app/manifests/v1")).status_code == 404
    assert (await client.get("/v2/team/app/tags/list")).json()["tags"] == []
    r = await client.delete(f"/v2/team/app/manifests/{image.digest}")
    assert r.status_code == 404


async def test_artifact_with_subject_answers_oci_subject(client: httpx.AsyncClient) -> None:
    image = make_image()
    await push_image(client, "team/app", image, "v1")
    empty = b"{}"
    await push_blob(client, "team/app", empty)
    signature = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.example.signature",
        "config": descriptor("application/vnd.oci.empty.v1+json", empty),
        "layers": [descriptor("application/vnd.oci.empty.v1+json", empty)],
        "subject": descriptor(OCI_MANIFEST, image.manifest),
    }
    body = json.dumps(signature).encode()
    r = await client.put(
        f"/v2/team/app/manifests/{digest_of(body)}", content=body, headers={"Content-Type": OCI_MANIFEST}
    )
    assert r.status_code == 201, r.text
    assert r.headers["OCI-Subject"] == image.digest


async def test_manifest_bytes_are_readable_as_a_blob(client: httpx.AsyncClient) -> None:
    image = make_image()
    await push_image(client, "team/app", image, "v1")
    r = await client.get(f"/v2/team/app/blobs/{image.digest}")
    assert r.status_code == 200 and r.content == image.manifest


def _hostile_manifests(image) -> list[tuple[str, bytes]]:
    text = image.manifest.decode()
    deep = json.loads(image.manifest)
    dup = json.loads(image.manifest)
    dup["layers"] = [{**dup["layers"][0], "size": dup["layers"][0]["size"] + 1}, dup["layers"][0]]
    return [
        ("nested 50,000 deep", ("[" * 50_000 + "]" * 50_000).encode()),
        ("nested 5,000 deep in a manifest", text[:-1].encode() + b',"x":' + b"[" * 5000 + b"]" * 5000 + b"}"),
        ("nested 65 deep in a manifest", json.dumps({**deep, "x": json.loads("[" * 64 + "]" * 64)}).encode()),
        ("lone surrogate artifactType", text[:-1].encode() + b',"artifactType":"\\udfff"}'),
        ("lone surrogate annotation", text[:-1].encode() + b',"annotations":{"a":"\\ud800"}}'),
        ("NUL in artifactType", text[:-1].encode() + b',"artifactType":"application/a\\u0000b"}'),
        ("one digest with two sizes", json.dumps(dup).encode()),
        ("utf-8 with a bom", b"\xef\xbb\xbf" + image.manifest),
        ("utf-16", text.encode("utf-16")),
        ("utf-32-le", text.encode("utf-32-le")),
    ]


async def test_hostile_manifest_documents_answer_manifest_invalid_and_store_nothing(served) -> None:
    app, client = served
    image = make_image()
    for blob in [image.config, *image.layers]:
        await push_blob(client, "team/app", blob)
    before = await stored_keys(app.state.registry.driver, "blobs/")
    for label, body in _hostile_manifests(image):
        for reference in ("hostile", digest_of(body)):
            r = await client.put(
                f"/v2/team/app/manifests/{reference}", content=body, headers={"Content-Type": OCI_MANIFEST}
            )
            assert r.status_code == 400 and error_codes(r) == ["MANIFEST_INVALID"], (label, r.status_code, r.text[:200])
    assert await stored_keys(app.state.registry.driver, "blobs/") == before
    assert (await client.get("/v2/team/app/tags/list")).json()["tags"] == []


@pytest.mark.parametrize("method", ["GET", "HEAD", "DELETE"])
@pytest.mark.parametrize(
    "reference", ["-bad", "a" * 129, "sha384:" + "a" * 96, "sha256:" + "A" * 64, "sha256:short", "md5:x", "x:"]
)
async def test_references_that_cannot_name_a_manifest_answer_manifest_unknown(
    client: httpx.AsyncClient, method: str, reference: str
) -> None:
    await push_image(client, "team/app", make_image(), "v1")
    r = await client.request(method, f"/v2/team/app/manifests/{reference}")
    assert r.status_code == 404, (reference, r.status_code)
    if method != "HEAD":
        assert error_codes(r) == ["MANIFEST_UNKNOWN"]
    assert (await client.get("/v2/team/app/tags/list")).json()["tags"] == ["v1"]


async def test_put_with_an_invalid_tag_still_answers_tag_invalid(client: httpx.AsyncClient) -> None:
    image = make_image()
    for blob in [image.config, *image.layers]:
        await push_blob(client, "team/app", blob)
    r = await client.put("/v2/team/app/manifests/-bad", content=image.manifest, headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 400 and error_codes(r) == ["TAG_INVALID"]
