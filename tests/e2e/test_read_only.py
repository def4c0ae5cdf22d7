"""`registry serve --read-only` with the real Docker engine: pulls of what was pushed before work, a push
fails with the registry's own words, and nothing stored changes."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from tests.support.clients import Docker
from tests.support.server import RegistryServer

pytestmark = pytest.mark.e2e


def stored_files(root: Path) -> dict[str, int]:
    return {
        os.path.relpath(os.path.join(d, f), root): os.path.getsize(os.path.join(d, f))
        for d, _, files in os.walk(root)
        for f in files
    }


def test_docker_pulls_from_a_read_only_registry_and_cannot_push(
    docker: Docker, base_image: str, tmp_path: Path
) -> None:
    writable = RegistryServer(tmp_path / "data", tmp_path / "registry.log")
    writable.start()
    tag = f"{writable.host}/team/frozen:{uuid.uuid4().hex[:12]}"
    image_id = docker.build(tag, base_image, {"kept.txt": b"pushed before the freeze\n"})
    docker.run("push", tag)
    writable.stop()
    before = stored_files(writable.storage_dir)

    frozen = RegistryServer(tmp_path / "data", tmp_path / "registry.log", port=writable.port, flags=["--read-only"])
    frozen.start()
    try:
        docker.run("rmi", tag)
        docker.run("pull", tag)
        assert docker.image_id(tag) == image_id
        newer = f"{frozen.host}/team/frozen:newer"
        docker.build(newer, tag, {"new.txt": b"pushed during the freeze\n"})
        pushed = docker.run("push", newer, check=False)
        assert pushed.returncode != 0
        assert "the registry is read-only for maintenance" in pushed.stderr, pushed.stderr
        assert "read-only mode" in frozen.log_text(), "the start-up says so"
    finally:
        frozen.stop()
    assert stored_files(frozen.storage_dir) == before
