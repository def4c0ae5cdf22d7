"""The grammar of names, tags and digests."""

from __future__ import annotations

import pytest

from registry.errors import DigestInvalid, NameInvalid, TagInvalid
from registry.names import is_digest, lookup_reference, parse_digest, parse_name, parse_tag

GOOD_HEX = "a" * 64


@pytest.mark.parametrize("name", ["a", "team/app", "a.b_c__d-e--f/g0", "x/" * 100 + "y", "a" * 255])
def test_valid_names_parse(name: str) -> None:
    assert parse_name(name) == name


@pytest.mark.parametrize(
    "name", ["", "A", "team/App", "../etc", "a//b", "/a", "a/", "-a", "a-", "a___b", "a..b", "a" * 256, "a b", "a:b"]
)
def test_invalid_names_raise_name_invalid(name: str) -> None:
    with pytest.raises(NameInvalid):
        parse_name(name)


@pytest.mark.parametrize("tag", ["latest", "1.0", "_x", "A-b.c_d", "x" * 128])
def test_valid_tags_parse(tag: str) -> None:
    assert parse_tag(tag) == tag


@pytest.mark.parametrize("tag", ["", ".x", "-x", "x" * 129, "a/b", "a:b", "a b"])
def test_invalid_tags_raise_tag_invalid(tag: str) -> None:
    with pytest.raises(TagInvalid):
        parse_tag(tag)


def test_sha256_and_sha512_digests_parse() -> None:
    assert str(parse_digest(f"sha256:{GOOD_HEX}")) == f"sha256:{GOOD_HEX}"
    assert parse_digest("sha512:" + "b" * 128).algorithm == "sha512"


@pytest.mark.parametrize(
    "value",
    [
        "sha256:" + "a" * 63,
        "sha256:" + "A" * 64,
        "sha256:" + "g" * 64,
        "md5:" + "a" * 32,
        "sha256",
        "sha256:",
        ":" + GOOD_HEX,
        "sha512:" + "a" * 64,
    ],
)
def test_malformed_or_unsupported_digests_raise_digest_invalid(value: str) -> None:
    with pytest.raises(DigestInvalid):
        parse_digest(value)


def test_references_with_a_colon_are_digests() -> None:
    assert is_digest(f"sha256:{GOOD_HEX}")
    assert not is_digest("latest")


def test_lookup_reference_gives_a_digest_a_tag_or_none() -> None:
    digest = "sha256:" + "a" * 64
    assert lookup_reference(digest) == parse_digest(digest)
    assert lookup_reference("v1.0") == "v1.0"
    for reference in ["-bad", "a" * 129, "sha384:" + "a" * 96, "sha256:" + "A" * 64, "x:", ":", "", "v1\n", "\u00e9"]:
        assert lookup_reference(reference) is None, reference
