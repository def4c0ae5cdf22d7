"""One benchmark run: what it created (temp dir, servers, Docker images; `cleanup` removes exactly those) and what
the paired workloads share (sizes, the large blob, the small image, the samples, peak RSS), with the way an action
is measured into samples.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench import MIB
from bench.client import Connection, SmallImage, check_manifest, push_image, run_async
from bench.images import remove_images
from bench.metrics import Sample, metered
from bench.servers import Server, stop
from bench.transfers import LargeBlob, check_blob, make_large_blob

ACTIVE = "_active_s"  # key of an action's result: seconds its requests were in flight


@dataclass
class Run:
    """Resources created by this run, so cleanup removes exactly those and nothing else."""

    suffix: str
    tmp: Path
    image_ids: set[str] = field(default_factory=set)
    tags: set[str] = field(default_factory=set)
    servers: list[Server] = field(default_factory=list)


def cleanup(run: Run) -> None:
    """Stop the servers, remove exactly the images and tags this run created, delete its temp dir."""
    for server in run.servers:
        stop(server)
    remove_images(run)
    shutil.rmtree(run.tmp, ignore_errors=True)


@dataclass
class Sizes:
    """The resolved sizes of this run (defaults, --quick defaults, or flags)."""

    rounds: int
    large_mib: int
    chunk_mib: int
    range_mib: int
    seconds: int
    connections: int
    small_images: int
    small_concurrency: int
    catalog_repos: int
    docker_mib: int
    docker_layers: int
    load_connections: int
    load_slow: int
    load_seconds: int


@dataclass
class Bench:
    """Everything the paired workloads share: sizes, the run (temp dir, both servers), the large blob, the small
    image on each server, and the results (samples, peak RSS, process counts, which monolithic form each took)."""

    sizes: Sizes
    run: Run
    servers: list[Server] = field(default_factory=list)
    large: LargeBlob | None = None
    apps: dict[str, SmallImage] = field(default_factory=dict)
    single_post: dict[str, bool] = field(default_factory=dict)
    samples: list[Sample] = field(default_factory=list)
    peaks: dict[str, dict[str, dict[int, int]]] = field(default_factory=dict)
    processes: dict[str, int] = field(default_factory=dict)

    @property
    def tmp(self) -> Path:
        """This run's temp dir."""
        return self.run.tmp

    def large_blob(self) -> LargeBlob:
        """The large random blob, written on first use."""
        if self.large is None:
            size, chunk = self.sizes.large_mib * MIB, self.sizes.chunk_mib * MIB
            print(f"  writing a {self.sizes.large_mib} MiB random blob and its {chunk // MIB} MiB chunks", flush=True)
            self.large = make_large_blob(self.tmp / "large", size, chunk)
        return self.large

    def app(self, server: Server) -> SmallImage:
        """The small image `bench/app:latest` on `server`, pushed and checked on first use."""
        if server.name not in self.apps:

            async def push() -> SmallImage:
                connection = Connection(server.port)
                try:
                    image = await push_image(connection, "bench/app", "latest")
                    await check_manifest(connection, image)
                    return image
                finally:
                    await connection.close()

            self.apps[server.name] = run_async(push())
            image = self.apps[server.name]
            check_blob(server, image.name, image.layer_digest, image.layer_size)
        return self.apps[server.name]

    def measure(
        self,
        server: Server,
        rnd: int,
        action: Callable[[], dict[str, float]],
        extra: dict[str, Any] | None = None,
        client_pids: list[int] | None = None,
    ) -> list[Sample]:
        """Run `action` under a meter; it returns {metric: value} and, optionally, {ACTIVE: seconds requests were in
        flight}; record one Sample per metric."""
        with metered(server.pid, client_pids) as meter:
            values = action()
        sequential = ACTIVE in values
        active_s = min(values.pop(ACTIVE, meter.wall_s), meter.wall_s)
        costs: dict[str, Any] = {key: round(v, 3) if isinstance(v, float) else v for key, v in asdict(meter).items()}
        samples = [
            Sample(
                metric,
                server.name,
                rnd,
                round(value, 3),
                active_s=round(active_s, 3),
                sequential=sequential,
                extra=dict(extra or {}),
                **costs,
            )
            for metric, value in values.items()
        ]
        self.samples += samples
        return samples

    def timed_push(
        self, server: Server, rnd: int, metric: str, how: Callable[[Server, str, LargeBlob], float], **extra: Any
    ) -> list[Sample]:
        """Push a new variant of the large blob with `how`, timed as `metric`; check it arrived whole."""
        blob = self.large_blob()
        blob.next_variant()
        name = f"bench/{metric.replace(' ', '-').replace('+', '-')}-r{rnd}"
        os.sync()  # start with no dirty pages from the previous push, so it doesn't pay for their write-back

        def action() -> dict[str, float]:
            seconds = how(server, name, blob)
            return {metric: blob.mib / seconds, ACTIVE: seconds}

        samples = self.measure(server, rnd, action, extra)
        check_blob(server, name, blob.digest, blob.size)
        return samples
