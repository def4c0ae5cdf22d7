"""registry/metrics/exposition.py and setup.py: /metrics on the API port or a listener of its own, the
bearer token, metrics off, and every process's files merged with the dead ones' live gauges dropped."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import textwrap

import httpx
import pytest

from registry.config import Settings
from registry.metrics.exposition import DIRECTORY_VARIABLE, Exposition, for_workers, serve_listener
from tests.support.app import running_app
from tests.support.metrics import Scrape
from tests.support.processes import HOST, free_port

pytestmark = pytest.mark.anyio


async def test_a_token_guards_metrics(settings: Settings):
    settings.metrics.token = "s3cret"
    async with running_app(settings) as (_, client):
        missing = await client.get("/metrics")
        wrong = await client.get("/metrics", headers={"Authorization": "Bearer nope"})
        basic = await client.get("/metrics", headers={"Authorization": "Basic czNjcmV0Og=="})
        right = await client.get("/metrics", headers={"Authorization": "Bearer s3cret"})
    for refused in (missing, wrong, basic):
        assert refused.status_code == 401
        assert refused.json()["errors"][0]["code"] == "UNAUTHORIZED"
        assert refused.headers["www-authenticate"] == 'Bearer realm="metrics"'
    assert right.status_code == 200
    assert "registry_http_requests_total" in right.text


async def test_the_token_may_come_from_a_file(settings: Settings, tmp_path):
    (tmp_path / "token").write_text("from-a-file\n")
    settings.metrics.token_file = str(tmp_path / "token")
    async with running_app(settings) as (_, client):
        assert (await client.get("/metrics", headers={"Authorization": "Bearer from-a-file"})).status_code == 200
        assert (await client.get("/metrics")).status_code == 401


async def test_metrics_off_serves_and_counts_nothing(settings: Settings):
    settings.metrics.enabled = False
    async with running_app(settings) as (app, client):
        assert (await client.get("/v2/")).status_code == 200
        assert (await client.get("/metrics")).status_code == 404
        counted = Scrape(Exposition(app.state.metrics.registry, None).render().decode())
    assert counted.total("registry_http_requests_total") == 0


async def test_with_a_listener_of_its_own_metrics_are_not_on_the_api_port(settings: Settings):
    settings.metrics.listen = f"{HOST}:{free_port()}"
    async with running_app(settings) as (_, client):
        assert (await client.get("/metrics")).status_code == 404


def test_the_listener_serves_metrics_behind_its_token(tmp_path):
    registry = Exposition(_filled_registry(), None)
    listen = f"{HOST}:{free_port()}"
    server = serve_listener(listen, registry, "s3cret")
    try:
        with httpx.Client(base_url=f"http://{listen}") as client:
            assert client.get("/metrics").status_code == 401
            assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
            assert client.get("/other", headers={"Authorization": "Bearer s3cret"}).status_code == 404
            r = client.get("/metrics", headers={"Authorization": "Bearer s3cret"})
    finally:
        server.shutdown()
        server.server_close()
    assert r.status_code == 200
    assert Scrape(r.text).value("registry_http_requests_total", route="/v2/", method="GET", status="200") == 3


def _filled_registry():  # type: ignore[no-untyped-def]
    from registry.metrics.families import Metrics

    metrics = Metrics()
    for _ in range(3):
        metrics.request("/v2/", "GET", 200, 0, 2, 0.001, None)
    return metrics.registry


# A process writing metrics the way a worker of `registry serve` does: PROMETHEUS_MULTIPROC_DIR set before
# prometheus_client is imported. It counts `n` requests, leaves one in flight, and exits or waits.
WORKER = textwrap.dedent(
    """
    import sys
    from registry.metrics.families import Metrics
    metrics = Metrics()
    for _ in range(int(sys.argv[1])):
        metrics.request("/v2/", "GET", 200, 0, 2, 0.001, None)
    metrics.in_progress.inc()
    print("ready", flush=True)
    if sys.argv[2] == "wait":
        sys.stdin.read()
    """
)


def _worker(directory: str, n: int, wait: bool) -> subprocess.Popen[str]:
    env = {**os.environ, DIRECTORY_VARIABLE: directory}
    process = subprocess.Popen(
        [sys.executable, "-c", WORKER, str(n), "wait" if wait else "exit"],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None and process.stdout.readline().strip() == "ready"
    return process


def test_every_process_s_counts_are_merged_and_a_dead_one_s_gauges_dropped(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with for_workers(Settings().metrics):
        directory = os.environ[DIRECTORY_VARIABLE]
        assert os.path.dirname(directory) == str(tmp_path) and os.listdir(directory) == [".lock"]
        living = _worker(directory, 5, wait=True)
        dead = _worker(directory, 7, wait=False)
        dead.wait()
        try:
            found = Scrape(Exposition(None, directory).render().decode())
        finally:
            living.communicate("")
    # Counters keep what a dead process counted; the gauge of requests in flight only the live one's.
    assert found.value("registry_http_requests_total", route="/v2/", method="GET", status="200") == 12
    assert found.value("registry_http_requests_in_progress") == 1
    assert not os.path.exists(directory)


def test_each_start_gets_a_fresh_directory(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with for_workers(Settings().metrics):
        first = os.environ[DIRECTORY_VARIABLE]
    with for_workers(Settings().metrics):
        second = os.environ[DIRECTORY_VARIABLE]
        assert second != first and os.listdir(second) == [".lock"]
    assert DIRECTORY_VARIABLE not in os.environ  # as before: apps built later in this process count alone


def test_the_listener_takes_an_ipv6_address():
    probe = socket.socket(socket.AF_INET6)
    try:
        probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback on this machine")
    finally:
        probe.close()
    listen = f"[::1]:{free_port()}"
    server = serve_listener(listen, Exposition(_filled_registry(), None), None)
    try:
        with httpx.Client(base_url=f"http://{listen}") as client:
            r = client.get("/metrics")
    finally:
        server.shutdown()
        server.server_close()
    assert r.status_code == 200 and "registry_http_requests_total" in r.text


# `registry serve`'s part: prepare the directory, say where, then wait to be killed. argv: nothing.
SERVE = textwrap.dedent(
    """
    from registry.metrics.exposition import prepare_directory
    directory, lock = prepare_directory()
    print(directory, flush=True)
    import sys
    sys.stdin.read()
    """
)


def test_a_directory_a_killed_server_left_is_removed_at_the_next_start(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    command = [sys.executable, "-c", SERVE]
    killed = subprocess.Popen(command, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    living = subprocess.Popen(command, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert killed.stdout is not None and living.stdout is not None
        left, used = killed.stdout.readline().strip(), living.stdout.readline().strip()
        killed.kill()
        killed.wait()
        assert os.path.isdir(left)
        with for_workers(Settings().metrics):
            assert not os.path.exists(left)
            assert os.path.isdir(used)  # its server still runs
    finally:
        living.communicate("")
    assert sorted(os.listdir(tmp_path)) == [os.path.basename(used)]  # (it was not killed: it is its own to remove)
