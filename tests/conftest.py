"""Shared fixtures: settings of a fresh registry (on disk and SQLite, or on S3 and PostgreSQL), a client of
its app through httpx's ASGI transport, and the real S3 and PostgreSQL servers. Helpers are in tests/support/."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette

from registry.config import Settings
from storage.drivers import Driver
from storage.metadata import Metadata, open_metadata
from tests.support.app import running_app
from tests.support.backends import BACKENDS, DISK_SQLITE, S3_BUCKET, backend_settings, fresh_schema, registry_postgres
from tests.support.clients import BUSYBOX, Docker, docker_available, rootfs_tar
from tests.support.services import Postgres, SeaweedS3, require_service, start_service


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def seaweed() -> Iterator[SeaweedS3]:
    """SeaweedFS serving S3, with the bucket `S3_BUCKET`; its credentials in the AWS_* variables."""
    s3 = start_service(SeaweedS3, "SeaweedFS (the S3 server)")
    s3.create_bucket(S3_BUCKET)
    with pytest.MonkeyPatch.context() as environment:
        for key, value in s3.env().items():
            environment.setenv(key, value)
        yield s3
    s3.close()


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """A throw-away PostgreSQL cluster with the database `DATABASE` (`registry`)."""
    with registry_postgres() as pg:
        yield pg


@pytest.fixture(params=["sqlite", "postgresql"])
async def metadata(request, tmp_path) -> AsyncIterator[Metadata]:
    """An open, empty metadata store on SQLite, then on PostgreSQL (a fresh schema)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/index.db"
    else:
        _, url = fresh_schema(request.getfixturevalue("postgres"))
    metadata = open_metadata(url)
    await metadata.open()
    yield metadata
    await metadata.close()


# The test directories whose `settings` (and so `served`, `client` and `driver`) are each backend in turn.
EVERY_BACKEND = ("tests/api", "tests/registry/gc", "tests/registry/ui")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run the tests of EVERY_BACKEND's directories that use `settings` once per backend."""
    if "settings" in metafunc.fixturenames:
        where = metafunc.definition.path.relative_to(metafunc.config.rootpath).as_posix()
        if where.startswith(tuple(f"{directory}/" for directory in EVERY_BACKEND)):
            metafunc.parametrize("settings", BACKENDS, indirect=True)


@pytest.fixture
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """A registry on local disk and SQLite under a temp dir; in the directories of EVERY_BACKEND, on disk and
    SQLite, then on S3 and PostgreSQL."""
    return backend_settings(getattr(request, "param", DISK_SQLITE), tmp_path, request)


@pytest.fixture
async def served(settings: Settings) -> AsyncIterator[tuple[Starlette, httpx.AsyncClient]]:
    """A fresh registry app built from `settings`, and a client of it."""
    async with running_app(settings) as pair:
        yield pair


@pytest.fixture
def client(served: tuple[Starlette, httpx.AsyncClient]) -> httpx.AsyncClient:
    return served[1]


@pytest.fixture
def driver(served: tuple[Starlette, httpx.AsyncClient]) -> Driver:
    """The storage driver of the `served` registry."""
    return served[0].state.registry.driver


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
