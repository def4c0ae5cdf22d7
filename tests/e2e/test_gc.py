"""Garbage collection online, with the real Docker engine: a deleted image's unique layers leave the
disk while the registry serves, and the image that shares its base still pulls."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.support.clients import Docker
from tests.support.server import RegistryServer, registry_command

pytestmark = pytest.mark.e2e

UNIQUE_BYTES = 8 << 20


def disk_usage(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def run_gc(server: RegistryServer, *flags: str) -> str:
    result = subprocess.run(
        [*registry_command(), "gc", "--full", "--data-dir", str(server.data_dir), *flags],
        capture_output=True,
        text=True,
        env={**os.environ, "REGISTRY_GC_GRACE": "0"},
        check=True,
    )
    return result.stdout


def test_gc_frees_a_deleted_images_unique_layers_while_serving(
    docker: Docker, base_image: str, registry_server: RegistryServer
) -> None:
    keep = f"{registry_server.host}/team/app:keep"
    drop = f"{registry_server.host}/team/app:drop"
    docker.build(keep, base_image, {"/data/keep.bin": os.urandom(UNIQUE_BYTES)})
    docker.build(drop, base_image, {"/data/drop.bin": os.urandom(UNIQUE_BYTES)})
    docker.run("push", keep)
    docker.run("push", drop)
    blobs = registry_server.storage_dir / "blobs"
    before = disk_usage(blobs)

    with httpx.Client(base_url=registry_server.url) as http:
        assert http.delete("/v2/team/app/manifests/drop").status_code == 202  # the tag only

    assert "removed 0 manifests, 0 blobs" in run_gc(registry_server)  # untagged manifests stay by default
    assert "would remove 1 manifests, 3 blobs" in run_gc(registry_server, "--dry-run", "--delete-untagged")
    assert disk_usage(blobs) == before
    assert "removed 1 manifests, 3 blobs" in run_gc(registry_server, "--delete-untagged")
    freed = before - disk_usage(blobs)
    # the unique layer (random bytes barely compress), its config and its manifest
    assert UNIQUE_BYTES < freed < UNIQUE_BYTES + (1 << 20), freed

    docker.run("rmi", keep, drop)
    docker.run("pull", keep)
    assert docker.run("pull", drop, check=False).returncode != 0
