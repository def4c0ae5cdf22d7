"""Fixtures of the end-to-end tests: a real registry process, the Docker engine and skopeo.

The registry runs as `registry serve` on a free 127.0.0.1 port with its own data directory
(tests/support/server.py); docker treats 127.0.0.0/8 as an insecure (plain HTTP) registry by default, so no
daemon configuration is needed. Images are built from a local busybox base image (no network, no Docker Hub).
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.clients import BUSYBOX, Docker, Skopeo, docker_available, rootfs_tar
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
def docker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Docker]:
    """The docker CLI with a reachable daemon: skips the tests without one, fails them under CI=true.

    Removes every image it created at the end of the session.
    """
    require_service(docker_available(), "the Docker engine (`docker info`)")
    helper = Docker(tmp_path_factory.mktemp("docker"))
    yield helper
    helper.cleanup()


@pytest.fixture(scope="session")
def base_image(docker: Docker, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A local busybox base image, imported from a tarball under a unique tag."""
    require_service(BUSYBOX.exists(), f"{BUSYBOX} (busybox-static)")
    tarball = rootfs_tar(tmp_path_factory.mktemp("base"))
    tag = docker.track(f"registry-e2e/base:{uuid.uuid4().hex[:12]}")
    docker.run("import", "--change", 'CMD ["/bin/sh"]', str(tarball), tag)
    return tag


@pytest.fixture(scope="session")
def skopeo(tmp_path_factory: pytest.TempPathFactory) -> Skopeo:
    """The skopeo CLI: skips the test without it, fails it under CI=true."""
    require_service(shutil.which("skopeo") is not None, "skopeo")
    return Skopeo(tmp_path_factory.mktemp("skopeo"))
