"""registry/metrics/merge.py against prometheus_client's own MultiProcessCollector, over files written by real
processes the way `registry serve`'s workers write them: the same samples, also after the files grew."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest, multiprocess

from registry.metrics.exposition import DIRECTORY_VARIABLE
from registry.metrics.merge import MergedFiles
from tests.support.metrics import Scrape

# A worker's traffic: requests over routes, methods and statuses, the cache header, bytes, gauges of every
# multiprocess mode, and label values that need escaping. argv: seed, routes.
WORKER = textwrap.dedent(
    """
    import random, sys
    from prometheus_client import Gauge
    from registry.metrics.families import Metrics
    random.seed(int(sys.argv[1]))
    metrics = Metrics()
    routes = [f"/v2/r{i}" for i in range(int(sys.argv[2]))]
    for _ in range(500):
        metrics.request(
            random.choice(routes), random.choice(["GET", "HEAD", "BREW"]), random.choice([200, 401, 404, 429]),
            random.randrange(100), random.randrange(1000), random.random() * 3, random.choice([None, "hit", "miss"]),
        )
    metrics.upstream_bytes.labels('http://odd "host"\\\\with\\nbreaks').inc(7)
    metrics.repositories.set(int(sys.argv[1]))
    metrics.in_progress.inc()
    for mode in ("all", "max", "min", "sum", "liveall"):
        Gauge(f"extra_{mode}", f"a gauge in mode {mode}", registry=metrics.registry, multiprocess_mode=mode).set(
            int(sys.argv[1])
        )
    """
)


def write(directory: Path, seed: int, routes: int) -> None:
    env = {**os.environ, DIRECTORY_VARIABLE: str(directory)}
    subprocess.run([sys.executable, "-c", WORKER, str(seed), str(routes)], env=env, check=True)


def prometheus_clients(directory: Path) -> Scrape:
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(directory))
    return Scrape(generate_latest(registry).decode())


def assert_same(found: Scrape, expected: Scrape) -> None:
    """The same series with the same values (sums may differ in their last bit: the files are added in
    another order)."""
    assert found.samples.keys() == expected.samples.keys()
    assert found.samples == pytest.approx(expected.samples, rel=1e-12)
    assert found.families == expected.families


def test_the_merge_equals_prometheus_client_s_and_follows_growing_files(tmp_path: Path):
    write(tmp_path, 1, 5)
    write(tmp_path, 2, 5)
    merged = MergedFiles(str(tmp_path))
    first = Scrape(merged.render().decode())
    assert_same(first, prometheus_clients(tmp_path))
    assert first.value("registry_repositories") in (1, 2)
    assert first.total("registry_http_requests_total") == 1000
    # More processes and more series (new entries at the end of new and old files) after the first merge.
    write(tmp_path, 3, 12)
    again = Scrape(merged.render().decode())
    assert_same(again, prometheus_clients(tmp_path))
    assert again.total("registry_http_requests_total") == 1500


def test_an_empty_directory_shows_nothing(tmp_path: Path):
    assert MergedFiles(str(tmp_path)).render() == b""
