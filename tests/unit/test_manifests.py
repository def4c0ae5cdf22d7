"""Manifest parsing and validation."""

from __future__ import annotations

import json

import pytest

from registry.errors import ManifestInvalid
from registry.manifests import DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_INDEX, OCI_MANIFEST, parse_manifest

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
