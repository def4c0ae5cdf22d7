"""A sample of the hostile-request matrix on S3 and PostgreSQL: the same answers as on disk and SQLite,
and nothing stored changes in the bucket or the database either."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.api import (
    test_hostile_auth,
    test_hostile_manifests,
    test_hostile_names,
    test_hostile_ranges,
    test_hostile_uploads,
)
from tests.api.hostile import (
    Case,
    Scenario,
    Seeded,
    anyio_backend,  # noqa: F401  (a module-scoped fixture: one loop for the module)
    check,
    check_scenario,
    module_settings,
    params,
    seeded_registry,
    with_auth,
)

pytestmark = pytest.mark.anyio

SAMPLE_EVERY = 30  # one case in this many, from each area; every upload sequence


def _sample(cases: list[Case]) -> list[Case]:
    return cases[::SAMPLE_EVERY]


# What a database may refuse on its own (NUL, lone surrogates, invalid UTF-8, numbers past 64 bits)
# is sent to PostgreSQL in full; the rest as a sample.
DATABASE_SENSITIVE = ("nul", "surrogate", "int64", "huge-int")
AREAS = [test_hostile_names.CASES, test_hostile_ranges.CASES, test_hostile_manifests.CASES, test_hostile_uploads.CASES]
CASES = list(
    {
        c.id: c
        for area in AREAS
        for c in [*_sample(area), *(c for c in area if any(word in c.id for word in DATABASE_SENSITIVE))]
    }.values()
)
# Credentials the index may see (user names are counted there on failed logins): the database-sensitive
# ones in full, on PostgreSQL.
AUTH_WORDS = ("nul", "utf8", "latin1", "10000", "1000-chars", "unicode", "xff")
BASIC_CASES = [c for c in test_hostile_auth.BASIC_CASES if any(word in c.id for word in AUTH_WORDS)]
TOKEN_CASES = [c for c in test_hostile_auth.TOKEN_CASES if any(word in c.id for word in AUTH_WORDS)]
SEQUENCES: list[Scenario] = test_hostile_uploads.SEQUENCES


@pytest.fixture(scope="module")
async def seeded(request, tmp_path_factory) -> AsyncIterator[Seeded]:
    async with seeded_registry(module_settings(request, tmp_path_factory, "s3+postgresql")) as registry:
        registry.extra["<UPLOAD>"] = registry.upload.upper()
        registry.extra["<nodash>"] = registry.upload.replace("-", "")
        yield registry


@pytest.mark.parametrize("hostile", params(CASES))
async def test_hostile_request_on_s3_and_postgresql_gets_a_clean_answer(seeded: Seeded, hostile: Case) -> None:
    await check(seeded, hostile)


@pytest.mark.parametrize("sequence", params(SEQUENCES))
async def test_hostile_upload_sequence_on_s3_and_postgresql(seeded: Seeded, sequence: Scenario) -> None:
    await check_scenario(seeded, sequence)


@pytest.fixture(scope="module")
async def basic_registry(request, tmp_path_factory) -> AsyncIterator[Seeded]:
    settings = with_auth(module_settings(request, tmp_path_factory, "s3+postgresql"), "htpasswd")
    async with seeded_registry(settings, test_hostile_auth.basic_sign_in) as registry:
        yield registry


@pytest.fixture(scope="module")
async def token_registry(request, tmp_path_factory) -> AsyncIterator[Seeded]:
    settings = with_auth(module_settings(request, tmp_path_factory, "s3+postgresql"), "token")
    async with seeded_registry(settings, test_hostile_auth.token_sign_in) as registry:
        yield registry


@pytest.mark.parametrize("hostile", params(BASIC_CASES))
async def test_hostile_basic_credentials_on_postgresql(basic_registry: Seeded, hostile: Case) -> None:
    await check(basic_registry, hostile)


@pytest.mark.parametrize("hostile", params(TOKEN_CASES))
async def test_hostile_token_request_on_postgresql(token_registry: Seeded, hostile: Case) -> None:
    await check(token_registry, hostile)
