"""The paired workloads of `python -m bench.run`, each run on ours and on Distribution: what is timed and checked.

A `Workload` prepares a server once (`setup`, not timed), then measures one round on it (`run_round`), returning
the samples it recorded through `Bench.measure`; `WORKLOADS` maps the `--only` names to the classes.
"""

from __future__ import annotations

import json
import re
import statistics
import time
from collections.abc import Callable
from typing import Any

from bench import MIB, BenchError
from bench import load as held_load
from bench.client import (
    OCI_MANIFEST,
    Connection,
    SmallImage,
    check_manifest,
    expect,
    pool,
    push_blob,
    push_image,
    run_async,
    target_of,
)
from bench.images import ImageShape, build_image, docker, docker_build_env, image_id_of, import_base, remove_image
from bench.metrics import Sample, pids_named
from bench.rates import run_ab_head, run_wrk
from bench.servers import Server, settle_workers, start_distribution, start_ours_on_s3, stop
from bench.session import ACTIVE, Bench
from bench.transfers import (
    blob_sha256,
    pull,
    push_chunked,
    push_post_put,
    push_single_post,
    push_streamed,
    supports_single_post,
)


class Workload:
    """A named workload: `setup` once per server (not timed), then `run_round` per server and round."""

    name = ""

    def __init__(self, bench: Bench) -> None:
        self.bench = bench

    def setup(self, server: Server) -> None:
        """Prepare `server` for the timed rounds."""

    def run_round(self, server: Server, rnd: int) -> list[Sample]:
        """One timed round on `server`."""
        raise NotImplementedError

    def teardown(self) -> None:
        """Stop what `setup` started."""

    def measure_load(self, server: Server, rnd: int, load: Callable[[], dict[str, Any]]) -> list[Sample]:
        """Run a load generator (`load` returns its stats: rate, p50, p99, ...) as `<name> rate/p50/p99`
        samples, each carrying all the stats."""
        stats: dict[str, Any] = {}

        def action() -> dict[str, float]:
            stats.update(load())
            return {f"{self.name} {key}": stats[key] for key in ("rate", "p50", "p99")}

        samples = self.bench.measure(server, rnd, action)
        for sample in samples:
            sample.extra.update(stats)
        return samples


class PushLarge(Workload):
    """A large random blob pushed monolithically (one POST where supported, else POST + PUT), as POST + PUT with
    the body on both, and streamed (POST, PATCH with everything, PUT). Each push is a new blob."""

    name = "push-large"

    def setup(self, server: Server) -> None:
        """Write the blob; find out whether the server takes a single-POST monolithic upload."""
        self.bench.large_blob()
        self.bench.single_post[server.name] = supports_single_post(server)

    def run_round(self, server: Server, rnd: int) -> list[Sample]:
        """Monolithic, POST+PUT, streamed."""
        single = self.bench.single_post[server.name]
        monolithic = push_single_post if single else push_post_put
        method = "POST ?digest= with body" if single else "POST, PUT ?digest= with body (no single-POST support)"
        return [
            *self.bench.timed_push(server, rnd, "push-large monolithic", monolithic, method=method),
            *self.bench.timed_push(server, rnd, "push-large post+put", push_post_put),
            *self.bench.timed_push(server, rnd, "push-large streamed", push_streamed),
        ]


class PushChunked(Workload):
    """The large blob in chunks with Content-Range on each PATCH (one curl per chunk), then PUT ?digest=."""

    name = "push-chunked"

    def setup(self, server: Server) -> None:
        """Write the blob."""
        self.bench.large_blob()

    def run_round(self, server: Server, rnd: int) -> list[Sample]:
        """One chunked push."""
        return self.bench.timed_push(
            server, rnd, "push-chunked", push_chunked, chunks=len(self.bench.large_blob().chunks)
        )


class PullLarge(Workload):
    """GETs of the large blob, and Range GETs of its middle `--range-mib`; each measurement repeats the GET until
    about PULL_BYTES were sent (a single 512 MiB GET from the page cache takes a fraction of a second)."""

    name = "pull-large"
    PULL_BYTES = 2048 * MIB

    def __init__(self, bench: Bench) -> None:
        super().__init__(bench)
        self.digests: dict[str, str] = {}

    def setup(self, server: Server) -> None:
        """Push a variant of the blob (streamed) and check a full GET returns exactly its bytes."""
        blob = self.bench.large_blob()
        digest = blob.next_variant()
        push_streamed(server, "bench/pull", blob)
        if blob_sha256(server, "bench/pull", digest) != digest:
            raise BenchError(f"{server.name}: GET bench/pull@{digest} returned other bytes")
        self.digests[server.name] = digest

    def run_round(self, server: Server, rnd: int) -> list[Sample]:
        """Full GET, then the middle range."""
        blob, sizes = self.bench.large_blob(), self.bench.sizes
        url = server.url(f"/v2/bench/pull/blobs/{self.digests[server.name]}")
        length = min(sizes.range_mib * MIB, blob.size // 2)
        start = (blob.size - length) // 2

        full_times, range_times = max(1, self.PULL_BYTES // blob.size), max(1, self.PULL_BYTES // length)

        def full() -> dict[str, float]:
            seconds = pull(url, 200, blob.size, full_times)
            return {"pull-large full": full_times * blob.mib / seconds, ACTIVE: seconds}

        def ranged() -> dict[str, float]:
            seconds = pull(url, 206, length, range_times, "-H", f"Range: bytes={start}-{start + length - 1}")
            return {"pull-large range": range_times * length / MIB / seconds, ACTIVE: seconds}

        return [
            *self.bench.measure(server, rnd, full, {"gets": full_times}),
            *self.bench.measure(server, rnd, ranged, {"gets": range_times, "range_mib": length / MIB}),
        ]


class ManifestGet(Workload):
    """wrk GETs of `bench/app:latest` with the OCI manifest Accept header."""

    name = "manifest-get"

    def setup(self, server: Server) -> None:
        """Push the small image."""
        self.bench.app(server)

    def run_round(self, server: Server, rnd: int) -> list[Sample]:
        """One wrk run."""
        sizes = self.bench.sizes
        url = server.url("/v2/bench/app/manifests/latest")
        return self.measure_load(
            server, rnd, lambda: run_wrk(url, sizes.seconds, sizes.connections, {"Accept": OCI_MANIFEST})
        )


class BlobHead(Workload):
    """ab -k -i HEADs of the small image's layer blob (wrk would wait for a body after HEAD)."""

    name = "blob-head"

    def setup(self, server: Server) -> None:
        """Push the small image."""
        self.bench.app(server)

    def run_round(self, server: Server, rnd: int) -> list[Sample]:
        """One ab run."""
        sizes, image = self.bench.sizes, self.bench.app(server)
        url = server.url(f"/v2/{image.name}/blobs/{image.layer_digest}")
        return self.measure_load(
            server, rnd, lambda: run_ab_head(url, sizes.seconds, sizes.connections, self.bench.tmp)
        )


class PushSmall(Workload):
    """`--small-images` small images (2 blobs + manifest + tag, 5 requests each), `--small-concurrency` at a time,
    spread over as many repositories as there are concurrent pushers."""

    name = "push-small"

    def run_round(self, server: Server, rnd: int) -> list[Sample]:
        """Push them all (timed), then GET a few manifests back."""
        sizes, pushed = self.bench.sizes, list[SmallImage]()

        async def one(connection: Connection, i: int) -> None:
            pushed.append(await push_image(connection, f"bench/small-r{rnd}-{i % sizes.small_concurrency}", f"i{i}"))

        def action() -> dict[str, float]:
            started = time.perf_counter()
            run_async(pool(server.port, sizes.small_concurrency, range(sizes.small_images), one))
            return {"push-small": sizes.small_images / (time.perf_counter() - started)}

        samples = self.bench.measure(server, rnd, action, {"images": sizes.small_images, "requests_per_image": 5})
        if len(pushed) != sizes.small_images:
            raise BenchError(f"push-small: {len(pushed)} of {sizes.small_images} images pushed")
        run_async(pool(server.port, 1, pushed[:: max(1, len(pushed) // 8)], check_manifest))
        return samples


class Catalog(Workload):
    """`--catalog-repos` repositories (one tiny blob each, created concurrently before timing); then the first
    catalog page at n=100 (median of 5) and the full walk following Link headers."""

    name = "catalog"
    PAGE = 100

    def __init__(self, bench: Bench) -> None:
        super().__init__(bench)
        self.totals: dict[str, int] = {}

    def setup(self, server: Server) -> None:
        """Create the repositories; walk once to count every repository the server has."""
        count = self.bench.sizes.catalog_repos
        data = b"catalog bench blob\n"

        async def create(connection: Connection, i: int) -> None:
            await push_blob(connection, f"catalog/r{i:06d}", data)

        started = time.perf_counter()
        run_async(pool(server.port, 16, range(count), create))
        print(f"  {server.name}: created {count} repositories in {time.perf_counter() - started:.1f}s", flush=True)
        names = run_async(self.walk(server.port))
        if sum(name.startswith("catalog/") for name in names) != count:
            raise BenchError(f"{server.name}: the catalog lists {len(names)} repositories, not the {count} created")
        self.totals[server.name] = len(names)

    async def walk(self, port: int) -> list[str]:
        """Every repository name, page by page (n=100), following the Link headers."""
        connection, names = Connection(port), list[str]()
        target: str | None = f"/v2/_catalog?n={self.PAGE}"
        try:
            while target is not None:
                reply = expect(await connection.request("GET", target), 200, f"GET {target}")
                names += json.loads(reply.body)["repositories"]
                link = re.search(r'<([^>]+)>;\s*rel="next"', reply.headers.get("link", ""))
                target = target_of(link[1]) if link else None
        finally:
            await connection.close()
        return names

    async def first_pages(self, port: int, times: int) -> list[float]:
        """Milliseconds of `times` GETs of the first page."""
        connection, spent = Connection(port), list[float]()
        try:
            for _ in range(times):
                started = time.perf_counter()
                reply = expect(await connection.request("GET", f"/v2/_catalog?n={self.PAGE}"), 200, "GET _catalog")
                spent.append((time.perf_counter() - started) * 1000)
                if len(json.loads(reply.body)["repositories"]) != self.PAGE:
                    raise BenchError("GET _catalog?n=100: not 100 repositories")
        finally:
            await connection.close()
        return spent

    def run_round(self, server: Server, rnd: int) -> list[Sample]:
        """First page, then the walk."""
        total = self.totals[server.name]

        def first() -> dict[str, float]:
            return {"catalog first page": statistics.median(run_async(self.first_pages(server.port, 5)))}

        def walk() -> dict[str, float]:
            started = time.perf_counter()
            names = run_async(self.walk(server.port))
            spent = (time.perf_counter() - started) * 1000
            if len(names) != total or names != sorted(names):
                raise BenchError(
                    f"{server.name}: catalog walk gave {len(names)} names (sorted: {names == sorted(names)})"
                )
            return {"catalog walk": spent}

        return [
            *self.bench.measure(server, rnd, first),
            *self.bench.measure(server, rnd, walk, {"repositories": total}),
        ]


class DockerPushPull(Workload):
    """`docker push` and `docker pull` of a fresh multi-layer image with the real engine (images built by
    `bench.images`). The client CPU column includes dockerd's."""

    name = "docker"

    def __init__(self, bench: Bench) -> None:
        super().__init__(bench)
        sizes = bench.sizes
        self.image = ImageShape((sizes.docker_mib // sizes.docker_layers,) * sizes.docker_layers)
        self.base = ""
        self.env: dict[str, str] = {}

    def setup(self, server: Server) -> None:
        """Import the busybox base image once."""
        if not self.base:
            self.env = docker_build_env()
            self.base = import_base(self.bench.run)

    def run_round(self, server: Server, rnd: int) -> list[Sample]:
        """Build a fresh image, push it (timed), drop it, pull it (timed), check its id, drop it."""
        run = self.bench.run
        local = f"bench-pushpull-{run.suffix}:{server.name}-docker-r{rnd}"
        image_id = build_image(run, self.base, self.image, local, self.env)
        ref = f"{server.host}/bench-{run.suffix}/docker-r{rnd}:latest"
        docker("tag", local, ref)
        run.tags.add(ref)
        dockerd = pids_named("dockerd")
        extra = {"image": self.image.name}

        def push() -> dict[str, float]:
            started = time.perf_counter()
            docker("push", ref)
            return {"docker push": time.perf_counter() - started}

        def pull() -> dict[str, float]:
            started = time.perf_counter()
            docker("pull", ref)
            return {"docker pull": time.perf_counter() - started}

        samples = self.bench.measure(server, rnd, push, extra, dockerd)
        remove_image(image_id)
        samples += self.bench.measure(server, rnd, pull, extra, dockerd)
        if image_id_of(ref) != image_id:
            raise BenchError(f"pulled {ref} as {image_id_of(ref)}, pushed {image_id}")
        remove_image(image_id)
        return samples


class S3Storage(Workload):
    """The large blob again with both registries keeping blobs in S3 (SeaweedFS, started here; the index of ours
    stays SQLite): for each server kind, one twin proxying blob GETs and one answering them with a 307 to a
    presigned S3 URL (curl follows it). Timed: streamed push, chunked push, full GET through the registry, full
    GET by redirect."""

    name = "s3"

    def __init__(self, bench: Bench) -> None:
        super().__init__(bench)
        self.s3: Any = None
        self.twins: dict[tuple[str, bool], Server] = {}
        self.digests: dict[tuple[str, bool], str] = {}

    def storage(self) -> Any:
        """SeaweedFS, started on first use."""
        if self.s3 is None:
            from tests.support.services import SeaweedS3  # the tests' SeaweedFS (imported here: it needs pytest)

            self.s3 = SeaweedS3(self.bench.tmp / "seaweed")
            self.s3.start()
        return self.s3

    def start_twin(self, server: Server, redirect: bool) -> Server:
        """Start another server of `server`'s kind on a fresh bucket, proxying blob GETs or redirecting them."""
        s3 = self.storage()
        bucket = f"{server.name[:4]}-{'redirect' if redirect else 'proxy'}"
        s3.create_bucket(bucket)
        directory = f"{server.name}-s3-{'redirect' if redirect else 'proxy'}"
        if server.name == "ours":
            return start_ours_on_s3(self.bench.tmp, directory, s3, bucket, redirect)
        storage = (
            f"  s3:\n    accesskey: {s3.access_key}\n    secretkey: {s3.secret_key}\n    region: {s3.region}\n"
            f"    regionendpoint: {s3.endpoint}\n    bucket: {bucket}\n    secure: false\n    v4auth: true\n"
            f"  redirect:\n    disable: {str(not redirect).lower()}\n"
        )
        return start_distribution(self.bench.tmp, log_level="error", storage=storage, directory=directory)

    def setup(self, server: Server) -> None:
        """Start both twins of `server` and push the blob that the GETs fetch to each (checked)."""
        blob = self.bench.large_blob()
        for redirect in (False, True):
            twin = self.twins[server.name, redirect] = self.start_twin(server, redirect)
            settle_workers(twin)
            digest = blob.next_variant()
            push_streamed(twin, "bench/s3-pull", blob)
            if blob_sha256(twin, "bench/s3-pull", digest, "-L") != digest:
                raise BenchError(f"{server.name} on S3: GET bench/s3-pull@{digest} returned other bytes")
            self.digests[server.name, redirect] = digest

    def run_round(self, server: Server, rnd: int) -> list[Sample]:
        """Pushes on the proxying twin, then a GET from each twin."""
        blob, samples = self.bench.large_blob(), list[Sample]()
        proxy = self.twins[server.name, False]
        for metric, how in (("s3 push-large streamed", push_streamed), ("s3 push-chunked", push_chunked)):
            samples += self.bench.timed_push(proxy, rnd, metric, how)
        for redirect, metric in ((False, "s3 pull-large proxied"), (True, "s3 pull-large redirect")):
            twin = self.twins[server.name, redirect]
            url = twin.url(f"/v2/bench/s3-pull/blobs/{self.digests[server.name, redirect]}")

            def get(url: str = url, metric: str = metric) -> dict[str, float]:
                seconds = pull(url, 200, blob.size, 2, "-L")
                return {metric: 2 * blob.mib / seconds, ACTIVE: seconds}

            samples += self.bench.measure(twin, rnd, get)
        return samples

    def teardown(self) -> None:
        """Stop the twins and SeaweedFS."""
        for twin in self.twins.values():
            stop(twin)
        if self.s3 is not None:
            self.s3.close()


class HeldLoad(Workload):
    """`bench.load`: keep-alive connections pulling a manifest and a blob for a while, as fast as answered, while as
    many slow sockets dribble request heads they never finish. A wrong answer fails the run; the stats (errors:
    wrong answers, answers slower than 30 s and dropped connections; slow sockets held; RSS sampled from /proc)
    go with the samples."""

    name = "load"

    def run_round(self, server: Server, rnd: int) -> list[Sample]:
        """One held load."""
        sizes = self.bench.sizes

        def load() -> dict[str, Any]:
            stats = held_load.load(
                server.port,
                connections=sizes.load_connections,
                slow=sizes.load_slow,
                seconds=sizes.load_seconds,
                server_pid=server.pid,
            )
            print(f"  {server.name}: " + ", ".join(f"{k} {v}" for k, v in stats.items()), flush=True)
            wrong = {kind: n for kind, n in stats["error_kinds"].items() if kind in held_load.WRONG_ANSWERS}
            if wrong:
                raise BenchError(f"load on {server.name}: wrong answers {wrong}")
            return stats

        return self.measure_load(server, rnd, load)


WORKLOADS: dict[str, type[Workload]] = {
    w.name: w
    for w in (
        PushLarge,
        PushChunked,
        PullLarge,
        ManifestGet,
        BlobHead,
        PushSmall,
        Catalog,
        DockerPushPull,
        S3Storage,
        HeldLoad,
    )
}
