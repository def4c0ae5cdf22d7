"""The `cache` workload: ours and Distribution 2.8 as pull-through caches of one local Distribution upstream.

Both caches front the same upstream (a plain Distribution holding a large layer and a small multi-layer image). Each
round starts a fresh cache of the server kind (new storage), then measures: a cold GET of the large layer through
it (and the same GET straight from the upstream), the first GET of it served from the cache (warm) and HOT_GETS more
(hot), `CONCURRENT` clients pulling the image at once through the cache and the bytes the upstream sent for them
(from its `response completed` log lines), and wrk GETs of the cached tag's manifest after one warm-up GET. In the
rounds of ours, the same on our main server for local content: the first GET of a freshly pushed blob of the same
size and HOT_GETS more, and wrk GETs of a manifest of the same shape. Ours serves the upstream under the prefix `up`
(`/v2/up/<name>/...`), Distribution's proxy under the upstream's own names.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import MIB, BenchError
from bench.client import OCI_CONFIG, OCI_LAYER, OCI_MANIFEST, Connection, expect, push_blob, run_async, sha256_digest
from bench.logs import DIST_FIELD
from bench.metrics import Sample, cpu_of, tree_pids
from bench.rates import run_wrk
from bench.servers import DISTRIBUTION_BIN, Server, settle_workers, start_distribution, start_ours, started, stop
from bench.session import ACTIVE, Bench
from bench.transfers import LargeBlob, blob_sha256, curl_expect, make_large_blob, pull, push_streamed
from bench.workloads import Workload
from tests.support.processes import ServerProcess, free_port

PREFIX = "up"  # our cache's namespace for the upstream
LAYER_NAME = "bench/cache-layer"  # the large layer's repository upstream
LOCAL_NAME = "bench/cache-local"  # a blob of the same size pushed to our main server each round
IMAGE_NAME, IMAGE_TAG = "bench/cache-image", "latest"
LARGE_MIB = 256  # the large layer (at most --large-mib, so --quick stays small)
CONCURRENT = 16  # clients pulling the image at once through a fresh cache
HOT_GETS = 4  # GETs per hot measurement: one from the page cache lasts a fraction of a second
MAX_WRK_S = 5  # the manifest wrk run: --seconds, at most this
QUIET_S = 0.5  # the upstream is done sending when neither its log nor its I/O counters moved for this long


@dataclass(frozen=True)
class CacheImage:
    """An image pushed to the upstream: its manifest and every blob it names (config first), as (digest, size)."""

    name: str
    tag: str
    manifest_digest: str
    blobs: tuple[tuple[str, int], ...]

    @property
    def size(self) -> int:
        """Bytes of its blobs."""
        return sum(size for _, size in self.blobs)


def start_upstream(tmp: Path) -> Server:
    """A plain Distribution on fresh storage, logging every response at level info (the bytes it sent are read from
    those lines), named `upstream` in the samples."""
    server = start_distribution(tmp, log_level="info", directory="cache-upstream")
    server.name = "upstream"
    return server


def start_distribution_cache(tmp: Path, directory: str, upstream: Server) -> Server:
    """Distribution as a pull-through cache of `upstream` (`proxy.remoteurl`) on fresh filesystem storage under
    `tmp/directory`, logging errors only, otherwise configured as `bench.servers.start_distribution` does."""
    workdir = tmp / directory
    workdir.mkdir()
    port = free_port()
    config = workdir / "config.yml"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: error\n  formatter: text\n  accesslog:\n    disabled: true\n"
        f"storage:\n  filesystem:\n    rootdirectory: {workdir / 'data'}\n  delete:\n    enabled: true\n"
        f"http:\n  addr: {upstream.host.split(':')[0]}:{port}\n  secret: {os.urandom(16).hex()}\n"
        f"proxy:\n  remoteurl: {upstream.url('')}\n"
    )
    process = ServerProcess(
        [str(DISTRIBUTION_BIN), "serve", str(config)], log_path=workdir / "server.log", name="distribution cache"
    )
    return started(Server("distribution", port, process), "/v2/", timeout_s=30.0)


def start_ours_cache(tmp: Path, directory: str, upstream: Server) -> Server:
    """Our registry as a pull-through cache of `upstream` under the prefix PREFIX, a tag served without asking the
    upstream for an hour, fresh storage under `tmp/directory`, no access log."""
    upstreams = [{"prefix": PREFIX, "url": upstream.url(""), "tag_ttl": "1h"}]
    server = start_ours(tmp, {"REGISTRY_PROXY_UPSTREAMS": json.dumps(upstreams)}, directory, access_log=False)
    settle_workers(server)
    return server


def cache_name(cache: Server, name: str) -> str:
    """The name under which `cache` serves the upstream's repository `name`."""
    return f"{PREFIX}/{name}" if cache.name == "ours" else name


async def push_layers_image(connection: Connection, name: str, tag: str, layer_sizes: list[int]) -> CacheImage:
    """Push an OCI image of random layers of `layer_sizes` bytes (POST + PUT each) and a config, tagged `tag`."""
    layers = []
    for size in layer_sizes:
        layers.append((await push_blob(connection, name, os.urandom(size)), size))
    config = json.dumps(
        {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [d for d, _ in layers]}}
    ).encode()
    config_blob = (await push_blob(connection, name, config), len(config))
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config_blob[0], "size": config_blob[1]},
            "layers": [{"mediaType": OCI_LAYER, "digest": d, "size": s} for d, s in layers],
        }
    ).encode()
    reply = await connection.request("PUT", f"/v2/{name}/manifests/{tag}", manifest, {"Content-Type": OCI_MANIFEST})
    expect(reply, 201, f"PUT manifest {name}:{tag}")
    return CacheImage(name, tag, sha256_digest(manifest), (config_blob, *layers))


def push_image_to(server: Server, name: str, layer_sizes: list[int]) -> CacheImage:
    """`push_layers_image` to `server` as `name:IMAGE_TAG` over a connection of its own."""

    async def push() -> CacheImage:
        connection = Connection(server.port)
        try:
            return await push_layers_image(connection, name, IMAGE_TAG, layer_sizes)
        finally:
            await connection.close()

    return run_async(push())


class UpstreamMeter:
    """What the upstream sent: the `http.response.written` bytes of its `response completed` log lines since the
    last reading, once it is done sending."""

    def __init__(self, upstream: Server) -> None:
        self.upstream = upstream
        self.offset = upstream.log_path.stat().st_size

    def io_counters(self) -> int:
        """Bytes the upstream's processes read and wrote so far (files and sockets), from /proc/PID/io."""
        total = 0
        for pid in tree_pids(self.upstream.pid):
            try:
                with open(f"/proc/{pid}/io") as f:
                    total += sum(int(line.split()[1]) for line in f if line.startswith(("rchar", "wchar")))
            except OSError:
                continue
        return total

    def new_lines(self) -> list[str]:
        """Whole lines the upstream logged since the last call."""
        with open(self.upstream.log_path, "rb") as f:
            f.seek(self.offset)
            data = f.read()
        whole = data[: data.rfind(b"\n") + 1]
        self.offset += len(whole)
        return whole.decode(errors="replace").splitlines()

    def sent(self, timeout_s: float = 120.0) -> dict[str, int]:
        """Wait until the upstream's log and I/O stayed still for QUIET_S (a cache may still be fetching after its
        client got the last byte), then return what it answered since the last call: requests, response bytes,
        and of those the blob GETs and their bytes; BenchError on a 5xx."""
        found = {"requests": 0, "bytes": 0, "blob_gets": 0, "blob_bytes": 0}
        deadline, counters, still_since = time.monotonic() + timeout_s, -1, time.monotonic()
        while True:
            lines = self.new_lines()
            now, current = time.monotonic(), self.io_counters()
            if lines or current != counters:
                counters, still_since = current, now
            elif now - still_since >= QUIET_S:
                return found
            if now > deadline:
                raise BenchError(f"the upstream was still sending after {timeout_s:.0f}s")
            for line in lines:
                if "response completed" not in line:
                    continue
                fields = {k: v.strip('"') for k, v in DIST_FIELD.findall(line)}
                if int(fields.get("http.response.status", "0")) >= 500:
                    raise BenchError(f"upstream: {line[:500]}")
                written = int(fields.get("http.response.written", "0"))
                found["requests"] += 1
                found["bytes"] += written
                if fields.get("http.request.method") == "GET" and "/blobs/" in fields.get("http.request.uri", ""):
                    found["blob_bytes"] += written
                    found["blob_gets"] += 1
            time.sleep(0.1)


class PullThroughCache(Workload):
    """Ours and Distribution as pull-through caches of one upstream: cold and warm pulls of a large layer, many
    clients pulling one image at once through a fresh cache, manifest GETs of a cached tag."""

    name = "cache"

    def __init__(self, bench: Bench) -> None:
        super().__init__(bench)
        self.upstream: Server | None = None
        self.meter: UpstreamMeter | None = None
        self.layer: LargeBlob | None = None  # its file changes for each local push; the upstream has `digest`
        self.digest = ""
        self.image: CacheImage | None = None
        self.local: Server | None = None  # our main server, holding the local copies
        self.local_image: CacheImage | None = None
        self.caches: list[Server] = []

    def setup(self, server: Server) -> None:
        """Start the upstream and push the large layer and the image to it (once); on our main server, push a
        manifest of the image's shape, the local GET the cached tag's rate is compared with."""
        if self.upstream is None:
            mib = min(LARGE_MIB, self.bench.sizes.large_mib)
            self.layer = make_large_blob(self.bench.tmp / "cache-layer", mib * MIB, 8 * MIB)
            self.upstream = start_upstream(self.bench.tmp)
            push_streamed(self.upstream, LAYER_NAME, self.layer)
            self.digest = self.layer.digest
            sizes = [max(1, mib // 64) * MIB, max(1, mib // 16) * MIB, max(1, mib // 4) * MIB]
            self.image = push_image_to(self.upstream, IMAGE_NAME, sizes)
            self.meter = UpstreamMeter(self.upstream)
            print(
                f"  upstream on {self.upstream.host}: a {mib} MiB layer and an image of "
                f"{'+'.join(str(s // MIB) for s in sizes)} MiB",
                flush=True,
            )
        if server.name == "ours":
            self.local_image = push_image_to(server, LOCAL_NAME, [1024, 2048, 3072])  # a manifest of the same shape
            self.local = server

    def start_cache(self, kind: str, rnd: int) -> Server:
        """A fresh cache of `kind` (ours or distribution) in front of the upstream."""
        assert self.upstream is not None
        os.sync()  # no dirty pages from the previous round's cache for this one's writes to wait behind
        directory = f"cache-{kind}-r{rnd}"
        start = start_ours_cache if kind == "ours" else start_distribution_cache
        cache = start(self.bench.tmp, directory, self.upstream)
        self.caches.append(cache)
        return cache

    def drop_cache(self, cache: Server) -> None:
        """Stop the cache and delete its storage."""
        stop(cache)
        self.caches.remove(cache)
        shutil.rmtree(cache.log_path.parent, ignore_errors=True)

    def measured(self, server: Server, rnd: int, action: Callable[[], dict[str, float]], **extra: Any) -> list[Sample]:
        """`Bench.measure` of `action` on `server`, its samples also carrying the upstream's CPU seconds meanwhile."""
        assert self.upstream is not None
        upstream_pids = tree_pids(self.upstream.pid)
        notes: dict[str, Any] = dict(extra)

        def with_upstream_cpu() -> dict[str, float]:
            before = cpu_of(upstream_pids)
            values = action()
            notes["upstream_cpu_s"] = round(cpu_of(upstream_pids) - before, 3)
            return values

        return self.bench.measure(server, rnd, with_upstream_cpu, notes)

    def upstream_sample(self, cache: Server, rnd: int, metric: str) -> list[Sample]:
        """Record the MiB the upstream sent since the last reading as `metric` (the figures in its extra)."""
        assert self.meter is not None
        sent = self.meter.sent()
        samples = self.bench.measure(cache, rnd, lambda: {metric: sent["bytes"] / MIB}, sent)
        print(f"  {cache.name}: {metric}: {sent['bytes'] / MIB:.1f} MiB in {sent['blob_gets']} blob GET(s)", flush=True)
        return samples

    def run_round(self, server: Server, rnd: int) -> list[Sample]:
        """On a fresh cache of `server`'s kind: the direct and cold pulls of the large layer, warm pulls, the
        concurrent image pulls, the manifest rate; then the cache is stopped and deleted. In the rounds of ours,
        also the local GETs of our main server the warm pull and the manifest rate are compared with."""
        assert self.upstream is not None and self.meter is not None and self.image is not None
        samples = list[Sample]()
        self.meter.sent()  # whatever came before is not this round's
        samples += self.layer_pull(self.upstream, rnd, "cache direct pull", LAYER_NAME, self.digest, 1)
        cache = self.start_cache(server.name, rnd)
        self.meter.sent()  # the direct pull and the cache's start (Distribution GETs /v2/ upstream) are not the pulls'
        try:
            name = cache_name(cache, LAYER_NAME)
            samples += self.layer_pull(cache, rnd, "cache cold pull", name, self.digest, 1)
            samples += self.upstream_sample(cache, rnd, "cache cold upstream sent")
            samples += self.layer_pull(cache, rnd, "cache warm pull", name, self.digest, 1)
            samples += self.layer_pull(cache, rnd, "cache hot pull", name, self.digest, HOT_GETS)
            self.check_cached_layer(cache, name)
            self.meter.sent()  # the checks' requests are not the image pulls'
            samples += self.concurrent_pulls(cache, rnd)
            samples += self.upstream_sample(cache, rnd, f"cache {CONCURRENT} upstream sent")
            samples += self.manifest_rate(cache, rnd, cache_name(cache, IMAGE_NAME), self.image, "cache manifest-get")
            if server.name == "ours" and self.local is not None and self.local_image is not None:
                # Before the cache's storage is deleted: freeing it would make the next page-cache fill cheaper
                # than the warm pull's was (README, caveats).
                samples += self.local_pulls(self.local, rnd)
                samples += self.manifest_rate(self.local, rnd, LOCAL_NAME, self.local_image, "cache local manifest-get")
        finally:
            self.drop_cache(cache)
        return samples

    def check_cached_layer(self, cache: Server, name: str) -> None:
        """The cache's copy of the large layer has its digest (streamed through sha256); ours says it is a hit."""
        digest = self.digest
        if cache.name == "ours":
            head = curl_expect(200, "HEAD cached layer", cache.url(f"/v2/{name}/blobs/{digest}"), "-I")
            if head.headers.get("x-registry-cache") != "hit":
                raise BenchError(f"HEAD of the cached layer: X-Registry-Cache {head.headers.get('x-registry-cache')}")
        if blob_sha256(cache, name, digest) != digest:
            raise BenchError(f"{cache.name} cache: GET {name}@{digest} returned other bytes")

    def layer_pull(self, server: Server, rnd: int, metric: str, name: str, digest: str, times: int) -> list[Sample]:
        """`times` GETs of the large layer (`digest`) from `server` as `name` (curl, every byte received), in MiB/s."""
        assert self.layer is not None
        size, url = self.layer.size, server.url(f"/v2/{name}/blobs/{digest}")

        def action() -> dict[str, float]:
            seconds = pull(url, 200, size, times)
            return {metric: times * size / MIB / seconds, ACTIVE: seconds}

        return self.measured(server, rnd, action, gets=times)

    def local_pulls(self, local: Server, rnd: int) -> list[Sample]:
        """Push a new variant of the layer to our main server (not timed), then GET it once (the first read after
        the write, like the warm pull after the cache's fill) and HOT_GETS times more."""
        assert self.layer is not None
        digest = self.layer.next_variant()
        push_streamed(local, LOCAL_NAME, self.layer)
        return [
            *self.layer_pull(local, rnd, "cache local pull", LOCAL_NAME, digest, 1),
            *self.layer_pull(local, rnd, "cache local hot pull", LOCAL_NAME, digest, HOT_GETS),
        ]

    def concurrent_pulls(self, cache: Server, rnd: int) -> list[Sample]:
        """CONCURRENT clients released together, each GETting the image's manifest by tag, then every blob in turn
        (each answer checked for status, size and, for the manifest, digest); seconds until the last is done."""
        assert self.image is not None
        image, name = self.image, cache_name(cache, self.image.name)
        barrier = threading.Barrier(CONCURRENT)

        def client() -> None:
            barrier.wait()
            manifest_url = cache.url(f"/v2/{name}/manifests/{image.tag}")
            got = curl_expect(200, f"GET {name}:{image.tag}", manifest_url, "-H", f"Accept: {OCI_MANIFEST}")
            if got.headers.get("docker-content-digest") != image.manifest_digest:
                raise BenchError(f"GET {name}:{image.tag}: digest {got.headers.get('docker-content-digest')}")
            for digest, size in image.blobs:
                pull(cache.url(f"/v2/{name}/blobs/{digest}"), 200, size, 1)

        def action() -> dict[str, float]:
            started = time.perf_counter()
            with ThreadPoolExecutor(CONCURRENT) as clients:
                for done in [clients.submit(client) for _ in range(CONCURRENT)]:
                    done.result()
            return {f"cache {CONCURRENT} cold pulls": time.perf_counter() - started}

        return self.measured(cache, rnd, action, clients=CONCURRENT, image_mib=round(image.size / MIB, 3))

    def manifest_rate(self, server: Server, rnd: int, name: str, image: CacheImage, metric: str) -> list[Sample]:
        """One warm-up GET of `image`'s manifest by tag from `server` as `name` (checked), then wrk GETs of it
        (`--seconds`, at most MAX_WRK_S) as `<metric> rate/p50/p99`, with the upstream's requests per GET."""
        assert self.meter is not None
        sizes, url = self.bench.sizes, server.url(f"/v2/{name}/manifests/{image.tag}")
        warm = curl_expect(200, f"GET {url}", url, "-H", f"Accept: {OCI_MANIFEST}")
        if warm.headers.get("docker-content-digest") != image.manifest_digest:
            raise BenchError(f"GET {url}: digest {warm.headers.get('docker-content-digest')}")
        self.meter.sent()
        stats: dict[str, Any] = {}

        def action() -> dict[str, float]:
            stats.update(run_wrk(url, min(sizes.seconds, MAX_WRK_S), sizes.connections, {"Accept": OCI_MANIFEST}))
            return {f"{metric} {key}": stats[key] for key in ("rate", "p50", "p99")}

        samples = self.measured(server, rnd, action)
        upstream = self.meter.sent()["requests"]
        stats["upstream_requests_per_get"] = round(upstream / stats["requests"], 3)
        for sample in samples:
            sample.extra.update(stats)
        print(f"  {server.name}: {metric}: {upstream} upstream requests for {stats['requests']} GETs", flush=True)
        return samples

    def teardown(self) -> None:
        """Stop any cache still running, and the upstream."""
        for cache in list(self.caches):
            self.drop_cache(cache)
        if self.upstream is not None:
            stop(self.upstream)
