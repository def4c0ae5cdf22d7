"""deploy/compose.yaml end to end with docker-compose: three replicas behind nginx on SeaweedFS and PostgreSQL
take `docker push` and `docker pull` through the proxy, and go on doing so with one replica stopped.

The stack runs as shipped, but for tests/deploy/compose.host.yaml: host networking on free ports (so the proxy
publishes no port), and local images in place of Docker Hub's (containers here have no network of their own)."""

from __future__ import annotations

import string
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.support.clients import Docker
from tests.support.deploy import DEPLOY, REPO_ROOT, Compose, answers, wait_until
from tests.support.processes import free_ports, http_status
from tests.support.services import SeaweedS3

pytestmark = pytest.mark.e2e

HERE = REPO_ROOT / "tests" / "deploy"
REPLICAS = ("registry1", "registry2", "registry3")


@pytest.fixture
def stack(
    docker: Docker, registry_image: str, services_image: str, tmp_path: Path, measured: dict[str, str]
) -> Iterator[tuple[Compose, int]]:
    """The compose stack, up and answering /v2/ through the proxy; yields it and the proxy's port."""
    ports = dict(zip([*REPLICAS, "proxy", "postgres"], free_ports(5), strict=True))
    nginx_conf = tmp_path / "nginx.conf"
    template = string.Template((HERE / "nginx.host.conf").read_text())
    nginx_conf.write_text(template.substitute({k: str(v) for k, v in ports.items()}))
    seaweed = SeaweedS3(base_dir=tmp_path / "seaweed")  # its free ports and `weed mini` command, run in a container
    seaweed.data_dir.mkdir(parents=True)
    seaweed.write_s3_config()
    env = {
        "REGISTRY_IMAGE": registry_image,
        "SERVICES_IMAGE": services_image,
        "NGINX_CONF": str(nginx_conf),
        "POSTGRES_PORT": str(ports["postgres"]),
        "SEAWEED_DIR": str(seaweed.base_dir),
        "WEED_COMMAND": " ".join(["weed", *seaweed.command()[1:]]),
        "S3_ENDPOINT": seaweed.endpoint,
        "S3_ACCESS_KEY": seaweed.access_key,
        "S3_SECRET_KEY": seaweed.secret_key,
        **{f"{name.upper()}_PORT": str(ports[name]) for name in REPLICAS},
    }
    # The files merged as docker-compose reads them, but for the proxy's published port: a container on the
    # host's network publishes nothing (docker refuses both at once); nginx listens on the host itself.
    merged = yaml.safe_load(Compose([DEPLOY / "compose.yaml", HERE / "compose.host.yaml"], env).run("config"))
    assert merged["services"]["proxy"].pop("ports")
    (tmp_path / "compose.yaml").write_text(yaml.safe_dump(merged))
    compose = Compose([tmp_path / "compose.yaml"], env)
    try:
        started = time.monotonic()
        compose.run("up", "--detach", "--no-build")
        wait_until(lambda: http_status(f"{seaweed.endpoint}/") is not None, 60, "SeaweedFS answering")
        wait_until(lambda: answers(f"http://127.0.0.1:{ports['proxy']}/v2/"), 60, "the proxy answering /v2/")
        measured["compose up to /v2/ through nginx (replicas healthy first), s"] = f"{time.monotonic() - started:.1f}"
        yield compose, ports["proxy"]
    finally:
        compose.down()


def push_and_pull(docker: Docker, source: str, reference: str) -> None:
    """Push `source` as `reference`, remove it locally, pull it back: the same image."""
    docker.track(reference)
    docker.run("tag", source, reference)
    docker.run("push", reference)
    docker.run("rmi", reference)
    docker.run("pull", reference)
    assert docker.image_id(reference) == docker.image_id(source)


def test_pushes_and_pulls_through_the_proxy_go_on_with_a_replica_stopped(
    docker: Docker, stack: tuple[Compose, int], base_image: str
) -> None:
    compose, port = stack
    push_and_pull(docker, base_image, f"127.0.0.1:{port}/team/app:1")
    for replica in REPLICAS:  # round robin: every replica served part of it
        assert "/v2/team/app/" in docker.run("logs", compose.container(replica)).stderr, replica

    compose.run("stop", "registry2")
    other = docker.build(f"127.0.0.1:{port}/team/other:1", base_image, {"/data/payload.txt": b"second image\n"})
    docker.run("push", f"127.0.0.1:{port}/team/other:1")
    for reference in (f"127.0.0.1:{port}/team/app:1", f"127.0.0.1:{port}/team/other:1"):
        docker.run("rmi", reference)
        docker.run("pull", reference)
    assert docker.image_id(f"127.0.0.1:{port}/team/other:1") == other
