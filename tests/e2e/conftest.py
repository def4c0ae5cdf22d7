"""Fixtures of the end-to-end tests: a real registry process, the Docker engine and skopeo.

The registry runs as `registry serve` on a free 127.0.0.1 port with its own data directory
(tests/support/server.py); docker treats 127.0.0.0/8 as an insecure (plain HTTP) registry by default, so no
daemon configuration is needed. Images are built from a local busybox base image (no network, no Docker Hub).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.clients import Skopeo
from tests.support.server import RegistryServer, start_server
from tests.support.services import require_service


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Attach the log tail of every live registry to a failing test's report."""
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for server in RegistryServer.live:
            report.sections.append((f"registry log {server.host} (tail)", server.log_tail()))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Leave no registry process behind, even when a fixture's teardown did not run."""
    for server in list(RegistryServer.live):
        server.kill9()


@pytest.fixture
def registry_server(tmp_path: Path) -> Iterator[RegistryServer]:
    """A registry of its own for one test (the crash tests kill and restart it)."""
    server = start_server(tmp_path)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def module_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    """A registry shared by the tests of one module."""
    server = start_server(tmp_path_factory.mktemp("registry"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def skopeo(tmp_path_factory: pytest.TempPathFactory) -> Skopeo:
    """The skopeo CLI: skips the test without it, fails it under CI=true."""
    require_service(shutil.which("skopeo") is not None, "skopeo")
    return Skopeo(tmp_path_factory.mktemp("skopeo"))


@pytest.fixture
def client_config(tmp_path: Path) -> Path:
    """A docker client config folder of the test's own, so logins never touch the user's."""
    folder = tmp_path / "docker-config"
    folder.mkdir()
    return folder
