"""The pull-through cache with real parts: a second dockerd whose registry mirror is the cache, containerd's ctr
with hosts.toml mirrors, docker and skopeo through prefixes, in front of CNCF Distribution and of our own
registry in token mode; each upstream's access log shows what the cache fetched.

The first tests check the test set-up itself (the engines reach a mirror as tests/support/daemons.py says).
"""

from __future__ import annotations

import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.clients import BUSYBOX, Docker, rootfs_tar
from tests.support.daemons import NOWHERE_PROXY, Containerd, Dockerd, engines_available, write_hosts_toml
from tests.support.services import require_service
from tests.support.upstreams import (
    Distribution,
    distribution_available,
    platform_image,
    push_index,
)

pytestmark = pytest.mark.e2e


# ---------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def dockerd() -> Iterator[Dockerd]:
    """A second dockerd (no mirror yet), for the whole module."""
    require_service(engines_available(), "dockerd, containerd and ctr")
    daemon = Dockerd().start()
    yield daemon
    daemon.close()


@pytest.fixture(scope="module")
def containerd() -> Iterator[Containerd]:
    require_service(engines_available(), "dockerd, containerd and ctr")
    daemon = Containerd().start()
    yield daemon
    daemon.close()


@pytest.fixture(scope="module")
def rootfs(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """An uncompressed layer tarball of a busybox root filesystem."""
    require_service(BUSYBOX.exists(), f"{BUSYBOX} (busybox-static)")
    return rootfs_tar(tmp_path_factory.mktemp("rootfs")).read_bytes()


@pytest.fixture(scope="module")
def open_distribution(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Distribution]:
    """Distribution without authentication, for the checks of the set-up."""
    require_service(distribution_available(), "CNCF Distribution (`docker-registry`)")
    server = Distribution(tmp_path_factory.mktemp("open-distribution")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def open_busybox(docker: Docker, base_image: str, open_distribution: Distribution) -> str:
    """library/busybox:latest pushed to the open Distribution with docker; returns the manifest digest."""
    reference = docker.track(f"{open_distribution.host}/library/busybox:latest")
    docker.run("tag", base_image, reference)
    docker.run("push", reference)
    with open_distribution.client() as http:
        head = http.head("/v2/library/busybox/manifests/latest", headers={"Accept": DOCKER_MANIFEST})
        assert head.status_code == 200, head.text
        return head.headers["Docker-Content-Digest"]


DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"


def blob_digests(distribution: Distribution, repository: str, reference: str) -> list[str]:
    """The config and layer digests of an image manifest in `distribution`."""
    with distribution.client() as http:
        accept = f"{DOCKER_MANIFEST}, application/vnd.oci.image.manifest.v1+json"
        manifest = http.get(f"/v2/{repository}/manifests/{reference}", headers={"Accept": accept}).json()
    return [manifest["config"]["digest"], *(layer["digest"] for layer in manifest["layers"])]


# ---------------------------------------------------------------------------------------------- the set-up


def test_second_dockerd_pulls_an_official_image_from_its_mirror(
    dockerd: Dockerd, open_distribution: Distribution, open_busybox: str
) -> None:
    """`docker pull busybox` on a daemon whose mirror is Distribution: the mirror gets the requests
    daemons.py lists, each once, and Docker Hub is never reached (it cannot be: there is no network)."""
    dockerd.set_mirrors([open_distribution.url])
    blobs = blob_digests(open_distribution, "library/busybox", "latest")
    seen = open_distribution.mark()

    dockerd.cli.run("pull", "busybox")

    def complete(requests: list) -> bool:
        return all(any(r.path.endswith(b) for r in requests) for b in blobs)

    requests = open_distribution.wait_for_requests(complete, since=seen)
    got = [(r.method, r.path, r.query) for r in requests]
    assert got[:3] == [
        ("GET", "/v2/", ""),
        ("HEAD", "/v2/library/busybox/manifests/latest", ""),
        ("GET", f"/v2/library/busybox/manifests/{open_busybox}", ""),
    ], got
    assert sorted(got[3:]) == sorted(("GET", f"/v2/library/busybox/blobs/{b}", "") for b in blobs), got
    assert dockerd.cli.run("image", "inspect", "-f", "{{index .RepoDigests 0}}", "busybox").stdout.strip() == (
        f"busybox@{open_busybox}"
    )
    assert NOWHERE_PROXY not in dockerd.log_text()  # the mirror answered: no fallback to Docker Hub


def test_ctr_pulls_through_a_hosts_toml_mirror_with_the_host_in_ns(
    containerd: Containerd, open_distribution: Distribution, open_busybox: str, tmp_path: Path
) -> None:
    """ctr with hosts.toml naming Distribution as the mirror of a registry host that does not exist: every
    request carries `?ns=<that host>`, each blob is fetched once, and the image is the one pushed."""
    host = "registry.invalid:5000"
    hosts = write_hosts_toml(tmp_path / "hosts", host, open_distribution.url, server=NOWHERE_PROXY)
    blobs = blob_digests(open_distribution, "library/busybox", "latest")
    seen = open_distribution.mark()

    containerd.pull(f"{host}/library/busybox:latest", hosts, namespace="setup")

    requests = open_distribution.wait_for_requests(lambda rs: len(rs) >= 2 + len(blobs), since=seen)
    got = [(r.method, r.path) for r in requests]
    assert got[:2] == [
        ("HEAD", "/v2/library/busybox/manifests/latest"),
        ("GET", f"/v2/library/busybox/manifests/{open_busybox}"),
    ], got
    assert sorted(got[2:]) == sorted(("GET", f"/v2/library/busybox/blobs/{b}") for b in blobs), got
    assert {r.query for r in requests} == {f"ns={urllib.parse.quote(host)}"}  # the colon is escaped: %3A
    assert containerd.image_target(f"{host}/library/busybox:latest", "setup") == open_busybox


def test_multi_platform_index_pulls_each_platform(
    docker: Docker, open_distribution: Distribution, rootfs: bytes
) -> None:
    """An OCI index of a runnable linux/amd64 image and a linux/arm64 one with other content:
    `docker pull --platform linux/arm64` gets the arm64 variant, a plain pull the amd64 one, which runs."""
    repository, tag = "multi/app", uuid.uuid4().hex[:8]
    amd64 = platform_image({"data/arch.txt": b"amd64\n"}, "amd64", base=rootfs)
    arm64 = platform_image({"data/arch.txt": b"arm64\n", "data/only-arm.txt": b"x"}, "arm64")
    with open_distribution.client() as http:
        push_index(http, repository, tag, [amd64, arm64])
    reference = docker.track(f"{open_distribution.host}/{repository}:{tag}")

    docker.run("pull", "--platform", "linux/arm64", reference)
    assert docker.run("image", "inspect", "-f", "{{.Architecture}}", reference).stdout.strip() == "arm64"
    docker.run("rmi", reference)

    docker.run("pull", reference)
    assert docker.run("image", "inspect", "-f", "{{.Architecture}}", reference).stdout.strip() == "amd64"
    output = docker.run("run", "--rm", "--network", "none", reference, "cat", "/data/arch.txt").stdout
    assert output == "amd64\n"
