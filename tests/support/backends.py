"""The one recipe per backend for a registry under test: disk and SQLite, or S3 (SeaweedFS) and PostgreSQL.

In process, a test builds its app from `Settings`; a registry run as a process (`registry serve`) gets the
same backend from `config_yaml(settings)`. On S3 and PostgreSQL every registry gets a fresh key prefix in the
bucket `S3_BUCKET` and a fresh schema in the database `registry`, so registries never see each other's data.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from registry.config import Settings, load_settings
from tests.support.services import Postgres, SeaweedS3, start_service

DISK_SQLITE = "disk+sqlite"
S3_POSTGRESQL = "s3+postgresql"
BACKENDS = [DISK_SQLITE, S3_POSTGRESQL]
S3_BUCKET = "registry-tests"  # created by the session's `seaweed` fixture
DATABASE = "registry"  # created by the session's `postgres` fixture


@contextmanager
def registry_postgres() -> Iterator[Postgres]:
    """A throw-away PostgreSQL cluster with the database `DATABASE`, closed afterwards; the test is skipped (failed
    under CI=true) when PostgreSQL cannot start."""
    pg = start_service(Postgres, "PostgreSQL")
    try:
        pg.create_database(DATABASE)
        yield pg
    finally:
        pg.close()


def fresh_schema(pg: Postgres) -> tuple[str, str]:
    """A new, empty schema in the database `registry`: its name, and the metadata URL that uses it."""
    import psycopg

    name = "t" + uuid.uuid4().hex[:16]
    with psycopg.connect(pg.dsn(DATABASE), autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {name}")
    return name, f"{pg.dsn(DATABASE)}?options=-csearch_path%3D{name}"


def disk_and_sqlite(directory: Path) -> Settings:
    """A registry on local disk and SQLite under `directory / "data"`, with no access log."""
    return load_settings(env={}, overrides={"data_dir": str(directory / "data"), "log": {"access": False}})


def s3_and_postgres(directory: Path, s3: SeaweedS3, pg: Postgres) -> Settings:
    """`disk_and_sqlite(directory)` moved to a fresh key prefix in `S3_BUCKET` on `s3` and a fresh schema in the
    database `registry` of `pg` (both must exist). The S3 credentials come from the AWS_* variables."""
    settings = disk_and_sqlite(directory)
    name, settings.index.url = fresh_schema(pg)
    s3_settings = settings.storage.s3
    s3_settings.bucket, s3_settings.endpoint, s3_settings.region = S3_BUCKET, s3.endpoint, s3.region
    s3_settings.prefix = f"{name}/"
    return settings


def backend_settings(backend: str, directory: Path, request: pytest.FixtureRequest) -> Settings:
    """Settings of a fresh registry on `backend` (one of BACKENDS) under `directory`; the session's `seaweed`
    and `postgres` fixtures are asked for through `request` only when `backend` needs them."""
    if backend == S3_POSTGRESQL:
        return s3_and_postgres(directory, request.getfixturevalue("seaweed"), request.getfixturevalue("postgres"))
    if backend == DISK_SQLITE:
        return disk_and_sqlite(directory)
    raise ValueError(f"unknown backend {backend!r}: one of {BACKENDS}")


def config_yaml(settings: Settings, **s3_options: Any) -> str:
    """The storage and metadata sections of a config file that gives `registry serve --config` the backend of
    `settings` ("" on disk and SQLite: the data directory, given on the command line, holds both).
    `s3_options` are more keys of `storage.s3` (e.g. redirect=True)."""
    s3 = settings.storage.s3
    if s3.bucket is None:
        return ""
    storage = {"bucket": s3.bucket, "endpoint": s3.endpoint, "region": s3.region, "prefix": s3.prefix, **s3_options}
    document = {"storage": {"s3": storage}, "index": {"url": settings.index.url}}
    return yaml.safe_dump(document, sort_keys=False)
