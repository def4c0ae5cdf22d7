"""The pull-through cache when things go wrong, with real parts: its upstream (CNCF Distribution) stopped,
hanging, or moving a tag; the cache killed with kill -9 in the middle of a blob fetch; twenty cold pulls at
once; and eviction by size in `registry gc`. Each test has a Distribution and a cache of its own."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from registry.layout import blob_key
from registry.proxy.upstream import PAUSE_AFTER_FAILURE_S
from tests.support.clients import Docker
from tests.support.content import DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST, digest_of
from tests.support.processes import HOST, free_port
from tests.support.server import RegistryServer, registry_command
from tests.support.services import require_service
from tests.support.upstreams import (
    Distribution,
    PlatformImage,
    SlowRelay,
    distribution_available,
    platform_image,
    push_platform_image,
    put_manifest,
    start_cache,
    upstream_entry,
)

pytestmark = pytest.mark.e2e

PULLER = {"puller": "puller-secret-2"}
ACCEPT = f"{OCI_MANIFEST}, {OCI_INDEX}, {DOCKER_MANIFEST}"
QUICK_S = 10.0  # "at once": a failure within this, not after a long wait or a hang


@pytest.fixture
def distribution(tmp_path: Path) -> Iterator[Distribution]:
    require_service(distribution_available(), "CNCF Distribution (`docker-registry`)")
    server = Distribution(tmp_path / "distribution", users=PULLER).start()
    yield server
    server.stop()


@pytest.fixture
def caches(tmp_path: Path) -> Iterator[Callable[..., RegistryServer]]:
    """`caches(upstream entries, **options)` starts a cache (see `start_cache`) that stops with the test."""
    started: list[RegistryServer] = []

    def start(upstreams: list[dict[str, object]], **options: Any) -> RegistryServer:
        server = start_cache(tmp_path / f"cache-{len(started)}", upstreams, **options)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def relays() -> Iterator[Callable[[int, int], SlowRelay]]:
    """`relays(target port, bytes per second)` starts a SlowRelay that closes with the test."""
    started: list[SlowRelay] = []

    def start(port: int, bytes_per_s: int) -> SlowRelay:
        relay = SlowRelay(port, bytes_per_s).start()
        started.append(relay)
        return relay

    yield start
    for relay in started:
        relay.close()


def dist_entry(distribution: Distribution, url: str | None = None, **options: object) -> dict[str, object]:
    """The cache's `dist` upstream: `distribution` (or a relay in front of it, at `url`) with its user."""
    return upstream_entry(
        "dist",
        url or distribution.url,
        distribution.host,
        username=distribution.user,
        password=distribution.password,
        **options,
    )


def seed(distribution: Distribution, repository: str, tag: str, size: int = 64 << 10) -> PlatformImage:
    """A new image with `size` random bytes in its layer, pushed to `repository:tag`."""
    files = {"data/id.txt": f"{repository}:{tag} {uuid.uuid4()}\n".encode(), "data/noise.bin": os.urandom(size)}
    image = platform_image(files)
    with distribution.client() as http:
        push_platform_image(http, repository, image, tag)
    return image


def stored_blob(cache: RegistryServer, digest: str) -> Path:
    """Where the cache's local storage keeps blob `digest`."""
    return cache.storage_dir / blob_key(digest)


def cache_get(cache: RegistryServer, path: str, timeout: float = 30.0) -> httpx.Response:
    with httpx.Client(base_url=cache.url, timeout=timeout) as http:
        return http.get(path, headers={"Accept": ACCEPT})


def error_message(response: httpx.Response) -> str:
    return " ".join(f"{e['code']}: {e['message']}" for e in response.json()["errors"])


# ---------------------------------------------------------------------------------------------- outages


def test_upstream_down_cached_tags_pull_stale_uncached_fail_at_once_then_recover(
    docker: Docker, distribution: Distribution, caches: Callable[..., RegistryServer]
) -> None:
    """With the upstream stopped, a tag cached earlier still pulls, also past its tag_ttl (served stale,
    marked so); an uncached one fails within seconds with 503 UNAVAILABLE naming the upstream (docker shows
    only the status of a 5xx answer, never its message). Once the upstream is back, the uncached one pulls,
    and one the upstream does not have fails with a 404 whose message (docker shows it) names the upstream."""
    cache = caches([dist_entry(distribution, tag_ttl="1s")])
    seed(distribution, "team/kept", "1")
    later = seed(distribution, "team/later", "1")
    kept = docker.track(f"{cache.host}/dist/team/kept:1")
    uncached = docker.track(f"{cache.host}/dist/team/later:1")
    docker.run("pull", kept)
    docker.run("rmi", kept)

    distribution.stop()
    time.sleep(1.5)  # past tag_ttl: the tag would be revalidated now

    started = time.monotonic()
    docker.run("pull", kept)
    assert time.monotonic() - started < QUICK_S
    stale = cache_get(cache, "/v2/dist/team/kept/manifests/1")
    assert stale.status_code == 200, stale.text
    assert stale.headers["X-Registry-Cache"] == "stale"
    assert stale.headers["Warning"] == '110 - "Response is Stale"'

    started = time.monotonic()
    failed = docker.run("pull", uncached, check=False)
    elapsed = time.monotonic() - started
    assert failed.returncode != 0
    assert elapsed < QUICK_S, f"the pull took {elapsed:.1f}s"
    refused = cache_get(cache, "/v2/dist/team/later/manifests/1")
    assert refused.status_code == 503, refused.text
    assert "UNAVAILABLE" in error_message(refused) and distribution.url in error_message(refused), refused.text
    assert "503 Service Unavailable" in failed.stderr, failed.stderr

    distribution.start()
    # Each worker of the cache waits PAUSE_AFTER_FAILURE_S after its last failure before it tries the upstream
    # again; no failure can happen once the upstream is back, so all of them try again after that long.
    time.sleep(PAUSE_AFTER_FAILURE_S + 0.2)
    absent = "/v2/dist/team/absent/manifests/1"
    missing = cache_get(cache, absent)
    assert missing.status_code == 404, missing.text
    assert "MANIFEST_UNKNOWN" in error_message(missing) and distribution.url in error_message(missing)
    not_there = docker.run("pull", docker.track(f"{cache.host}/dist/team/absent:1"), check=False)
    assert "manifest unknown" in not_there.stderr and distribution.url in not_there.stderr, not_there.stderr

    docker.run("pull", uncached)
    digests = docker.run("image", "inspect", "-f", "{{range .RepoDigests}}{{.}} {{end}}", uncached).stdout
    assert f"{cache.host}/dist/team/later@{later.digest}" in digests.split()


def test_a_hanging_upstream_fails_the_pull_after_the_read_timeout(
    docker: Docker, distribution: Distribution, caches: Callable[..., RegistryServer]
) -> None:
    """An upstream that accepts connections and never answers: the pull fails after about read_timeout_s
    (2 s here) with 503 naming the upstream, instead of hanging."""
    silent = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    silent.bind((HOST, free_port()))
    silent.listen(64)  # never accepted: the kernel completes the handshakes, nobody ever answers
    url = f"http://{HOST}:{silent.getsockname()[1]}"
    try:
        cache = caches([dist_entry(distribution, url=url)], read_timeout_s=2)
        started = time.monotonic()
        refused = cache_get(cache, "/v2/dist/team/nothing/manifests/1")
        elapsed = time.monotonic() - started
        assert refused.status_code == 503, refused.text
        assert url in error_message(refused), refused.text
        assert 1.5 < elapsed < QUICK_S, f"answered after {elapsed:.1f}s"

        started = time.monotonic()
        failed = docker.run("pull", docker.track(f"{cache.host}/dist/team/nothing:1"), check=False)
        assert failed.returncode != 0
        assert time.monotonic() - started < 3 * QUICK_S
    finally:
        silent.close()


def test_a_tag_moved_upstream_is_served_anew_after_the_ttl(
    docker: Docker, distribution: Distribution, caches: Callable[..., RegistryServer]
) -> None:
    """The tag is served from the cache while younger than tag_ttl, even though it moved upstream; after
    the TTL the cache asks again and serves (and docker pulls) the new digest."""
    ttl_s = 3.0
    cache = caches([dist_entry(distribution, tag_ttl=f"{ttl_s}s")])
    first = seed(distribution, "team/moving", "latest")
    cached_at = time.monotonic()
    miss = cache_get(cache, "/v2/dist/team/moving/manifests/latest")
    assert miss.headers["Docker-Content-Digest"] == first.digest
    assert miss.headers["X-Registry-Cache"] == "miss"

    second = seed(distribution, "team/moving", "latest")
    hit = cache_get(cache, "/v2/dist/team/moving/manifests/latest")
    assert time.monotonic() - cached_at < ttl_s, "too slow to see the tag within its TTL"
    assert hit.headers["Docker-Content-Digest"] == first.digest
    assert hit.headers["X-Registry-Cache"] == "hit"

    time.sleep(max(0.0, cached_at + ttl_s + 0.3 - time.monotonic()))
    moved = cache_get(cache, "/v2/dist/team/moving/manifests/latest")
    assert moved.headers["Docker-Content-Digest"] == second.digest
    assert moved.headers["X-Registry-Cache"] == "miss"  # revalidated means: the same digest

    reference = docker.track(f"{cache.host}/dist/team/moving:latest")
    docker.run("pull", reference)
    digests = docker.run("image", "inspect", "-f", "{{range .RepoDigests}}{{.}} {{end}}", reference).stdout
    assert f"{cache.host}/dist/team/moving@{second.digest}" in digests.split()


# ---------------------------------------------------------------------------------------------- kill -9


def test_kill9_in_the_middle_of_a_blob_fetch_leaves_nothing_half_visible(
    docker: Docker,
    distribution: Distribution,
    caches: Callable[..., RegistryServer],
    relays: Callable[[int, int], SlowRelay],
) -> None:
    """The cache is killed while it streams a 24 MiB blob from a slow upstream (4 MiB/s): after a restart
    the blob is not in storage and not served while the upstream is unreachable (503, never a short 200;
    the answer waits until the dead fetcher's lease expired, about 15 s); with the upstream back, a docker
    pull succeeds and the stored blob has the right bytes."""
    image = seed(distribution, "team/big", "1", size=24 << 20)
    layer = image.blob_digests[-1]
    relay = relays(distribution.port, 4 << 20)
    cache = caches([dist_entry(distribution, url=relay.url)])

    received = 0
    with (
        httpx.Client(base_url=cache.url, timeout=30) as http,
        http.stream("GET", f"/v2/dist/team/big/blobs/{layer}") as response,
    ):
        assert response.status_code == 200
        with pytest.raises(httpx.HTTPError):  # the body is cut off by the kill
            for chunk in response.iter_bytes():
                received += len(chunk)
                if received >= 2 << 20 and cache.process.running:
                    cache.kill9()
    assert received < len(image.layers[-1])
    assert not stored_blob(cache, layer).exists()

    relay.close()
    cache.start()
    unreachable = cache_get(cache, f"/v2/dist/team/big/blobs/{layer}", timeout=60)
    assert unreachable.status_code == 503, (unreachable.status_code, unreachable.headers)
    assert not stored_blob(cache, layer).exists()

    relay.bytes_per_s = 0  # back, at full speed
    relay.start()
    time.sleep(PAUSE_AFTER_FAILURE_S + 0.2)  # the worker that answered 503 tries the upstream again after this
    reference = docker.track(f"{cache.host}/dist/team/big:1")
    docker.run("pull", reference, timeout=120)
    path = stored_blob(cache, layer)
    assert path.exists()
    assert "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest() == layer


# ---------------------------------------------------------------------------------------------- concurrency


def test_twenty_concurrent_cold_pulls_fetch_each_blob_once(
    distribution: Distribution, caches: Callable[..., RegistryServer], relays: Callable[[int, int], SlowRelay]
) -> None:
    """Twenty clients at once, each pulling its own tag of one image (manifest, then config and an 8 MiB
    layer) through a cold cache in front of a slow upstream: every client gets the right bytes, and the
    upstream sends each blob once. (Twenty `docker pull`s would not show it: one daemon downloads a layer
    once for all its pulls.)"""
    clients = 20
    image = seed(distribution, "team/crowd", "t0", size=8 << 20)
    with distribution.client() as http:
        for i in range(1, clients):
            put_manifest(http, "team/crowd", f"t{i}", image.manifest, OCI_MANIFEST)
    relay = relays(distribution.port, 16 << 20)
    cache = caches([dist_entry(distribution, url=relay.url)])
    seen = distribution.mark()
    start = threading.Barrier(clients)
    results: list[object] = [None] * clients
    layer_gets: list[tuple[float, float]] = []  # (started, ended) of each client's layer GET

    def pull(i: int) -> None:
        try:
            with httpx.Client(base_url=cache.url, timeout=120) as http:
                start.wait()
                manifest = http.get(f"/v2/dist/team/crowd/manifests/t{i}", headers={"Accept": ACCEPT})
                assert manifest.status_code == 200, manifest.text
                document = json.loads(manifest.content)
                digests = [document["config"]["digest"], *(layer["digest"] for layer in document["layers"])]
                got = []
                for digest in digests:
                    started = time.monotonic()
                    blob = http.get(f"/v2/dist/team/crowd/blobs/{digest}")
                    assert blob.status_code == 200, blob.text
                    got.append(digest_of(blob.content))
                layer_gets.append((started, time.monotonic()))
                results[i] = (digest_of(manifest.content), got)
        except Exception as e:  # reported below, with the client's number
            results[i] = e

    threads = [threading.Thread(target=pull, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=180)

    assert results == [(image.digest, image.blob_digests)] * clients
    # cold at once: every client asked for the layer before the first one had all of it
    assert max(s for s, _ in layer_gets) < min(e for _, e in layer_gets), layer_gets
    paths = [f"/v2/team/crowd/blobs/{d}" for d in image.blob_digests]
    distribution.wait_for_requests(lambda rs: all(any(r.path == p for r in rs) for p in paths), since=seen)
    assert {p: distribution.fetches(p, seen) for p in paths} == dict.fromkeys(paths, 1)


# ---------------------------------------------------------------------------------------------- eviction


def run_gc(cache: RegistryServer) -> subprocess.CompletedProcess[str]:
    """`registry gc --full` over the cache's config and data directory."""
    assert cache.config is not None
    command = [*registry_command(), "gc", "--full", "--config", str(cache.config), "--data-dir", str(cache.data_dir)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    return result


def test_gc_evicts_the_least_recently_pulled_image_above_max_bytes_and_keeps_local_pushes(
    docker: Docker, base_image: str, distribution: Distribution, caches: Callable[..., RegistryServer]
) -> None:
    """Three cached images of ~1 MiB each under a proxy.max_bytes of 2.5 MiB, pulled in the order 0, 1, 2,
    then 0 again: `registry gc` (grace 0s) deletes the blobs of 1, the least recently pulled (not the first
    fetched), keeps 0 and 2, and keeps an image pushed to the same server outside the cache namespaces."""
    images = [seed(distribution, f"team/evict-{i}", "1", size=1 << 20) for i in range(3)]
    cache = caches([dist_entry(distribution)], gc_grace="0s", max_bytes=int(2.5 * (1 << 20)))
    local = f"{cache.host}/team/local:1"
    docker.build(local, base_image, {"/data/local.bin": os.urandom(1 << 20)})
    docker.run("push", local)
    with cache.client() as http:
        local_manifest = http.get("/v2/team/local/manifests/1", headers={"Accept": ACCEPT}).json()
    local_blobs = [local_manifest["config"]["digest"], *(layer["digest"] for layer in local_manifest["layers"])]

    references = [docker.track(f"{cache.host}/dist/team/evict-{i}:1") for i in range(len(images))]
    for reference in [*references, references[0]]:
        docker.run("rmi", reference, check=False)
        docker.run("pull", reference)
        time.sleep(1.1)  # pull times one second apart at least
    cache.stop()  # records the pull times it has not yet written
    for image in images:
        assert all(stored_blob(cache, d).exists() for d in image.blob_digests)

    report = run_gc(cache).stdout

    assert "(1 evicted from caches)" in report, report
    evicted = images[1]
    assert [stored_blob(cache, d).exists() for d in evicted.blob_digests] == [False] * len(evicted.blob_digests)
    for image in (images[0], images[2]):
        assert all(stored_blob(cache, d).exists() for d in image.blob_digests)
    assert all(stored_blob(cache, d).exists() for d in local_blobs)
