"""OCI image layouts made from scratch, as sources for skopeo."""

from __future__ import annotations

import gzip
import io
import json
import os
import tarfile
from pathlib import Path

from tests.support.content import OCI_CONFIG, OCI_LAYER, OCI_MANIFEST, digest_of


def _write_blob(layout: Path, data: bytes) -> dict[str, object]:
    digest = digest_of(data)
    path = layout / "blobs" / "sha256" / digest.removeprefix("sha256:")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return {"digest": digest, "size": len(data)}


def build_oci_layout(layout: Path, tag: str) -> None:
    """An OCI image layout holding one linux/amd64 image of one gzip layer with a random file."""
    payload = os.urandom(128 << 10)
    tar_bytes = io.BytesIO()
    with tarfile.open(fileobj=tar_bytes, mode="w") as tar:
        info = tarfile.TarInfo("data/payload.bin")
        info.size, info.mode = len(payload), 0o644
        tar.addfile(info, io.BytesIO(payload))
    layer = gzip.compress(tar_bytes.getvalue(), mtime=0)
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": [digest_of(tar_bytes.getvalue())]},
    }
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, **_write_blob(layout, json.dumps(config).encode())},
        "layers": [{"mediaType": OCI_LAYER, **_write_blob(layout, layer)}],
    }
    descriptor = {
        "mediaType": OCI_MANIFEST,
        **_write_blob(layout, json.dumps(manifest).encode()),
        "annotations": {"org.opencontainers.image.ref.name": tag},
    }
    (layout / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [descriptor]}))
