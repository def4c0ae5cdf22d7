"""Shared fixtures: settings of a fresh registry (on disk and SQLite, or on S3 and PostgreSQL), a
client of its app through httpx's ASGI transport, and the real S3 and PostgreSQL servers."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from starlette.applications import Starlette

from registry.config import Settings, load_settings
from storage.drivers import Driver
from storage.metadata import Metadata, open_metadata
from tests.services import Postgres, SeaweedS3, start_service
from tests.support import running_app

S3_BUCKET = "registry-tests"
BACKENDS = ["disk+sqlite", "s3+postgresql"]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def seaweed() -> Iterator[SeaweedS3]:
    """SeaweedFS serving S3, with a bucket for the tests; its credentials in the AWS_* variables."""
    s3 = start_service(SeaweedS3, "SeaweedFS (the S3 server)")
    s3.create_bucket(S3_BUCKET)
    with pytest.MonkeyPatch.context() as environment:
        for key, value in s3.env().items():
            environment.setenv(key, value)
        yield s3
    s3.close()


def registry_postgres() -> Iterator[Postgres]:
    """A throw-away PostgreSQL cluster with a database `registry`, closed after use (for fixtures)."""
    pg = start_service(Postgres, "PostgreSQL")
    pg.create_database("registry")
    yield pg
    pg.close()


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """A throw-away PostgreSQL cluster with a database `registry`."""
    yield from registry_postgres()


def fresh_schema(pg: Postgres) -> tuple[str, str]:
    """A new, empty schema in the database `registry`: its name, and the index URL that uses it."""
    import psycopg

    name = "t" + uuid.uuid4().hex[:16]
    with psycopg.connect(pg.dsn("registry"), autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {name}")
    return name, f"{pg.dsn('registry')}?options=-csearch_path%3D{name}"


@pytest.fixture(params=["sqlite", "postgresql"])
async def metadata(request, tmp_path) -> AsyncIterator[Metadata]:
    """An open, empty index on SQLite, then on PostgreSQL (a fresh schema)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/index.db"
    else:
        _, url = fresh_schema(request.getfixturevalue("postgres"))
    metadata = open_metadata(url)
    await metadata.open()
    yield metadata
    await metadata.close()


def use_s3_and_postgres(settings: Settings, s3: SeaweedS3, pg: Postgres) -> Settings:
    """Point `settings` at a fresh key prefix in the bucket and a fresh schema in the database."""
    name, settings.index.url = fresh_schema(pg)
    s3_settings = settings.storage.s3
    s3_settings.bucket, s3_settings.endpoint, s3_settings.region = S3_BUCKET, s3.endpoint, s3.region
    s3_settings.prefix = f"{name}/"
    return settings


def base_settings(tmp_path) -> Settings:
    return load_settings(env={}, overrides={"data_dir": str(tmp_path / "data"), "log": {"access": False}})


@pytest.fixture
def settings(tmp_path) -> Settings:
    """A registry on local disk and SQLite under a temp dir."""
    return base_settings(tmp_path)


@pytest.fixture(params=BACKENDS)
def any_backend_settings(request, tmp_path) -> Settings:
    """The same registry settings on each backend in turn: disk and SQLite, then S3 and PostgreSQL."""
    settings = base_settings(tmp_path)
    if request.param == "s3+postgresql":
        use_s3_and_postgres(settings, request.getfixturevalue("seaweed"), request.getfixturevalue("postgres"))
    return settings


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
