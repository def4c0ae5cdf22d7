"""The pull-through cache with real parts: a second dockerd whose registry mirror is the cache, containerd's ctr
with hosts.toml mirrors, docker and skopeo through prefixes, in front of CNCF Distribution and of our own
registry in token mode; each upstream's access log shows what the cache fetched.

The first tests check the test set-up itself (the engines reach a mirror as tests/support/daemons.py says).
"""

from __future__ import annotations

import json
import os
import urllib.parse
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support.clients import BUSYBOX, Docker, Skopeo
from tests.support.content import digest_of
from tests.support.daemons import NOWHERE_PROXY, Containerd, Dockerd, engines_available, write_hosts_toml
from tests.support.server import RegistryServer
from tests.support.services import require_service
from tests.support.upstreams import (
    AccessLog,
    ChallengeAuth,
    Distribution,
    PlatformImage,
    busybox_layer,
    distribution_available,
    platform_image,
    push_index,
    push_platform_image,
    registry_log,
    start_cache,
    start_token_registry,
    upstream_entry,
)

pytestmark = pytest.mark.e2e

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"


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


def rootfs() -> bytes:
    """A busybox root filesystem layer (uncompressed) of its own: no engine has it yet."""
    require_service(BUSYBOX.exists(), f"{BUSYBOX} (busybox-static)")
    return busybox_layer(uuid.uuid4().bytes)


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
    seen, daemon_seen = open_distribution.mark(), len(dockerd.log_text())

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
    assert "Attempting next endpoint" not in dockerd.log_text()[daemon_seen:]  # no fallback to Docker Hub
    dockerd.cli.run("rmi", "busybox")  # its layers too: the cache tests below pull into an empty daemon


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


def test_multi_platform_index_pulls_each_platform(docker: Docker, open_distribution: Distribution) -> None:
    """An OCI index of a runnable linux/amd64 image and a linux/arm64 one with other content:
    `docker pull --platform linux/arm64` gets the arm64 variant, a plain pull the amd64 one, which runs."""
    repository, tag = "multi/app", uuid.uuid4().hex[:8]
    amd64 = platform_image({"data/arch.txt": b"amd64\n"}, "amd64", base=rootfs())
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


# ---------------------------------------------------------------------------------------------- the cache

PULLER = {"puller": "puller-secret-1"}  # Distribution's htpasswd user, in the cache's config
READER = {"reader": "reader-secret-1"}  # our token-mode registry's user, in a password file of the cache


@pytest.fixture(scope="module")
def distribution(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Distribution]:
    """Distribution with an htpasswd user: the cache's `dist` upstream and its Docker mirror."""
    require_service(distribution_available(), "CNCF Distribution (`docker-registry`)")
    server = Distribution(tmp_path_factory.mktemp("distribution"), users=PULLER).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def token_upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    """Our registry in token mode: the cache's `ours` upstream."""
    server = start_token_registry(tmp_path_factory.mktemp("token-upstream"), READER)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def cache(
    tmp_path_factory: pytest.TempPathFactory, distribution: Distribution, token_upstream: RegistryServer
) -> Iterator[RegistryServer]:
    """The cache: `dist` (Distribution, the Docker mirror, Basic credentials) and `ours` (our registry, the
    token flow, the password in a file)."""
    directory = tmp_path_factory.mktemp("cache")
    ((user, password),) = READER.items()
    password_file = directory / "reader.password"
    password_file.write_text(password + "\n")
    server = start_cache(
        directory,
        [
            upstream_entry(
                "dist", distribution.url, distribution.host, mirror=True,
                username=distribution.user, password=distribution.password,
            ),
            upstream_entry(
                "ours", token_upstream.url, token_upstream.host, username=user, password_file=str(password_file)
            ),
        ],
    )  # fmt: skip
    yield server
    server.stop()


@dataclass(frozen=True)
class Pushed:
    """An image pushed upstream: its manifest digest and the digests of its config and layers."""

    digest: str
    blob_digests: list[str]


@pytest.fixture(scope="module")
def busybox(
    docker: Docker, base_image: str, distribution: Distribution, tmp_path_factory: pytest.TempPathFactory
) -> Pushed:
    """library/busybox:latest (the base image and a file of its own) pushed to Distribution with docker."""
    config = tmp_path_factory.mktemp("docker-config")
    login = ["login", distribution.host, "-u", str(distribution.user), "--password-stdin"]
    docker.run(*login, input=distribution.password, config=config)
    reference = f"{distribution.host}/library/busybox:latest"
    docker.build(reference, base_image, {"/etc/motd": f"{uuid.uuid4()}\n".encode()})
    docker.run("push", reference, config=config)
    with distribution.client() as http:
        head = http.head("/v2/library/busybox/manifests/latest", headers={"Accept": DOCKER_MANIFEST})
        assert head.status_code == 200, head.text
    digest = head.headers["Docker-Content-Digest"]
    return Pushed(digest, blob_digests(distribution, "library/busybox", digest))


def token_client(server: RegistryServer) -> httpx.Client:
    """A client of `server` with READER's credentials, a new connection a request: a PUT answered 401
    before its body was read may leave its connection closed by the server, and a request sent on it
    meanwhile would fail with "server disconnected"."""
    ((user, password),) = READER.items()
    no_reuse = httpx.Limits(max_keepalive_connections=0)
    return httpx.Client(base_url=server.url, timeout=60, auth=ChallengeAuth(user, password), limits=no_reuse)


def seed(client: httpx.Client, repository: str, tag: str, base: bytes | None = None) -> PlatformImage:
    """A new image (a layer of its own, on `base` if given) pushed to `repository:tag` through `client`."""
    marker = f"{repository}:{tag} {uuid.uuid4()}\n".encode()
    image = platform_image({"data/id.txt": marker, "data/noise.bin": os.urandom(64 << 10)}, base=base)
    push_platform_image(client, repository, image, tag)
    return image


def assert_fetched_once(log: AccessLog, repository: str, digests: list[str], since: int) -> None:
    """Each blob of `digests` was sent by the upstream exactly once since `since`."""
    paths = [f"/v2/{repository}/blobs/{d}" for d in digests]
    log.wait_for_requests(lambda rs: all(any(r.path == p for r in rs) for p in paths), since=since)
    counts = {p: log.fetches(p, since) for p in paths}
    assert counts == dict.fromkeys(paths, 1), counts


def repo_digests(docker: Docker, reference: str) -> list[str]:
    """The `<repository>@<digest>` names of a local image."""
    return docker.run("image", "inspect", "-f", "{{range .RepoDigests}}{{.}} {{end}}", reference).stdout.split()


def test_docker_mirror_pull_of_an_official_image_fetches_each_blob_once_then_nothing(
    dockerd: Dockerd, cache: RegistryServer, distribution: Distribution, busybox: Pushed
) -> None:
    """The second dockerd with the cache as its registry mirror: `docker pull busybox` is library/busybox
    of the `mirror: true` upstream, each blob fetched from it once; after `docker rmi`, a second pull
    (within tag_ttl) does not reach the upstream at all."""
    dockerd.set_mirrors([cache.url])
    cache_log = registry_log(cache)
    seen, cache_seen, daemon_seen = distribution.mark(), cache_log.mark(), len(dockerd.log_text())

    dockerd.cli.run("pull", "busybox")

    assert f"busybox@{busybox.digest}" in repo_digests(dockerd.cli, "busybox")
    assert_fetched_once(distribution, "library/busybox", busybox.blob_digests, seen)
    served = [(r.method, r.path, r.status) for r in cache_log.requests(cache_seen)]
    assert ("GET", f"/v2/library/busybox/manifests/{busybox.digest}", 200) in served, served
    assert {("GET", f"/v2/library/busybox/blobs/{d}", 200) for d in busybox.blob_digests} <= set(served), served
    assert "Attempting next endpoint" not in dockerd.log_text()[daemon_seen:]  # the cache answered everything

    dockerd.cli.run("rmi", "busybox")
    seen = distribution.mark()
    dockerd.cli.run("pull", "busybox")
    assert f"busybox@{busybox.digest}" in repo_digests(dockerd.cli, "busybox")
    assert distribution.wait_for_requests(lambda rs: True, since=seen) == []


def test_docker_pull_through_a_prefix_runs_and_second_pull_stays_local(
    docker: Docker, cache: RegistryServer, distribution: Distribution
) -> None:
    """`docker pull CACHE/dist/team/app:1` on the main daemon: the image runs with the content pushed
    upstream; pulled again after rmi, nothing more is asked of the upstream."""
    with distribution.client() as http:
        image = seed(http, "team/app", "1", base=rootfs())
    reference = docker.track(f"{cache.host}/dist/team/app:1")
    seen = distribution.mark()

    docker.run("pull", reference)

    assert f"{cache.host}/dist/team/app@{image.digest}" in repo_digests(docker, reference)
    output = docker.run("run", "--rm", "--network", "none", reference, "cat", "/data/id.txt").stdout
    assert output.startswith("team/app:1 ")
    assert_fetched_once(distribution, "team/app", image.blob_digests, seen)

    docker.run("rmi", reference)
    seen = distribution.mark()
    docker.run("pull", reference)
    assert distribution.wait_for_requests(lambda rs: True, since=seen) == []


def test_skopeo_copies_through_a_prefix(
    skopeo: Skopeo, cache: RegistryServer, distribution: Distribution, tmp_path: Path
) -> None:
    """skopeo copy from CACHE/dist/... to an OCI layout: the manifest digest is the upstream's (no
    conversion on the way) and every blob in the layout has the pushed bytes."""
    with distribution.client() as http:
        image = seed(http, "team/skopeo", "2")
    seen = distribution.mark()
    layout = tmp_path / "layout"

    skopeo.run("copy", "--src-tls-verify=false", f"docker://{cache.host}/dist/team/skopeo:2", f"oci:{layout}:2")

    index = json.loads((layout / "index.json").read_text())
    assert [m["digest"] for m in index["manifests"]] == [image.digest]
    for blob in image.blobs:
        assert (layout / "blobs" / "sha256" / digest_of(blob).removeprefix("sha256:")).read_bytes() == blob
    assert_fetched_once(distribution, "team/skopeo", image.blob_digests, seen)


def test_token_mode_upstream_through_a_prefix(
    docker: Docker, cache: RegistryServer, token_upstream: RegistryServer
) -> None:
    """`ours` is our registry in token mode: the cache gets a token with the user of its password file and
    fetches each blob once (a 401 challenge is not counted as a fetch)."""
    with token_client(token_upstream) as http:
        image = seed(http, "team/tok", "1")
    upstream_log = registry_log(token_upstream)
    seen = upstream_log.mark()
    reference = docker.track(f"{cache.host}/ours/team/tok:1")

    docker.run("pull", reference)

    assert f"{cache.host}/ours/team/tok@{image.digest}" in repo_digests(docker, reference)
    assert_fetched_once(upstream_log, "team/tok", image.blob_digests, seen)
    assert upstream_log.count("GET", "/auth/token", seen, ok_only=True) >= 1


def test_ctr_pulls_two_upstreams_through_one_cache_by_ns(
    containerd: Containerd,
    docker: Docker,
    cache: RegistryServer,
    distribution: Distribution,
    token_upstream: RegistryServer,
    tmp_path: Path,
) -> None:
    """One hosts directory sends both upstream hosts to the cache; ctr's `?ns=<host>` picks the upstream
    for the same path shape `/v2/team/...`, and what ctr cached is what `CACHE/<prefix>/...` serves."""
    with distribution.client() as http:
        from_dist = seed(http, "team/by-ns", "1")
    with token_client(token_upstream) as http:
        from_ours = seed(http, "team/by-ns", "1")  # the same name on the other upstream, other content
    hosts = tmp_path / "hosts"
    for upstream in (distribution.host, token_upstream.host):
        write_hosts_toml(hosts, upstream, cache.url, server=NOWHERE_PROXY)  # only the cache can serve
    dist_seen, ours_log = distribution.mark(), registry_log(token_upstream)
    ours_seen = ours_log.mark()

    containerd.pull(f"{distribution.host}/team/by-ns:1", hosts, namespace="by-ns-dist")
    containerd.pull(f"{token_upstream.host}/team/by-ns:1", hosts, namespace="by-ns-ours")

    assert containerd.image_target(f"{distribution.host}/team/by-ns:1", "by-ns-dist") == from_dist.digest
    assert containerd.image_target(f"{token_upstream.host}/team/by-ns:1", "by-ns-ours") == from_ours.digest
    assert_fetched_once(distribution, "team/by-ns", from_dist.blob_digests, dist_seen)
    assert_fetched_once(ours_log, "team/by-ns", from_ours.blob_digests, ours_seen)

    seen = distribution.mark()
    reference = docker.track(f"{cache.host}/dist/team/by-ns:1")
    docker.run("pull", reference)
    assert f"{cache.host}/dist/team/by-ns@{from_dist.digest}" in repo_digests(docker, reference)
    assert distribution.wait_for_requests(lambda rs: True, since=seen) == []


def test_platform_pull_of_an_index_through_the_cache(
    docker: Docker, cache: RegistryServer, distribution: Distribution
) -> None:
    """An OCI index of linux/amd64 (runnable) and linux/arm64 upstream: `docker pull --platform linux/arm64`
    through the cache gets the arm64 image and fetches none of the amd64 one's blobs; a plain pull then gets
    the amd64 image, which runs."""
    marker = uuid.uuid4().hex.encode()
    amd64 = platform_image({"data/arch.txt": b"amd64 " + marker}, "amd64", base=rootfs())
    arm64 = platform_image({"data/arch.txt": b"arm64 " + marker, "data/arm-only.txt": marker}, "arm64")
    tag = marker.decode()[:8]
    with distribution.client() as http:
        push_index(http, "multi/app", tag, [amd64, arm64])
    reference = docker.track(f"{cache.host}/dist/multi/app:{tag}")
    seen = distribution.mark()

    docker.run("pull", "--platform", "linux/arm64", reference)

    assert docker.run("image", "inspect", "-f", "{{.Architecture}}", reference).stdout.strip() == "arm64"
    assert_fetched_once(distribution, "multi/app", arm64.blob_digests, seen)
    amd64_only = [d for d in amd64.blob_digests if d not in arm64.blob_digests]
    assert [distribution.fetches(f"/v2/multi/app/blobs/{d}", seen) for d in amd64_only] == [0] * len(amd64_only)

    docker.run("rmi", reference)
    docker.run("pull", reference)
    assert docker.run("image", "inspect", "-f", "{{.Architecture}}", reference).stdout.strip() == "amd64"
    output = docker.run("run", "--rm", "--network", "none", reference, "cat", "/data/arch.txt").stdout
    assert output == f"amd64 {marker.decode()}"


def test_push_into_a_cache_namespace_is_denied_and_a_local_push_works(
    docker: Docker, base_image: str, cache: RegistryServer, distribution: Distribution
) -> None:
    """docker push to CACHE/dist/... fails with the DENIED message naming the repository and the upstream; a push to
    CACHE/team/local:1, outside every cache namespace, works on the same server and pulls back."""
    refused = docker.track(f"{cache.host}/dist/x:1")
    docker.run("tag", base_image, refused)
    result = docker.run("push", refused, check=False)
    assert result.returncode != 0
    assert "denied: dist/x is in a pull-through cache of " + distribution.url in result.stderr, result.stderr

    local = f"{cache.host}/team/local:1"
    image_id = docker.build(local, base_image, {"/data/local.txt": uuid.uuid4().bytes})
    docker.run("push", local)
    docker.run("rmi", local)
    docker.run("pull", local)
    assert docker.image_id(local) == image_id
