"""Content for a registry under test: digests, media types, small images, and pushing them the way clients do."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass

import httpx

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def descriptor(media_type: str, data: bytes, **extra) -> dict:
    return {"mediaType": media_type, "digest": digest_of(data), "size": len(data), **extra}


async def push_blob(client: httpx.AsyncClient, repository: str, data: bytes) -> str:
    """Monolithic upload (POST ?digest=); returns the digest."""
    digest = digest_of(data)
    r = await client.post(f"/v2/{repository}/blobs/uploads/", params={"digest": digest}, content=data)
    assert r.status_code == 201, r.text
    return digest


@dataclass
class Image:
    config: bytes
    layers: list[bytes]
    manifest: bytes
    media_type: str

    @property
    def digest(self) -> str:
        return digest_of(self.manifest)


def make_image(media_type: str = OCI_MANIFEST, layers: int = 1, shared: list[bytes] | None = None, **fields) -> Image:
    """A small image with `shared` layers then `layers` random ones; `fields` are added to the manifest
    (subject, artifactType...)."""
    config = json.dumps({"architecture": "amd64", "os": "linux", "nonce": os.urandom(8).hex()}).encode()
    blobs = [*(shared or []), *(os.urandom(64) for _ in range(layers))]
    docker = media_type == DOCKER_MANIFEST
    doc = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": descriptor("application/vnd.docker.container.image.v1+json" if docker else OCI_CONFIG, config),
        "layers": [
            descriptor("application/vnd.docker.image.rootfs.diff.tar.gzip" if docker else OCI_LAYER, b) for b in blobs
        ],
        **fields,
    }
    return Image(config, blobs, json.dumps(doc, indent=2).encode(), media_type)


async def push_image(client: httpx.AsyncClient, repository: str, image: Image, reference: str | None = None) -> str:
    """Push an image's blobs and manifest (under `reference`, default its digest); returns the digest."""
    for blob in [image.config, *image.layers]:
        await push_blob(client, repository, blob)
    r = await client.put(
        f"/v2/{repository}/manifests/{reference or image.digest}",
        content=image.manifest,
        headers={"Content-Type": image.media_type},
    )
    assert r.status_code == 201, r.text
    return image.digest


def index_of(*images: Image, media_type: str = OCI_INDEX, **fields) -> bytes:
    doc = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "manifests": [
            descriptor(i.media_type, i.manifest, platform={"architecture": "amd64", "os": "linux"}) for i in images
        ],
        **fields,
    }
    return json.dumps(doc).encode()


def error_codes(response: httpx.Response) -> list[str]:
    return [e["code"] for e in response.json()["errors"]]


async def push_referrer(client: httpx.AsyncClient, repository: str, subject: bytes, artifact_type: str) -> str:
    """Push an artifact of `artifact_type` whose subject is the manifest `subject`; returns its digest."""
    empty = b"{}"
    await push_blob(client, repository, empty)
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": descriptor("application/vnd.oci.empty.v1+json", empty),
        "layers": [descriptor("application/vnd.oci.empty.v1+json", empty)],
        "subject": descriptor(OCI_MANIFEST, subject),
        "annotations": {"org.example.kind": artifact_type.rsplit(".", 1)[-1]},
    }
    body = json.dumps(doc).encode()
    r = await client.put(
        f"/v2/{repository}/manifests/{digest_of(body)}", content=body, headers={"Content-Type": OCI_MANIFEST}
    )
    assert r.status_code == 201, r.text
    return digest_of(body)
