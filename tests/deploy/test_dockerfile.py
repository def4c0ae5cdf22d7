"""deploy/Dockerfile, built on a local Debian base from a wheelhouse: a non-root image with a healthcheck and a
data volume, which turns healthy, takes `docker push` and `docker pull`, and keeps its data in the volume."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from tests.support.clients import Docker
from tests.support.deploy import BaseImages, answers, health, image_size, unique_name, wait_until
from tests.support.processes import free_port

pytestmark = pytest.mark.e2e

MB = 1_000_000


@pytest.fixture
def volume(docker: Docker) -> Iterator[str]:
    """A named volume for /var/lib/registry, removed after the test (with the containers using it)."""
    name = unique_name("registry-deploy-data")
    docker.run("volume", "create", name)
    yield name
    for container in docker.run("ps", "-aq", "--filter", f"volume={name}").stdout.split():
        docker.run("rm", "-f", "-v", container, check=False)
    docker.run("volume", "rm", "-f", name, check=False)


def start(docker: Docker, image: str, volume: str, port: int) -> str:
    """Run the image on the host's network on `port` with `volume` as its data; returns the container's name."""
    name = unique_name("registry-deploy")
    docker.run(
        "run", "-d", "--name", name, "--network", "host", "-v", f"{volume}:/var/lib/registry",
        "-e", "REGISTRY_HTTP_HOST=127.0.0.1", "-e", f"REGISTRY_HTTP_PORT={port}", image,
    )  # fmt: skip
    return name


def test_image_is_non_root_with_a_healthcheck_and_a_data_volume(
    docker: Docker, registry_image: str, base_images: BaseImages, measured: dict[str, str]
) -> None:
    config = json.loads(docker.run("image", "inspect", "-f", "{{json .Config}}", registry_image).stdout)
    assert config["User"] == "10001:10001"
    assert "/var/lib/registry" in config["Volumes"]
    assert "/healthz" in " ".join(config["Healthcheck"]["Test"])
    assert config["Entrypoint"] == ["registry"] and config["Cmd"] == ["serve"]
    size = image_size(docker, registry_image)
    base = image_size(docker, base_images.python)
    measured["registry image size, MB"] = f"{size / MB:.0f} (base {base / MB:.0f}, its own {(size - base) / MB:.0f})"
    assert size - base < 200 * MB  # the registry's own layers: its venv, no build tools


def test_container_turns_healthy_and_docker_pushes_and_pulls_through_it(
    docker: Docker, registry_image: str, base_image: str, volume: str, measured: dict[str, str]
) -> None:
    port = free_port()
    started = time.monotonic()
    container = start(docker, registry_image, volume, port)
    to_v2 = wait_until(lambda: answers(f"http://127.0.0.1:{port}/v2/"), 60, "answering /v2/")
    wait_until(lambda: health(docker, container) == "healthy", 60, "healthy", step=0.1)
    measured["docker run to /v2/ answering, s"] = f"{to_v2:.2f}"
    measured["docker run to healthy (HEALTHCHECK every 5 s), s"] = f"{time.monotonic() - started:.2f}"
    assert docker.run("exec", container, "id", "-u").stdout.strip() == "10001"

    reference = docker.track(f"127.0.0.1:{port}/deploy/busybox:1")
    docker.run("tag", base_image, reference)
    docker.run("push", reference)
    docker.run("rmi", reference)
    docker.run("pull", reference)
    assert docker.image_id(reference) == docker.image_id(base_image)

    # A new container on the same volume serves what the first one stored.
    docker.run("rm", "-f", container)
    start(docker, registry_image, volume, port)
    wait_until(lambda: answers(f"http://127.0.0.1:{port}/v2/"), 60, "answering /v2/ again")
    docker.run("rmi", reference)
    docker.run("pull", reference)
    assert docker.image_id(reference) == docker.image_id(base_image)
