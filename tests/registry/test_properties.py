"""Property-based tests of every parser of client input: names, tags, digests, numbers, Range and
Content-Range, manifests and token scopes. Whatever the input, the only exceptions are the registry's
own errors (which become clean 4xx answers); valid input parses to what was written."""

from __future__ import annotations

import contextlib
import json
import string
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from starlette.requests import Request

from registry.auth.access import Access, access, parse_scope, parse_scopes
from registry.errors import DigestInvalid, NameInvalid, RangeInvalid, RegistryError, TagInvalid
from registry.handlers.blobs import parse_range
from registry.handlers.uploads import _content_range
from registry.names import NAME_MAX_LENGTH, TAG_RE, parse_digest, parse_name, parse_tag
from registry.numbers import INT64_MAX, NumberInvalid, parse_number
from registry.oci import (
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    DOCKER_SCHEMA1,
    OCI_INDEX,
    OCI_MANIFEST,
    parse_manifest,
)

PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
STRUCTURED = settings(PROPERTY, max_examples=100)  # whole documents: fewer, each costs more to draw

# Any code point, lone surrogates included: what a percent-decoded path or a JSON escape can hold.
every_char = st.characters(codec=None, categories=None)
any_text = st.text(every_char, max_size=300)
# Text made mostly of the characters these grammars use, so that examples get near the edges.
grammar_chars = st.sampled_from(list(string.ascii_letters + string.digits + "._-/:+=@ \t\n\x00²٣é"))
near_text = st.text(grammar_chars, max_size=300)
text_inputs = st.one_of(any_text, near_text)


def registry_errors_only(parse, *args) -> Any:
    """`parse(*args)`, or None when it raised one of the registry's own errors."""
    try:
        return parse(*args)
    except RegistryError:
        return None


# -- names, tags, digests ----------------------------------------------------------------------------

_alnum = st.text(st.sampled_from(string.ascii_lowercase + string.digits), min_size=1, max_size=8)
_component = st.tuples(
    _alnum, st.lists(st.tuples(st.sampled_from([".", "_", "__", "-", "--"]), _alnum), max_size=3)
).map(lambda parts: parts[0] + "".join(sep + alnum for sep, alnum in parts[1]))
valid_names = st.lists(_component, min_size=1, max_size=6).map("/".join)
valid_tags = st.from_regex(TAG_RE, fullmatch=True)
valid_digests = st.one_of(
    st.binary(min_size=32, max_size=32).map(lambda b: "sha256:" + b.hex()),
    st.binary(min_size=64, max_size=64).map(lambda b: "sha512:" + b.hex()),
)


@PROPERTY
@given(text_inputs)
@example("a" * 256)
@example("a//b")
@example("a/")
@example("\udfff")
def test_parse_name_raises_only_name_invalid(text: str) -> None:
    with contextlib.suppress(NameInvalid):
        assert parse_name(text) == text


@PROPERTY
@given(valid_names)
@example("a" * NAME_MAX_LENGTH)
@example("a" * 126 + "/" + "b" * 128)
def test_valid_names_round_trip(name: str) -> None:
    assert parse_name(name) == name


@PROPERTY
@given(text_inputs)
@example("a" * 129)
@example("-v1")
@example("v1\n")
def test_parse_tag_raises_only_tag_invalid(text: str) -> None:
    with contextlib.suppress(TagInvalid):
        assert parse_tag(text) == text


@PROPERTY
@given(valid_tags)
def test_valid_tags_round_trip(tag: str) -> None:
    assert parse_tag(tag) == tag


@PROPERTY
@given(
    st.one_of(text_inputs, st.tuples(st.sampled_from(["sha256:", "sha512:", "SHA256:", ":"]), near_text).map("".join))
)
@example("sha256:")
@example("sha256:" + "A" * 64)
@example("sha256:" + "a" * 5000)
@example("md5:" + "a" * 32)
def test_parse_digest_raises_only_digest_invalid(text: str) -> None:
    try:
        digest = parse_digest(text)
    except DigestInvalid:
        return
    assert str(digest) == text


@PROPERTY
@given(valid_digests)
def test_valid_digests_round_trip(text: str) -> None:
    digest = parse_digest(text)
    assert str(digest) == text and digest.hasher().name == digest.algorithm


# -- numbers, Range, Content-Range -------------------------------------------------------------------

number_texts = st.one_of(
    text_inputs,
    st.text(st.sampled_from("0123456789"), min_size=1, max_size=6000),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
)


@PROPERTY
@given(number_texts)
@example("9" * 5000)
@example("\u00b2")
@example("0" * 5000 + "1")
def test_parse_number_gives_a_bounded_int_or_number_invalid(text: str) -> None:
    try:
        value = parse_number(text)
    except NumberInvalid:
        return
    assert 0 <= value <= INT64_MAX and value == int(text.lstrip("0") or "0")


@PROPERTY
@given(st.integers(min_value=0, max_value=INT64_MAX))
def test_numbers_round_trip(value: int) -> None:
    assert parse_number(str(value)) == value


range_headers = st.one_of(
    text_inputs,
    st.tuples(
        st.sampled_from(["bytes=", "bytes= ", "Bytes=", "items=", ""]),
        number_texts,
        st.sampled_from(["-", "--", ",", "-,"]),
        number_texts,
    ).map("".join),
)
sizes = st.one_of(st.integers(min_value=0, max_value=1 << 20), st.integers(min_value=0, max_value=INT64_MAX))


@PROPERTY
@given(st.one_of(st.none(), range_headers), sizes)
@example("bytes=" + "9" * 5000 + "-", 64)
@example("bytes=-0", 64)
@example("bytes=0-" + "9" * 5000, 64)
@example("bytes=0-0", 0)
def test_parse_range_gives_a_range_inside_the_blob_or_range_invalid(header: str | None, size: int) -> None:
    try:
        result = parse_range(header, size)
    except RangeInvalid:
        return
    if result is not None:
        start, end = result
        assert 0 <= start <= end < size


@PROPERTY
@given(st.integers(min_value=1, max_value=INT64_MAX), st.integers(min_value=0, max_value=INT64_MAX), st.data())
def test_satisfiable_ranges_round_trip(size: int, start: int, data) -> None:
    end = data.draw(st.integers(min_value=start, max_value=INT64_MAX))
    if start >= size:
        with pytest.raises(RangeInvalid):
            parse_range(f"bytes={start}-{end}", size)
    else:
        assert parse_range(f"bytes={start}-{end}", size) == (start, min(end, size - 1))
        assert parse_range(f"bytes={start}-", size) == (start, size - 1)


def content_range(value: str):
    """The parsed `Content-Range` of a request carrying `value` (as latin-1, as servers decode it)."""
    raw = value.encode("latin-1", "replace")
    request = Request({"type": "http", "method": "PATCH", "path": "/", "headers": [(b"content-range", raw)]})
    return _content_range(request)


content_ranges = st.one_of(
    st.text(st.characters(codec="latin-1"), max_size=300),
    st.tuples(st.sampled_from(["bytes ", "bytes=", "", "bytes */"]), number_texts, st.just("-"), number_texts).map(
        "".join
    ),
)


@PROPERTY
@given(content_ranges)
@example("0-" + "9" * 5000)
@example("9" * 5000 + "-" + "9" * 5000)
@example("5-0")
@example("\u00b2-\u00b3")
def test_content_range_gives_an_ordered_range_or_range_invalid(value: str) -> None:
    try:
        parsed = content_range(value)
    except RangeInvalid:
        return
    assert parsed is not None and 0 <= parsed.start <= parsed.end <= INT64_MAX


@PROPERTY
@given(st.integers(min_value=0, max_value=INT64_MAX), st.data())
def test_content_ranges_round_trip(start: int, data) -> None:
    end = data.draw(st.integers(min_value=start, max_value=INT64_MAX))
    parsed = content_range(f"{start}-{end}")
    assert (parsed.start, parsed.end) == (start, end)


# -- manifests ---------------------------------------------------------------------------------------

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(every_char, max_size=40),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5), st.dictionaries(st.text(every_char, max_size=15), inner, max_size=5)
    ),
    max_leaves=30,
)
content_types = st.one_of(
    st.none(),
    st.sampled_from(
        [
            OCI_MANIFEST,
            OCI_INDEX,
            DOCKER_MANIFEST,
            DOCKER_MANIFEST_LIST,
            *DOCKER_SCHEMA1,
            "application/json",
            OCI_MANIFEST + "; charset=utf-8",
            "",
        ]
    ),
    st.text(every_char, max_size=60),
)
plain_text = st.text(st.characters(codec="utf-8", categories=["L", "N", "P", "Zs"]), max_size=30)
descriptors = st.fixed_dictionaries(
    {
        "mediaType": st.sampled_from(["application/vnd.oci.image.layer.v1.tar+gzip", "application/octet-stream"]),
        "digest": valid_digests,
        "size": st.integers(min_value=0, max_value=INT64_MAX),
    },
    optional={
        "annotations": st.dictionaries(plain_text, plain_text, max_size=3),
        "urls": st.lists(plain_text, max_size=2),
        "artifactType": st.sampled_from(["application/vnd.example.sbom+json", "text/plain"]),
    },
)
valid_images = st.fixed_dictionaries(
    {
        "schemaVersion": st.just(2),
        "mediaType": st.sampled_from([OCI_MANIFEST, DOCKER_MANIFEST]),
        "config": descriptors,
        "layers": st.lists(descriptors, max_size=5, unique_by=lambda d: d["digest"]),
    },
    optional={"annotations": st.dictionaries(plain_text, plain_text, max_size=3)},
).filter(lambda d: d["config"]["digest"] not in {layer["digest"] for layer in d["layers"]})
valid_indexes = st.fixed_dictionaries(
    {
        "schemaVersion": st.just(2),
        "mediaType": st.sampled_from([OCI_INDEX, DOCKER_MANIFEST_LIST]),
        "manifests": st.lists(descriptors, max_size=5, unique_by=lambda d: d["digest"]),
    },
)


@st.composite
def near_valid_manifests(draw) -> dict:
    """A valid image or index with a few fields replaced by arbitrary JSON, removed, or added."""
    doc = draw(st.one_of(valid_images, valid_indexes))
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        target: Any = doc
        path = draw(st.sampled_from(["", "config", "layers.0", "manifests.0", "subject"]))
        for part in filter(None, path.split(".")):
            nxt = (
                target[int(part)]
                if isinstance(target, list) and len(target) > int(part)
                else (target.get(part) if isinstance(target, dict) else None)
            )
            if not isinstance(nxt, (dict, list)):
                break
            target = nxt
        if isinstance(target, dict):
            key = draw(
                st.one_of(
                    st.sampled_from(
                        [
                            "schemaVersion",
                            "mediaType",
                            "config",
                            "layers",
                            "manifests",
                            "digest",
                            "size",
                            "annotations",
                            "urls",
                            "artifactType",
                            "subject",
                        ]
                    ),
                    st.text(every_char, max_size=10),
                )
            )
            if draw(st.booleans()) and key in target:
                del target[key]
            else:
                target[key] = draw(json_values)
    return doc


def _parse_only_registry_errors(body: bytes, content_type: str | None) -> None:
    with contextlib.suppress(RegistryError):
        parse_manifest(body, content_type)


@PROPERTY
@given(st.binary(max_size=2000), content_types)
@example(b"\xef\xbb\xbf{}", None)
@example(b"[" * 50_000 + b"]" * 50_000, OCI_MANIFEST)
@example('{"schemaVersion":2}'.encode("utf-16"), OCI_MANIFEST)
@example(b'{"a":"\xed\xb3\xbf"}', OCI_MANIFEST)
def test_manifest_parser_takes_any_bytes(body: bytes, content_type: str | None) -> None:
    _parse_only_registry_errors(body, content_type)


@STRUCTURED
@given(json_values, content_types)
def test_manifest_parser_takes_any_json(doc: Any, content_type: str | None) -> None:
    _parse_only_registry_errors(json.dumps(doc).encode(), content_type)


@STRUCTURED
@given(near_valid_manifests(), content_types)
def test_manifest_parser_takes_any_near_valid_manifest(doc: dict, content_type: str | None) -> None:
    _parse_only_registry_errors(json.dumps(doc).encode(), content_type)


@PROPERTY
@given(st.integers(min_value=1, max_value=100_000), st.sampled_from(["[", '{"a":']))
def test_manifest_parser_takes_any_depth(depth: int, opener: str) -> None:
    closer = "]" if opener == "[" else "}"
    body = '{"schemaVersion":2,"mediaType":"' + OCI_MANIFEST + '","annotations":{"a":'
    body += opener * depth + ("1" if opener != "[" else "") + closer * depth + "}}"
    _parse_only_registry_errors(body.encode(), OCI_MANIFEST)


@STRUCTURED
@given(st.one_of(valid_images, valid_indexes))
def test_valid_manifests_round_trip(doc: dict) -> None:
    manifest = parse_manifest(json.dumps(doc).encode(), doc["mediaType"])
    assert manifest.media_type == doc["mediaType"]
    if "config" in doc:
        assert manifest.config is not None
        assert (manifest.config.digest, manifest.config.size) == (doc["config"]["digest"], doc["config"]["size"])
        assert [(d.digest, d.size) for d in manifest.layers] == [(d["digest"], d["size"]) for d in doc["layers"]]
    else:
        assert [(d.digest, d.size) for d in manifest.manifests] == [(d["digest"], d["size"]) for d in doc["manifests"]]
    assert manifest.annotations == (doc.get("annotations") or None) or manifest.annotations == doc.get("annotations")


# -- token scopes ------------------------------------------------------------------------------------

scope_texts = st.one_of(
    text_inputs,
    st.lists(
        st.sampled_from(
            ["repository", "registry", "catalog", ":", ",", "pull", "push", "*", "a/b", "x:5000", " ", "\x00", "Ä"]
        ),
        max_size=12,
    ).map("".join),
)


@PROPERTY
@given(scope_texts)
@example(":::")
@example("repository:a:b:c:pull")
@example("repository::pull")
def test_parse_scope_gives_an_access_or_nothing(text: str) -> None:
    try:
        parsed = parse_scope(text)
    except RegistryError:
        return
    assert parsed is None or (isinstance(parsed, Access) and parsed.type and parsed.name and ":" not in parsed.type)


@PROPERTY
@given(st.lists(scope_texts, max_size=10))
def test_parse_scopes_raises_only_registry_errors(values: list[str]) -> None:
    try:
        parsed = parse_scopes(values)
    except RegistryError:
        return
    assert all(isinstance(a, Access) for a in parsed)


@PROPERTY
@given(valid_names, st.lists(st.sampled_from(["pull", "push", "delete", "*"]), min_size=1, max_size=4))
def test_valid_scopes_round_trip(name: str, actions: list[str]) -> None:
    wanted = access("repository", name, actions)
    assert parse_scope(str(wanted)) == wanted
    assert parse_scopes([f"{wanted} registry:catalog:*"]) == [wanted, access("registry", "catalog", ["*"])]
