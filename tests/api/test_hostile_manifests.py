"""Hostile manifest bodies and Content-Types on `PUT /v2/<name>/manifests/<reference>`: the right 4xx
with an OCI error body, never a 5xx, and nothing stored changes (no row, no bytes left behind)."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest

from tests.api.hostile import (
    Case,
    Expect,
    Seeded,
    anyio_backend,  # noqa: F401  (a module-scoped fixture: one loop for the module)
    case,
    check,
    params,
    seeded_fixture,
)
from tests.support.content import DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST, descriptor, digest_of

pytestmark = pytest.mark.anyio

INVALID, BLOB_UNKNOWN = "MANIFEST_INVALID", "MANIFEST_BLOB_UNKNOWN"
UNKNOWN = "sha256:" + "0" * 64
SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+prettyjws"
Doc = dict[str, Any]


def image_doc(seeded: Seeded) -> Doc:
    """The seeded image's manifest as a document (its blobs are in the repository)."""
    return json.loads(seeded.image.manifest)


def index_doc(seeded: Seeded) -> Doc:
    return json.loads(seeded.index)


def mutated(base: Callable[[Seeded], Doc], change: Callable[[Doc], Any]) -> Callable[[Seeded], bytes]:
    """A body: the base document with `change` applied (it edits in place or returns a new value)."""

    def body(seeded: Seeded) -> bytes:
        doc = copy.deepcopy(base(seeded))
        result = change(doc)
        return json.dumps(doc if result is None else result).encode()

    return body


def _set(path: str, value: Any) -> Callable[[Doc], None]:
    """Set the field at dotted `path` (list indexes as numbers) to `value`."""

    def change(doc: Doc) -> None:
        *parents, last = path.split(".")
        target: Any = doc
        for part in parents:
            target = target[int(part)] if isinstance(target, list) else target[part]
        if isinstance(target, list):
            target[int(last)] = value
        else:
            target[last] = value

    return change


def _drop(path: str) -> Callable[[Doc], None]:
    def change(doc: Doc) -> None:
        *parents, last = path.split(".")
        target: Any = doc
        for part in parents:
            target = target[int(part)] if isinstance(target, list) else target[part]
        del target[last]

    return change


WRONG_VALUES = {
    "null": None,
    "true": True,
    "string": "x",
    "number": 5,
    "float": 1.5,
    "list": [],
    "object": {},
    "huge-int": 2**70,
    "negative": -1,
    "two-as-float": 2.0,
}

# Field -> the wrong values it is tested with (those that are not acceptable for it).
IMAGE_FIELDS = {
    "schemaVersion": ["null", "true", "string", "float", "list", "object", "huge-int", "negative", "two-as-float"],
    "mediaType": ["true", "number", "list", "object"],
    "config": ["null", "true", "string", "number", "list"],
    "config.mediaType": ["null", "true", "number", "list", "object"],
    "config.digest": ["null", "true", "string", "number", "list", "object"],
    "config.size": ["null", "true", "string", "float", "list", "object", "huge-int", "negative"],
    "config.annotations": ["true", "string", "number", "list"],
    "config.urls": ["true", "string", "number", "object"],
    "config.artifactType": ["true", "number", "list", "object"],
    "layers": ["null", "true", "string", "number", "object"],
    "layers.0": ["null", "true", "string", "number", "list"],
    "layers.0.digest": ["null", "number", "string", "object"],
    "layers.0.size": ["null", "true", "string", "float", "huge-int", "negative"],
    "layers.0.mediaType": ["null", "number", "object"],
    "annotations": ["true", "string", "number", "list"],
    "artifactType": ["true", "number", "list", "object"],
    "subject": ["true", "string", "number", "list"],
}
INDEX_FIELDS = {
    "manifests": ["null", "true", "string", "number", "object"],
    "manifests.0": ["null", "true", "string", "number", "list"],
    "manifests.0.digest": ["null", "number", "string"],
    "manifests.0.size": ["null", "true", "string", "float", "huge-int", "negative"],
    "manifests.0.mediaType": ["null", "number"],
    "schemaVersion": ["null", "string", "float", "negative"],
}


def nested(depth: int) -> bytes:
    """A manifest whose annotations hold a value nested `depth` lists deep."""
    return (
        b'{"schemaVersion":2,"mediaType":"'
        + OCI_MANIFEST.encode()
        + b'","annotations":{"a":'
        + (b"[" * depth + b"]" * depth)
        + b"}}"
    )


def _type_cases() -> list[Case]:
    cases = []
    for fields, base, media_type in ((IMAGE_FIELDS, image_doc, OCI_MANIFEST), (INDEX_FIELDS, index_doc, OCI_INDEX)):
        kind = "image" if base is image_doc else "index"
        for path, wrongs in fields.items():
            for wrong in wrongs:
                cases.append(
                    case(
                        f"{kind}-{path}-{wrong}",
                        "PUT",
                        "/v2/<repo>/manifests/bad",
                        400,
                        INVALID,
                        headers=[("Content-Type", media_type)],
                        body=mutated(base, _set(path, WRONG_VALUES[wrong])),
                    )
                )
        for path in ("mediaType", "schemaVersion") + (("config", "layers") if kind == "image" else ("manifests",)):
            cases.append(
                case(
                    f"{kind}-missing-{path}",
                    "PUT",
                    "/v2/<repo>/manifests/bad",
                    400,
                    INVALID,
                    body=mutated(base, _drop(path)),
                )
            )
    return cases


def _surrogate(where: str) -> Callable[[Seeded], bytes]:
    """The image manifest with a lone surrogate escape (\\udfff) in one string."""

    def body(seeded: Seeded) -> bytes:
        doc = image_doc(seeded)
        marker = "SURROGATE-HERE"
        if where == "artifactType":
            doc["artifactType"] = marker
        elif where == "annotation-value":
            doc["annotations"] = {"a": marker}
        elif where == "annotation-key":
            doc["annotations"] = {marker: "a"}
        elif where == "config-mediaType":
            doc["config"]["mediaType"] = marker
        elif where == "layer-annotation":
            doc["layers"][0]["annotations"] = {"a": marker}
        elif where == "layer-url":
            doc["layers"][0]["urls"] = [marker]
        elif where == "config-artifactType":
            doc["config"]["artifactType"] = marker
        elif where == "high-surrogate":
            doc["annotations"] = {"a": marker.replace("SURROGATE", "HIGH")}
        text = json.dumps(doc).replace("SURROGATE-HERE", "\\udfff").replace("HIGH-HERE", "\\ud800x")
        return text.encode()

    return body


def _content_cases() -> list[Case]:
    put = "/v2/<repo>/manifests/bad"
    ct = [("Content-Type", OCI_MANIFEST)]
    image = lambda s: s.image.manifest  # noqa: E731

    def reference_to(kind: str) -> Callable[[Seeded], bytes]:
        def body(seeded: Seeded) -> bytes:
            doc = image_doc(seeded)
            if kind == "unknown-layer":
                doc["layers"].append(descriptor("application/vnd.oci.image.layer.v1.tar+gzip", b"never pushed"))
            elif kind == "unknown-config":
                doc["config"] = descriptor("application/vnd.oci.image.config.v1+json", b"{}never")
            elif kind == "other-repos-blob":
                doc["layers"] = [{**doc["layers"][0], "digest": seeded.extra["<other_blob>"], "size": 32}]
            elif kind == "size-mismatch":
                doc["layers"][0]["size"] += 1
            elif kind == "size-zero":
                doc["config"]["size"] = 0
            elif kind == "duplicate-different-sizes":
                doc["layers"].append({**doc["layers"][0], "size": doc["layers"][0]["size"] + 1})
            elif kind == "duplicate-wrong-size-first":
                doc["layers"].insert(0, {**doc["layers"][0], "size": doc["layers"][0]["size"] + 1})
            elif kind == "duplicate-config-as-layer-other-size":
                doc["layers"].append({**doc["config"], "size": doc["config"]["size"] + 7})
            elif kind == "sha512-unknown":
                doc["layers"][0]["digest"] = "sha512:" + "a" * 128
            return json.dumps(doc).encode()

        return body

    def index_to(kind: str) -> Callable[[Seeded], bytes]:
        def body(seeded: Seeded) -> bytes:
            doc = index_doc(seeded)
            if kind == "unknown-child":
                doc["manifests"].append({"mediaType": OCI_MANIFEST, "digest": UNKNOWN, "size": 10})
            elif kind == "blob-as-child":
                doc["manifests"] = [{"mediaType": OCI_MANIFEST, "digest": digest_of(seeded.layer), "size": 64}]
            elif kind == "child-size-mismatch":
                doc["manifests"][0]["size"] += 1
            elif kind == "duplicate-children-different-sizes":
                doc["manifests"].append({**doc["manifests"][0], "size": doc["manifests"][0]["size"] + 1})
            return json.dumps(doc).encode()

        return body

    cases = [
        case("body-empty", "PUT", put, 400, INVALID, headers=ct),
        case("body-not-json", "PUT", put, 400, INVALID, headers=ct, body=b"{not json"),
        case("body-truncated", "PUT", put, 400, INVALID, headers=ct, body=lambda s: s.image.manifest[:-5]),
        case("body-json-array", "PUT", put, 400, INVALID, headers=ct, body=b"[]"),
        case("body-json-string", "PUT", put, 400, INVALID, headers=ct, body=b'"manifest"'),
        case("body-json-null", "PUT", put, 400, INVALID, headers=ct, body=b"null"),
        case("body-json-number-5000-digits", "PUT", put, 400, INVALID, headers=ct, body=b"9" * 5000),
        case("body-trailing-garbage", "PUT", put, 400, INVALID, headers=ct, body=lambda s: s.image.manifest + b"}"),
        case("body-two-documents", "PUT", put, 400, INVALID, headers=ct, body=lambda s: s.image.manifest * 2),
        case("body-bom", "PUT", put, 400, INVALID, headers=ct, body=lambda s: b"\xef\xbb\xbf" + s.image.manifest),
        case(
            "body-utf16-le",
            "PUT",
            put,
            400,
            INVALID,
            headers=ct,
            body=lambda s: s.image.manifest.decode().encode("utf-16-le"),
        ),
        case(
            "body-utf16-bom",
            "PUT",
            put,
            400,
            INVALID,
            headers=ct,
            body=lambda s: s.image.manifest.decode().encode("utf-16"),
        ),
        case(
            "body-utf32",
            "PUT",
            put,
            400,
            INVALID,
            headers=ct,
            body=lambda s: s.image.manifest.decode().encode("utf-32"),
        ),
        case(
            "body-invalid-utf8",
            "PUT",
            put,
            400,
            INVALID,
            headers=ct,
            body=lambda s: s.image.manifest.replace(b'"schemaVersion"', b'"schemaVersion\xff"'),
        ),
        case(
            "body-raw-surrogate-utf8",
            "PUT",
            put,
            400,
            INVALID,
            headers=ct,
            body=lambda s: s.image.manifest[:-1] + b',"annotations":{"a":"\xed\xb3\xbf"}}',
        ),
        case(
            "body-nul-byte",
            "PUT",
            put,
            400,
            INVALID,
            headers=ct,
            body=lambda s: s.image.manifest.replace(b"{", b"{\x00", 1),
        ),
        case("nesting-5000", "PUT", put, 400, INVALID, headers=ct, body=nested(5000)),
        case("nesting-50000", "PUT", put, 400, INVALID, headers=ct, body=nested(50000)),
        case(
            "nesting-objects-5000",
            "PUT",
            put,
            400,
            INVALID,
            headers=ct,
            body=b'{"schemaVersion":2,"a":' + b'{"a":' * 5000 + b"1" + b"}" * 5001,
        ),
        case("nesting-200", "PUT", put, 400, INVALID, headers=ct, body=nested(200)),
        case(
            "nan-size",
            "PUT",
            put,
            400,
            INVALID,
            headers=ct,
            body=lambda s: s.image.manifest.replace(b'"size": 64', b'"size": NaN', 1),
        ),
        case(
            "infinity-size",
            "PUT",
            put,
            400,
            INVALID,
            headers=ct,
            body=lambda s: s.image.manifest.replace(b'"size": 64', b'"size": Infinity', 1),
        ),
        case(
            "size-1e400",
            "PUT",
            put,
            400,
            INVALID,
            headers=ct,
            body=lambda s: s.image.manifest.replace(b'"size": 64', b'"size": 1e400', 1),
        ),
        case(
            "size-5000-digits",
            "PUT",
            put,
            400,
            INVALID,
            headers=ct,
            body=lambda s: s.image.manifest.replace(b'"size": 64', b'"size": ' + b"9" * 5000, 1),
        ),
        case(
            "size-int64-max-plus-one",
            "PUT",
            put,
            400,
            INVALID,
            headers=ct,
            body=lambda s: s.image.manifest.replace(b'"size": 64', b'"size": 9223372036854775808', 1),
        ),
        case(
            "size-64-as-float",
            "PUT",
            put,
            400,
            INVALID,
            headers=ct,
            body=lambda s: s.image.manifest.replace(b'"size": 64', b'"size": 64.0', 1),
        ),
        case(
            "duplicate-keys-schema-version",
            "PUT",
            put,
            400,
            INVALID,
            headers=ct,
            body=lambda s: s.image.manifest.replace(b'"schemaVersion": 2', b'"schemaVersion": 2, "schemaVersion": 1'),
        ),
        case(
            "too-large",
            "PUT",
            put,
            413,
            INVALID,
            headers=ct,
            body=lambda s: s.image.manifest[:-1] + b',"annotations":{"a":"' + b"x" * (4 << 20) + b'"}}',
        ),
        case(
            "too-large-declared",
            "PUT",
            put,
            413,
            INVALID,
            headers=[*ct, ("Content-Length", str(5 << 30))],
            body=lambda s: s.image.manifest,
        ),
        case(
            "schema1-content-type",
            "PUT",
            put,
            400,
            INVALID,
            headers=[("Content-Type", SCHEMA1)],
            body=lambda s: s.image.manifest,
        ),
        case(
            "schema1-body",
            "PUT",
            put,
            400,
            INVALID,
            headers=[("Content-Type", SCHEMA1)],
            body=b'{"schemaVersion":1,"name":"hostile/app","tag":"bad","fsLayers":[],"history":[],"signatures":[]}',
        ),
        case(
            "schema1-body-no-type",
            "PUT",
            put,
            400,
            INVALID,
            body=b'{"schemaVersion":1,"name":"hostile/app","tag":"bad","fsLayers":[],"history":[]}',
        ),
        case(
            "schema1-media-type-field",
            "PUT",
            put,
            400,
            INVALID,
            body=mutated(image_doc, _set("mediaType", "application/vnd.docker.distribution.manifest.v1+json")),
        ),
        case(
            "content-type-docker-body-oci",
            "PUT",
            put,
            400,
            INVALID,
            headers=[("Content-Type", DOCKER_MANIFEST)],
            body=image,
        ),
        case(
            "content-type-index-body-image", "PUT", put, 400, INVALID, headers=[("Content-Type", OCI_INDEX)], body=image
        ),
        case("content-type-image-body-index", "PUT", put, 400, INVALID, headers=ct, body=lambda s: s.index),
        case(
            "media-type-unknown",
            "PUT",
            put,
            400,
            INVALID,
            body=mutated(image_doc, _set("mediaType", "application/vnd.example+json")),
        ),
        case("media-type-empty-no-header", "PUT", put, 400, INVALID, body=mutated(image_doc, _set("mediaType", ""))),
        case("media-type-missing-no-header", "PUT", put, 400, INVALID, body=mutated(image_doc, _drop("mediaType"))),
        case(
            "docker-without-media-type",
            "PUT",
            put,
            400,
            INVALID,
            headers=[("Content-Type", DOCKER_MANIFEST)],
            body=mutated(image_doc, _drop("mediaType")),
        ),
        case(
            "artifact-type-in-docker",
            "PUT",
            put,
            400,
            INVALID,
            body=mutated(image_doc, lambda d: d.update(mediaType=DOCKER_MANIFEST, artifactType="x/y")),
        ),
        case(
            "subject-in-docker",
            "PUT",
            put,
            400,
            INVALID,
            body=lambda s: mutated(
                image_doc,
                lambda d: d.update(mediaType=DOCKER_MANIFEST, subject=descriptor(OCI_MANIFEST, s.image.manifest)),
            )(s),
        ),
        case(
            "subject-bad-digest",
            "PUT",
            put,
            400,
            INVALID,
            body=mutated(image_doc, _set("subject", {"mediaType": OCI_MANIFEST, "digest": "sha256:x", "size": 1})),
        ),
        case("config-digest-bad", "PUT", put, 400, INVALID, body=mutated(image_doc, _set("config.digest", "sha256:"))),
        case(
            "layer-digest-uppercase",
            "PUT",
            put,
            400,
            INVALID,
            body=lambda s: mutated(image_doc, _set("layers.0.digest", digest_of(s.layer).upper()))(s),
        ),
        case("unknown-layer", "PUT", put, 400, BLOB_UNKNOWN, body=reference_to("unknown-layer")),
        case("unknown-config", "PUT", put, 400, BLOB_UNKNOWN, body=reference_to("unknown-config")),
        case("other-repositorys-blob", "PUT", put, 400, BLOB_UNKNOWN, body=reference_to("other-repos-blob")),
        case("sha512-unknown-layer", "PUT", put, 400, BLOB_UNKNOWN, body=reference_to("sha512-unknown")),
        case("size-mismatch", "PUT", put, 400, INVALID, body=reference_to("size-mismatch")),
        case("config-size-zero", "PUT", put, 400, INVALID, body=reference_to("size-zero")),
        case(
            "duplicate-layer-different-sizes", "PUT", put, 400, INVALID, body=reference_to("duplicate-different-sizes")
        ),
        case(
            "duplicate-layer-wrong-size-first",
            "PUT",
            put,
            400,
            INVALID,
            body=reference_to("duplicate-wrong-size-first"),
        ),
        case(
            "duplicate-config-as-layer-other-size",
            "PUT",
            put,
            400,
            INVALID,
            body=reference_to("duplicate-config-as-layer-other-size"),
        ),
        case("index-unknown-child", "PUT", put, 400, BLOB_UNKNOWN, body=index_to("unknown-child")),
        case("index-blob-as-child", "PUT", put, 400, BLOB_UNKNOWN, body=index_to("blob-as-child")),
        case(
            "index-child-size-mismatch",
            "PUT",
            put,
            400,
            INVALID,
            body=index_to("child-size-mismatch"),
            also=[Expect(400, BLOB_UNKNOWN)],
        ),
        case(
            "index-duplicate-children-different-sizes",
            "PUT",
            put,
            400,
            INVALID,
            body=index_to("duplicate-children-different-sizes"),
        ),
        case(
            "digest-mismatch-in-url",
            "PUT",
            "/v2/<repo>/manifests/" + UNKNOWN,
            400,
            "DIGEST_INVALID",
            headers=ct,
            body=image,
        ),
        case(
            "digest-of-another-manifest-in-url",
            "PUT",
            "/v2/<repo>/manifests/<index>",
            400,
            "DIGEST_INVALID",
            headers=ct,
            body=image,
        ),
        case(
            "sha512-mismatch-in-url",
            "PUT",
            "/v2/<repo>/manifests/sha512:" + "0" * 128,
            400,
            "DIGEST_INVALID",
            headers=ct,
            body=image,
        ),
        case("tag-invalid-valid-body", "PUT", "/v2/<repo>/manifests/-bad", 400, "TAG_INVALID", headers=ct, body=image),
        case(
            "tag-129-chars-valid-body",
            "PUT",
            "/v2/<repo>/manifests/" + "a" * 129,
            400,
            "TAG_INVALID",
            headers=ct,
            body=image,
        ),
        case(
            "content-length-negative",
            "PUT",
            put,
            400,
            INVALID,
            headers=[*ct, ("Content-Length", "-1")],
            body=b"{}",
            also=[Expect(400, "SIZE_INVALID")],
        ),
        case(
            "content-length-letters",
            "PUT",
            put,
            400,
            INVALID,
            headers=[*ct, ("Content-Length", "abc")],
            body=b"{}",
            also=[Expect(400, "SIZE_INVALID")],
        ),
        case(
            "content-length-5000-digits",
            "PUT",
            put,
            413,
            INVALID,
            headers=[*ct, ("Content-Length", "9" * 5000)],
            body=b"{}",
            also=[Expect(400, "SIZE_INVALID"), Expect(400, INVALID)],
        ),
    ]
    for where in (
        "artifactType",
        "annotation-value",
        "annotation-key",
        "config-mediaType",
        "layer-annotation",
        "layer-url",
        "config-artifactType",
        "high-surrogate",
    ):
        cases.append(case(f"lone-surrogate-{where}", "PUT", put, 400, INVALID, body=_surrogate(where)))
    cases.append(
        case(
            "lone-surrogate-media-type",
            "PUT",
            put,
            400,
            INVALID,
            body=lambda s: s.image.manifest.replace(OCI_MANIFEST.encode(), b"\\udfff", 1),
        )
    )
    cases.append(
        case(
            "client-gone-halfway",
            "PUT",
            put,
            400,
            INVALID,
            headers=ct,
            body=image,
            cut=True,
            also=[Expect(400, "BLOB_UPLOAD_INVALID")],
        )
    )
    return cases


CASES = _type_cases() + _content_cases()


seeded = seeded_fixture()


@pytest.mark.parametrize("hostile", params(CASES))
async def test_hostile_manifest_is_refused_and_leaves_nothing(seeded: Seeded, hostile: Case) -> None:
    await check(seeded, hostile)
