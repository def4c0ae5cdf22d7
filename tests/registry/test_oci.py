"""Manifest parsing and validation."""

from __future__ import annotations

import json

import pytest

from registry.errors import ManifestInvalid
from registry.oci import (
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    OCI_INDEX,
    OCI_MANIFEST,
    is_type_name,
    parse_manifest,
)

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64
CONFIG = {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": D1, "size": 10}
LAYER = {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": D2, "size": 20}


def doc(**fields) -> bytes:
    return json.dumps({"schemaVersion": 2, **fields}).encode()


def test_oci_manifest_lists_config_and_layers_as_required_blobs() -> None:
    m = parse_manifest(doc(mediaType=OCI_MANIFEST, config=CONFIG, layers=[LAYER]), OCI_MANIFEST)
    assert m.media_type == OCI_MANIFEST
    assert m.required_blobs == {D1: 10, D2: 20}
    assert m.artifact_type == CONFIG["mediaType"]


def test_media_type_may_come_from_content_type_alone_for_oci() -> None:
    m = parse_manifest(doc(config=CONFIG, layers=[]), OCI_MANIFEST)
    assert m.media_type == OCI_MANIFEST


def test_docker_manifest_must_declare_its_media_type() -> None:
    with pytest.raises(ManifestInvalid):
        parse_manifest(doc(config=CONFIG, layers=[LAYER]), DOCKER_MANIFEST)
    m = parse_manifest(doc(mediaType=DOCKER_MANIFEST, config=CONFIG, layers=[LAYER]), "application/json")
    assert m.media_type == DOCKER_MANIFEST


def test_media_type_mismatch_between_header_and_body_is_invalid() -> None:
    with pytest.raises(ManifestInvalid):
        parse_manifest(doc(mediaType=OCI_MANIFEST, config=CONFIG, layers=[]), DOCKER_MANIFEST)


def test_index_children_are_manifests_not_blobs() -> None:
    child = {"mediaType": OCI_MANIFEST, "digest": D1, "size": 5}
    m = parse_manifest(doc(mediaType=OCI_INDEX, manifests=[child]), OCI_INDEX)
    assert [d.digest for d in m.manifests] == [D1]
    assert m.required_blobs == {}
    assert parse_manifest(doc(mediaType=DOCKER_MANIFEST_LIST, manifests=[child]), None).media_type == (
        DOCKER_MANIFEST_LIST
    )


def test_artifact_with_subject_reports_its_artifact_type() -> None:
    subject = {"mediaType": OCI_MANIFEST, "digest": D2, "size": 7}
    m = parse_manifest(
        doc(mediaType=OCI_MANIFEST, artifactType="application/x-sig", config=CONFIG, layers=[], subject=subject),
        OCI_MANIFEST,
    )
    assert m.artifact_type == "application/x-sig"
    assert m.subject is not None and m.subject.digest == D2


def test_foreign_layers_with_urls_are_not_required() -> None:
    foreign = {
        "mediaType": "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
        "digest": D2,
        "size": 1,
        "urls": ["https://example.invalid/layer"],
    }
    m = parse_manifest(doc(mediaType=DOCKER_MANIFEST, config=CONFIG, layers=[foreign]), DOCKER_MANIFEST)
    assert m.required_blobs == {D1: 10}


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b"\xff\xfe",
        doc(mediaType=OCI_MANIFEST, layers=[]),  # no config
        doc(mediaType=OCI_MANIFEST, config=CONFIG),  # no layers
        doc(mediaType=OCI_MANIFEST, config={**CONFIG, "digest": "sha256:xyz"}, layers=[]),
        doc(mediaType=OCI_MANIFEST, config={**CONFIG, "size": -1}, layers=[]),
        doc(mediaType=OCI_MANIFEST, config={**CONFIG, "size": "10"}, layers=[]),
        doc(mediaType=OCI_MANIFEST, config={**CONFIG, "size": True}, layers=[]),
        doc(mediaType=OCI_MANIFEST, config={"digest": D1, "size": 1}, layers=[]),
        doc(mediaType=OCI_INDEX, manifests="nope"),
        doc(mediaType="application/x-unknown", config=CONFIG, layers=[]),
        doc(mediaType=DOCKER_MANIFEST, config=CONFIG, layers=[], subject=CONFIG),
        json.dumps({"schemaVersion": 1, "mediaType": OCI_MANIFEST, "config": CONFIG, "layers": []}).encode(),
        json.dumps({"schemaVersion": 1, "name": "x", "fsLayers": []}).encode(),
        doc(mediaType=OCI_MANIFEST, config=CONFIG, layers=[], annotations={"a": 1}),
    ],
)
def test_malformed_manifests_are_invalid(body: bytes) -> None:
    with pytest.raises(ManifestInvalid):
        parse_manifest(body, OCI_MANIFEST)


def test_schema1_content_type_is_refused_with_a_reason() -> None:
    with pytest.raises(ManifestInvalid) as e:
        parse_manifest(doc(config=CONFIG, layers=[]), "application/vnd.docker.distribution.manifest.v1+prettyjws")
    assert "schema 1" in str(e.value.detail)


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize(
    "body",
    [
        ("[" * 50_000 + "]" * 50_000).encode(),
        ('{"a":' * 50_000 + "1" + "}" * 50_000).encode(),
        doc(mediaType=OCI_MANIFEST, config=CONFIG, layers=[LAYER])[:-1] + f',"x":{nested(5_000)}}}'.encode(),
        doc(mediaType=OCI_MANIFEST, config=CONFIG, layers=[LAYER])[:-1] + f',"x":{nested(64)}}}'.encode(),
    ],
)
def test_documents_nested_deeper_than_64_levels_are_invalid(body: bytes) -> None:
    with pytest.raises(ManifestInvalid) as e:
        parse_manifest(body, OCI_MANIFEST)
    assert "nested" in e.value.detail["reason"]


def test_nesting_up_to_64_levels_is_accepted() -> None:
    body = doc(mediaType=OCI_MANIFEST, config=CONFIG, layers=[LAYER])[:-1] + f',"x":{nested(63)}}}'.encode()
    assert parse_manifest(body, OCI_MANIFEST).required_blobs == {D1: 10, D2: 20}


@pytest.mark.parametrize(
    "extra",
    [
        ',"artifactType":"\\udfff"',
        ',"annotations":{"k":"\\ud800"}',
        ',"annotations":{"\\udc00":"v"}',
        ',"x":[[{"y":"ok\\udfffok"}]]',
        ',"x":"\\ude00\\ud83d"',
    ],
)
def test_lone_surrogate_escapes_anywhere_are_invalid(extra: str) -> None:
    body = doc(mediaType=OCI_MANIFEST, config=CONFIG, layers=[LAYER])[:-1] + extra.encode() + b"}"
    with pytest.raises(ManifestInvalid) as e:
        parse_manifest(body, OCI_MANIFEST)
    assert "surrogate" in e.value.detail["reason"]


def test_escaped_surrogate_pairs_are_characters_and_accepted() -> None:
    body = doc(mediaType=OCI_MANIFEST, config=CONFIG, layers=[LAYER])[:-1] + b',"annotations":{"k":"\\ud83d\\ude00"}}'
    assert parse_manifest(body, OCI_MANIFEST).annotations == {"k": "\U0001f600"}


@pytest.mark.parametrize(
    "encode",
    [
        lambda text: b"\xef\xbb\xbf" + text.encode(),
        lambda text: text.encode("utf-16"),
        lambda text: text.encode("utf-16-le"),
        lambda text: text.encode("utf-16-be"),
        lambda text: text.encode("utf-32"),
        lambda text: text.encode("utf-32-le"),
        lambda text: text.encode().replace(b"application", b"applic\xedtion"),
    ],
    ids=["utf-8-bom", "utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le", "invalid-utf-8"],
)
def test_only_utf_8_without_a_bom_is_accepted(encode) -> None:
    text = doc(mediaType=OCI_MANIFEST, config=CONFIG, layers=[LAYER]).decode()
    with pytest.raises(ManifestInvalid) as e:
        parse_manifest(encode(text), OCI_MANIFEST)
    assert "UTF-8" in e.value.detail["reason"]


@pytest.mark.parametrize(
    "fields",
    [
        {"config": CONFIG, "layers": [LAYER, {**LAYER, "size": 21}]},
        {"config": CONFIG, "layers": [{**LAYER, "size": 21}, LAYER]},
        {"config": CONFIG, "layers": [{**CONFIG, "size": 11}]},
        {"mediaType": OCI_INDEX, "manifests": [{**LAYER, "mediaType": OCI_MANIFEST}, {**LAYER, "size": 1}]},
    ],
)
def test_one_digest_listed_with_two_sizes_is_invalid(fields: dict) -> None:
    body = doc(**{"mediaType": OCI_MANIFEST, **fields})
    with pytest.raises(ManifestInvalid) as e:
        parse_manifest(body, json.loads(body)["mediaType"])
    assert "size" in e.value.detail["reason"]


def test_one_digest_listed_twice_with_the_same_size_is_accepted() -> None:
    m = parse_manifest(doc(mediaType=OCI_MANIFEST, config=CONFIG, layers=[LAYER, LAYER]), OCI_MANIFEST)
    assert len(m.layers) == 2 and m.required_blobs == {D1: 10, D2: 20}


def test_sizes_past_2_to_the_63_are_invalid() -> None:
    with pytest.raises(ManifestInvalid):
        parse_manifest(doc(mediaType=OCI_MANIFEST, config=CONFIG, layers=[{**LAYER, "size": 2**63}]), OCI_MANIFEST)
    big = {**LAYER, "size": 2**63 - 1}
    assert (
        parse_manifest(doc(mediaType=OCI_MANIFEST, config=CONFIG, layers=[big]), OCI_MANIFEST).layers[0].size
        == big["size"]
    )


@pytest.mark.parametrize(
    "fields",
    [
        {"artifactType": "application/x\u0000y"},
        {"artifactType": "application/x\ny"},
        {"config": {**CONFIG, "mediaType": "application/x\u0000y"}},
        {"config": {**CONFIG, "artifactType": "a\u2028b"}},
        {"layers": [{**LAYER, "mediaType": "a\tb"}]},
    ],
)
def test_media_and_artifact_types_with_control_characters_are_invalid(fields: dict) -> None:
    with pytest.raises(ManifestInvalid):
        parse_manifest(doc(**{"mediaType": OCI_MANIFEST, "config": CONFIG, "layers": [LAYER], **fields}), OCI_MANIFEST)


def test_is_type_name_accepts_printable_text_only() -> None:
    assert is_type_name("application/vnd.example+json; charset=utf-8")
    assert not is_type_name("a\x00b") and not is_type_name("") and not is_type_name("a\u200bb")


def test_error_details_quote_at_most_a_bounded_part_of_the_document() -> None:
    huge = "application/" + "x" * 100_000
    for body, content_type in [(doc(mediaType=huge), OCI_MANIFEST), (doc(mediaType=OCI_MANIFEST), huge)]:
        with pytest.raises(ManifestInvalid) as e:
            parse_manifest(body, content_type)
        assert len(json.dumps(e.value.body())) < 1000


@pytest.mark.parametrize("version", [2.0, "2", True, 2.5, None])
def test_schema_version_must_be_the_integer_2(version) -> None:
    with pytest.raises(ManifestInvalid):
        parse_manifest(
            doc(mediaType=OCI_MANIFEST, config=CONFIG, layers=[LAYER]).replace(
                b'"schemaVersion": 2', b'"schemaVersion": ' + json.dumps(version).encode()
            ),
            OCI_MANIFEST,
        )


@pytest.mark.parametrize("urls", [{}, "", 0, False, {"a": "b"}, "http://x", [1]])
def test_urls_must_be_a_list_of_strings_even_when_empty(urls) -> None:
    with pytest.raises(ManifestInvalid):
        parse_manifest(doc(mediaType=OCI_MANIFEST, config={**CONFIG, "urls": urls}, layers=[LAYER]), OCI_MANIFEST)
    assert parse_manifest(doc(mediaType=OCI_MANIFEST, config={**CONFIG, "urls": []}, layers=[LAYER]), OCI_MANIFEST)
