"""/metrics of `registry serve` with two worker processes: every worker's requests counted, the listener of its
own in the main process, and a restart counting from zero."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from tests.support.metrics import Scrape
from tests.support.processes import HOST, free_port
from tests.support.server import RegistryServer, start_server

REQUESTS = "registry_http_requests_total"
SENT = 600


def two_workers(tmp_path: Path, *extra: str) -> RegistryServer:
    config = tmp_path / "config.yaml"
    config.write_text("\n".join(["http:", "  workers: 2", *extra]) + "\n")
    return start_server(tmp_path, config)


def send(url: str, n: int) -> None:
    """`n` GET /v2/ over 12 connections, each closed after 10 requests (so that both workers take some)."""

    def one_batch(_: int) -> None:
        with httpx.Client(base_url=url) as client:
            for _ in range(10):
                assert client.get("/v2/").status_code == 200

    with ThreadPoolExecutor(12) as pool:
        list(pool.map(one_batch, range(n // 10)))


def worker_pids(server: RegistryServer) -> set[int]:
    return {pid for pid in server.pids() if pid != server.process.pid}


def metrics_directory(server: RegistryServer, log_from: int = 0) -> Path:
    """Where the server's workers write their values (its PROMETHEUS_MULTIPROC_DIR), as its log says."""
    found = re.findall(r"the workers' metrics are kept in (\S+)", server.log_text()[log_from:])
    assert found, "registry serve did not say where its workers' metrics are"
    return Path(found[-1])


def test_every_worker_s_requests_are_counted_and_a_restart_starts_from_zero(tmp_path: Path):
    """(On a SIGKILL too: then the next start also removes what the killed one left.)"""
    server = two_workers(tmp_path)
    try:
        assert len(worker_pids(server)) == 2
        send(server.url, SENT)
        with server.client() as client:
            found = Scrape(client.get("/metrics").text)
        assert found.value(REQUESTS, route="/v2/", method="GET", status="200") == SENT
        directory = metrics_directory(server)
        # Both workers counted some: each has its own counter file.
        assert len(list(directory.glob("counter_*.db"))) == 2
        server.stop()
        assert not directory.exists()
        log_length = len(server.log_text())
        server.start()
        with server.client() as client:
            again = Scrape(client.get("/metrics").text)
        assert again.value(REQUESTS, route="/v2/", method="GET", status="200") == 0
        second = metrics_directory(server, log_length)
        assert second != directory
        # Killed outright, the server leaves its directory behind; the next start removes it.
        log_length = len(server.log_text())
        server.restart()
        assert metrics_directory(server, log_length) != second
        assert not second.exists()
    finally:
        server.stop()


def test_a_listener_of_its_own_covers_every_worker_and_the_api_port_has_no_metrics(tmp_path: Path):
    listen = f"{HOST}:{free_port()}"
    server = two_workers(tmp_path, "metrics:", f"  listen: {listen}", "  token: scrape-me")
    try:
        send(server.url, SENT)
        with server.client() as client:
            assert client.get("/metrics").status_code == 404
        with httpx.Client(base_url=f"http://{listen}") as scraper:
            assert scraper.get("/metrics").status_code == 401
            r = scraper.get("/metrics", headers={"Authorization": "Bearer scrape-me"})
        assert r.status_code == 200
        found = Scrape(r.text)
        assert found.value(REQUESTS, route="/v2/", method="GET", status="200") == SENT
        assert found.value(REQUESTS, route="other", method="GET", status="404") == 1  # no /metrics route there
        assert found.value("registry_repositories") == 0  # the index figures, read by the workers at start
    finally:
        server.stop()
