"""An image as `docker inspect` and `docker history` show it, from its manifest and config, without a pull."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from registry.browsing import ImageParts
from registry.oci import INDEX_TYPES


@dataclass(frozen=True, slots=True)
class HistoryLine:
    """One line of `docker history`: what created the layer, when, and its size (0 for an empty layer)."""

    created: str
    created_by: str
    size: int
    comment: str
    empty: bool


@dataclass(frozen=True, slots=True)
class Child:
    """A manifest an index lists, with its platform."""

    digest: str
    media_type: str
    size: int
    platform: str


@dataclass(frozen=True, slots=True)
class Referrer:
    """A manifest whose subject is this one (a signature, an SBOM, an attestation)."""

    digest: str
    artifact_type: str
    media_type: str
    size: int
    annotations: dict[str, str]


@dataclass
class ImageView:
    """What the image page shows; `config` holds `docker inspect`'s Config fields that are set."""

    is_index: bool
    raw: str
    os_arch: str = ""
    created: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    history: list[HistoryLine] = field(default_factory=list)
    layers: list[tuple[str, str, int]] = field(default_factory=list)  # (digest, media type, size)
    children: list[Child] = field(default_factory=list)
    referrers: list[Referrer] = field(default_factory=list)
    total_size: int = 0


CONFIG_FIELDS = ("Entrypoint", "Cmd", "Env", "ExposedPorts", "WorkingDir", "User", "StopSignal", "Volumes")


def _platform(entry: Any) -> str:
    platform = entry.get("platform") if isinstance(entry, dict) else None
    if not isinstance(platform, dict):
        return "unknown"
    parts = [platform.get("os"), platform.get("architecture"), platform.get("variant")]
    return "/".join(str(p) for p in parts if p) or "unknown"


def _history(config: dict[str, Any], layer_sizes: list[int]) -> list[HistoryLine]:
    """`docker history`'s lines, oldest first: an empty_layer entry has size 0, the others take the
    layers' sizes in order (as the engine pairs them)."""
    sizes = iter(layer_sizes)
    lines = []
    for entry in config.get("history") or []:
        if not isinstance(entry, dict):
            continue
        empty = bool(entry.get("empty_layer"))
        lines.append(
            HistoryLine(
                str(entry.get("created", "")),
                str(entry.get("created_by", "")),
                0 if empty else next(sizes, 0),
                str(entry.get("comment", "")),
                empty,
            )
        )
    return lines


def image_view(parts: ImageParts) -> ImageView:
    """The view of `parts` (see ImageView)."""
    manifest, document = parts.manifest, json.loads(parts.data)
    view = ImageView(parts.record.media_type in INDEX_TYPES, json.dumps(document, indent=2))
    view.referrers = [
        Referrer(
            r.digest,
            r.artifact_type or r.media_type,
            r.media_type,
            r.size,
            json.loads(r.annotations) if r.annotations else {},
        )
        for r in parts.referrers
    ]
    if view.is_index:
        view.children = [
            Child(d.digest, d.media_type, d.size, _platform(entry))
            for d, entry in zip(manifest.manifests, document.get("manifests", []), strict=False)
        ]
        return view
    view.layers = [(layer.digest, layer.media_type, layer.size) for layer in manifest.layers]
    view.total_size = sum(size for _, _, size in view.layers) + (manifest.config.size if manifest.config else 0)
    try:
        config = json.loads(parts.config) if parts.config is not None else {}
    except ValueError:
        config = {}
    if not isinstance(config, dict):
        return view
    found = config.get("config")
    inner: dict[str, Any] = found if isinstance(found, dict) else {}
    view.os_arch = "/".join(str(config[k]) for k in ("os", "architecture", "variant") if config.get(k))
    view.created = str(config.get("created", ""))
    view.config = {k: inner[k] for k in CONFIG_FIELDS if inner.get(k)}
    labels = inner.get("Labels")
    view.labels = {str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {}
    view.history = _history(config, [size for _, _, size in view.layers])
    return view
