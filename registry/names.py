"""The grammar of repository names, tags and digests (OCI Distribution Spec), and their parsers."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from registry.errors import DigestInvalid, NameInvalid, TagInvalid

NAME_MAX_LENGTH = 255
_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
NAME_RE = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
TAG_RE = re.compile(r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}")
DIGEST_RE = re.compile(r"[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+")

# Algorithms we can verify, and the exact form of their encoded part.
_ENCODED = {"sha256": re.compile(r"[a-f0-9]{64}"), "sha512": re.compile(r"[a-f0-9]{128}")}


@dataclass(frozen=True, slots=True)
class Digest:
    """A verified-form content digest such as `sha256:<64 hex>`."""

    algorithm: str
    encoded: str

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.encoded}"

    def hasher(self) -> hashlib._Hash:
        """A fresh hash object of this digest's algorithm."""
        return hashlib.new(self.algorithm)


def parse_name(name: str) -> str:
    """Return `name` if it is a valid repository name, else raise NameInvalid."""
    if len(name) > NAME_MAX_LENGTH or not NAME_RE.fullmatch(name):
        raise NameInvalid({"name": name[:300]})
    return name


def parse_digest(value: str) -> Digest:
    """Parse a digest of a supported algorithm, else raise DigestInvalid."""
    if not DIGEST_RE.fullmatch(value):
        raise DigestInvalid({"digest": value[:300]}, message="invalid digest")
    algorithm, _, encoded = value.partition(":")
    pattern = _ENCODED.get(algorithm)
    if pattern is None:
        raise DigestInvalid({"digest": value[:300]}, message=f"unsupported digest algorithm {algorithm!r}")
    if not pattern.fullmatch(encoded):
        raise DigestInvalid({"digest": value[:300]}, message="invalid digest")
    return Digest(algorithm, encoded)


def is_digest(reference: str) -> bool:
    """True when a manifest reference is written as a digest rather than a tag."""
    return ":" in reference


def lookup_reference(reference: str) -> Digest | str | None:
    """What a manifest reference to read or delete names: a Digest, a tag, or None when it is neither
    a valid tag nor a digest of a supported algorithm, so that no manifest can be stored under it."""
    if is_digest(reference):
        try:
            return parse_digest(reference)
        except DigestInvalid:
            return None
    return reference if TAG_RE.fullmatch(reference) else None


def parse_tag(value: str) -> str:
    """Return `value` if it is a valid tag, else raise TagInvalid."""
    if not TAG_RE.fullmatch(value):
        raise TagInvalid({"tag": value[:300]}, message="invalid tag")
    return value


def sha256_digest(data: bytes) -> Digest:
    """The sha256 digest of `data`."""
    return Digest("sha256", hashlib.sha256(data).hexdigest())
