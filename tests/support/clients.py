"""The command-line clients the end-to-end tests drive: the Docker CLI (and a busybox root filesystem to
build images from, with no network) and skopeo."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import uuid
from pathlib import Path

import pytest

BUSYBOX = Path("/bin/busybox")
BUSYBOX_APPLETS = ("sh", "ls", "cat", "echo", "sha256sum", "wc", "head", "stat", "test", "true", "du", "env")


class Docker:
    """The docker CLI, and every image and tag it created in this session (removed at the end)."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.created: list[str] = []
        self.env = dict(os.environ)
        if subprocess.run(["docker", "buildx", "version"], capture_output=True).returncode != 0:
            self.env["DOCKER_BUILDKIT"] = "0"  # no buildx plugin: the legacy builder

    def run(
        self, *args: str, check: bool = True, timeout: float = 300, input: str | None = None, config: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run `docker args...` (with client config folder `config`, for logins, if given); with `check`,
        fail the test showing its output when it fails."""
        env = self.env if config is None else {**self.env, "DOCKER_CONFIG": str(config)}
        result = subprocess.run(
            ["docker", *args], capture_output=True, text=True, env=env, timeout=timeout, check=False, input=input
        )
        if check and result.returncode != 0:
            pytest.fail(f"docker {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
        return result

    def track(self, reference: str) -> str:
        """Remember an image reference or ID to remove at the end of the session."""
        self.created.append(reference)
        return reference

    def image_id(self, reference: str) -> str:
        return self.run("image", "inspect", "-f", "{{.Id}}", reference).stdout.strip()

    def has_image(self, reference: str) -> bool:
        return self.run("image", "inspect", reference, check=False).returncode == 0

    def build(self, tag: str, base: str, files: dict[str, bytes], cmd: list[str] | None = None) -> str:
        """Build `tag` FROM `base` with one COPY layer holding `files` (path in the image -> bytes).

        Returns the image ID.
        """
        context = self.workdir / f"context-{uuid.uuid4().hex[:12]}"
        (context / "files").mkdir(parents=True)
        for path, data in files.items():
            target = context / "files" / path.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        lines = [f"FROM {base}", "COPY files/ /"]
        if cmd is not None:
            lines.append(f"CMD {json.dumps(cmd)}")
        (context / "Dockerfile").write_text("\n".join(lines) + "\n")
        self.track(tag)
        self.run("build", "--rm", "-q", "-t", tag, str(context), timeout=600)
        shutil.rmtree(context, ignore_errors=True)
        return self.track(self.image_id(tag))

    def build_large(self, tag: str, base: str, path: str, size: int, piece: int = 8 << 20) -> tuple[str, str]:
        """Build `tag` FROM `base` with one layer holding `size` random bytes at `path`, written in pieces.

        Returns the image ID and the sha256 of the file.
        """
        context = self.workdir / f"context-{uuid.uuid4().hex[:12]}"
        context.mkdir(parents=True)
        hasher = hashlib.sha256()
        with (context / "blob.bin").open("wb") as f:
            for offset in range(0, size, piece):
                data = os.urandom(min(piece, size - offset))
                hasher.update(data)
                f.write(data)
        (context / "Dockerfile").write_text(f"FROM {base}\nCOPY blob.bin {path}\n")
        self.track(tag)
        self.run("build", "--rm", "-q", "-t", tag, str(context), timeout=600)
        shutil.rmtree(context, ignore_errors=True)
        return self.track(self.image_id(tag)), hasher.hexdigest()

    def cleanup(self) -> None:
        """Best effort: remove every tag and image this session created, newest first."""
        for reference in reversed(self.created):
            self.run("rmi", "-f", reference, check=False)


def docker_available() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def rootfs_tar(directory: Path) -> Path:
    """A tarball of a root filesystem with a static busybox and its applets as symlinks."""
    rootfs = directory / "rootfs"
    for folder in ("bin", "etc", "tmp", "data"):
        (rootfs / folder).mkdir(parents=True, exist_ok=True)
    shutil.copy2(BUSYBOX, rootfs / "bin" / "busybox")
    for applet in BUSYBOX_APPLETS:
        (rootfs / "bin" / applet).symlink_to("busybox")
    tarball = directory / "rootfs.tar"
    with tarfile.open(tarball, "w") as tar:
        tar.add(rootfs, arcname=".")
    return tarball


class Skopeo:
    """The skopeo CLI, with a permissive signature policy of our own (no /etc/containers needed)."""

    def __init__(self, workdir: Path):
        self.policy = workdir / "policy.json"
        self.policy.write_text(json.dumps({"default": [{"type": "insecureAcceptAnything"}]}))

    def run(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """Run `skopeo --policy <ours> args...`; with `check`, fail the test showing its output on failure."""
        command = ["skopeo", "--policy", str(self.policy), *args]
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
        if check and result.returncode != 0:
            pytest.fail(f"skopeo {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
        return result
