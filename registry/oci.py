"""Manifests and indexes: media types, parsing and validation, and the descriptors they refer to."""

from __future__ import annotations

import json
from dataclasses import dataclass
from itertools import chain
from typing import Any

from registry.errors import DigestInvalid, ManifestInvalid
from registry.names import parse_digest
from registry.numbers import INT64_MAX
from storage.metadata import ManifestRecord

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_SCHEMA1 = (
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
)

# Real manifests nest four or five levels deep; anything past this is refused before it can cost
# recursion anywhere (json, the metadata store, a client).
MAX_DEPTH = 64

IMAGE_TYPES = frozenset({DOCKER_MANIFEST, OCI_MANIFEST})
# The configs of runnable images: a manifest whose config is one of these is an image, not an artifact.
IMAGE_CONFIG_TYPES = frozenset(
    {"application/vnd.docker.container.image.v1+json", "application/vnd.oci.image.config.v1+json"}
)
INDEX_TYPES = frozenset({DOCKER_MANIFEST_LIST, OCI_INDEX})
MANIFEST_TYPES = IMAGE_TYPES | INDEX_TYPES

# Layers that live elsewhere (their `urls`): a registry does not require their bytes.
FOREIGN_LAYER_TYPES = frozenset(
    {
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
        "application/vnd.oci.image.layer.nondistributable.v1.tar",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    }
)


@dataclass(frozen=True, slots=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    artifact_type: str | None = None
    annotations: dict[str, str] | None = None
    urls: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Manifest:
    """A validated manifest or index."""

    media_type: str
    config: Descriptor | None
    layers: tuple[Descriptor, ...]
    manifests: tuple[Descriptor, ...]  # children of an index
    subject: Descriptor | None
    artifact_type: str | None  # as the referrers API reports it
    annotations: dict[str, str] | None

    @property
    def required_blobs(self) -> dict[str, int]:
        """Blob digest -> size of every blob the repository must hold for this manifest."""
        blobs = [self.config] if self.config else []
        blobs += [layer for layer in self.layers if not (layer.urls and layer.media_type in FOREIGN_LAYER_TYPES)]
        return {d.digest: d.size for d in blobs}


def manifest_record(digest: str, size: int, manifest: Manifest) -> ManifestRecord:
    """What the metadata keeps of `manifest`, whose bytes (`size` of them) have `digest`."""
    annotations = json.dumps(manifest.annotations, sort_keys=True) if manifest.annotations else None
    subject = manifest.subject.digest if manifest.subject else None
    return ManifestRecord(digest, manifest.media_type, size, manifest.artifact_type, subject, annotations)


DESCRIPTION = "org.opencontainers.image.description"  # the annotation, or image label, `docker search` shows
DESCRIPTION_MAX = 300  # characters of a description kept
CONFIG_READ_MAX = 1 << 20  # an image config larger than this is not read for its labels


def annotated_description(manifest: Manifest) -> str | None:
    """The description an image's manifest (or an index) carries as an annotation, if any."""
    found = (manifest.annotations or {}).get(DESCRIPTION)
    return found[:DESCRIPTION_MAX] if found else None


def labelled_description(config: bytes) -> str | None:
    """The description label of an image config (`config.Labels`), if it has one; None for anything
    that is not such a config."""
    try:
        doc = json.loads(config)
    except ValueError:
        return None
    labels = (
        doc.get("config", {}).get("Labels") if isinstance(doc, dict) and isinstance(doc.get("config"), dict) else None
    )
    found = labels.get(DESCRIPTION) if isinstance(labels, dict) else None
    return found[:DESCRIPTION_MAX] if isinstance(found, str) and found else None


def is_type_name(value: str) -> bool:
    """Whether `value` can be a media or artifact type: non-empty printable text (no control, format
    or separator characters other than space; a NUL, for one, PostgreSQL cannot store)."""
    return value != "" and value.isprintable()


def _invalid(detail: str) -> ManifestInvalid:
    return ManifestInvalid({"reason": detail})


def _descriptor(value: Any, where: str) -> Descriptor:
    if not isinstance(value, dict):
        raise _invalid(f"{where} is not an object")
    media_type, digest, size = value.get("mediaType"), value.get("digest"), value.get("size")
    if not isinstance(media_type, str) or not media_type:
        raise _invalid(f"{where}.mediaType is missing")
    if not is_type_name(media_type):
        raise _invalid(f"{where}.mediaType holds characters that are not printable")
    if not isinstance(digest, str):
        raise _invalid(f"{where}.digest is missing")
    try:
        parse_digest(digest)
    except DigestInvalid:
        raise _invalid(f"{where}.digest {digest[:150]!r} is invalid") from None
    if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= INT64_MAX:
        raise _invalid(f"{where}.size must be an integer from 0 to 2**63-1")
    artifact_type = value.get("artifactType")
    if artifact_type is not None and not (isinstance(artifact_type, str) and is_type_name(artifact_type)):
        raise _invalid(f"{where}.artifactType must be a string of printable characters")
    urls = value.get("urls")
    urls = [] if urls is None else urls  # Go writes a nil slice as null
    if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
        raise _invalid(f"{where}.urls must be a list of strings")
    return Descriptor(media_type, digest, size, artifact_type, _annotations(value, where), tuple(urls))


def _annotations(value: dict[str, Any], where: str) -> dict[str, str] | None:
    annotations = value.get("annotations")
    if annotations is None:
        return None
    if not isinstance(annotations, dict) or not all(isinstance(v, str) for v in annotations.values()):
        raise _invalid(f"{where}.annotations must map strings to strings")
    return annotations


def _descriptors(doc: dict[str, Any], field: str) -> tuple[Descriptor, ...]:
    values = doc.get(field)
    if not isinstance(values, list):
        raise _invalid(f"{field} must be a list")
    return tuple(_descriptor(v, f"{field}[{i}]") for i, v in enumerate(values))


def _media_type(doc: dict[str, Any], content_type: str | None) -> str:
    declared = doc.get("mediaType")
    if declared is not None and not isinstance(declared, str):
        raise _invalid("mediaType must be a string")
    header = content_type.split(";", 1)[0].strip() if content_type else None
    if header in DOCKER_SCHEMA1 or declared in DOCKER_SCHEMA1:
        raise _invalid("Docker schema 1 manifests are not supported; push schema 2 or OCI")
    if header not in MANIFEST_TYPES:
        header = None  # a generic type such as application/json: the body decides
    if declared and header and declared != header:
        raise _invalid(f"mediaType {declared[:100]!r} does not match Content-Type {header[:100]!r}")
    media_type = declared or header
    if media_type is None:
        raise _invalid("no mediaType in the manifest and no manifest Content-Type")
    if media_type not in MANIFEST_TYPES:
        raise _invalid(f"unsupported manifest media type {media_type[:100]!r}")
    if media_type in (DOCKER_MANIFEST, DOCKER_MANIFEST_LIST) and not declared:
        raise _invalid("Docker manifests must declare their mediaType")
    return media_type


def _load(body: bytes) -> Any:
    """The JSON document in `body`, which must be UTF-8 without a byte order mark (what Docker and Go
    clients read), at most MAX_DEPTH levels deep, with no lone surrogate escape in any string."""
    if body.startswith(b"\xef\xbb\xbf"):
        raise _invalid("a manifest must be UTF-8 without a byte order mark")
    if b"\x00" in body:  # JSON never holds a raw NUL; UTF-16 and UTF-32 hold one in every ASCII character
        raise _invalid("a manifest must be UTF-8, not UTF-16 or UTF-32")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _invalid(f"a manifest must be UTF-8: {e}") from None
    try:
        doc = json.loads(text)
    except RecursionError:
        raise _invalid(f"the document is nested more than {MAX_DEPTH} levels deep") from None
    except ValueError as e:
        raise _invalid(f"not valid JSON: {e}") from None
    _check_depth(doc)
    if "\\u" in text:  # a lone surrogate can only come from an escape: the text itself is valid UTF-8
        _check_surrogates(doc)
    return doc


def _check_depth(doc: Any) -> None:
    """Refuse a document nested deeper than MAX_DEPTH, one level at a time (no recursion, and the
    containers of each level gathered by C code, so a 4 MiB document of small arrays stays cheap)."""
    level = [doc]
    for _ in range(MAX_DEPTH):
        lists = [c for c in level if type(c) is list]
        values = list(chain.from_iterable(lists)) + list(chain.from_iterable(map(dict.values, _dicts(level))))
        level = [v for v in values if type(v) is list or type(v) is dict]
        if not level:
            return
    raise _invalid(f"the document is nested more than {MAX_DEPTH} levels deep")


def _dicts(level: list[Any]) -> list[dict[Any, Any]]:
    return [c for c in level if type(c) is dict]


def _check_surrogates(doc: Any) -> None:
    """Refuse a document holding a lone surrogate (from an escape such as `\\udfff`) in any key or
    string: no UTF-8 encoder, and so no metadata store or client, accepts one. Re-encoding finds it in C."""
    try:
        json.dumps(doc, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as e:
        around = e.object[max(e.start - 20, 0) : e.start + 20]
        raise _invalid(f"a string holds a lone surrogate escape: {around!r}") from None


def _check_sizes(descriptors: tuple[Descriptor, ...]) -> None:
    """One digest listed more than once must give the same size each time."""
    sizes: dict[str, int] = {}
    for d in descriptors:
        if sizes.setdefault(d.digest, d.size) != d.size:
            raise _invalid(f"{d.digest} is listed with sizes {sizes[d.digest]} and {d.size}")


def parse_manifest(body: bytes, content_type: str | None) -> Manifest:
    """Validate `body` as a manifest or index sent with `content_type`; raises ManifestInvalid.

    The body must be UTF-8 JSON without a BOM, nested at most MAX_DEPTH levels, and free of lone
    surrogates; a digest listed twice must have one size.
    """
    doc = _load(body)
    if not isinstance(doc, dict):
        raise _invalid("a manifest must be a JSON object")
    if type(doc.get("schemaVersion")) is not int or doc["schemaVersion"] != 2:  # not 2.0, not true
        raise _invalid("schemaVersion must be 2")
    media_type = _media_type(doc, content_type)
    artifact_type = doc.get("artifactType")
    if artifact_type is not None and (
        not isinstance(artifact_type, str)
        or not is_type_name(artifact_type)
        or media_type not in (OCI_MANIFEST, OCI_INDEX)
    ):
        raise _invalid("artifactType must be a string of printable characters, and only in OCI manifests and indexes")
    subject = None
    if doc.get("subject") is not None:
        if media_type not in (OCI_MANIFEST, OCI_INDEX):
            raise _invalid("subject is only allowed in OCI manifests and indexes")
        subject = _descriptor(doc["subject"], "subject")
    annotations = _annotations(doc, "manifest")
    if media_type in IMAGE_TYPES:
        if "config" not in doc:
            raise _invalid("config is missing")
        config = _descriptor(doc["config"], "config")
        layers = _descriptors(doc, "layers")
        _check_sizes((config, *layers))
        return Manifest(media_type, config, layers, (), subject, artifact_type or config.media_type, annotations)
    children = _descriptors(doc, "manifests")
    _check_sizes(children)
    return Manifest(media_type, None, (), children, subject, artifact_type, annotations)
