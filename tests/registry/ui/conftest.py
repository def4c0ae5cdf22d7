"""Fixtures of the web UI's tests: a registry app in auth mode none, and in each mode with users."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.applications import Starlette

from registry.config import Settings
from tests.support.app import running_app
from tests.support.content import make_image, push_image
from tests.support.ui import SEEDED
from tests.support.users import configure, htpasswd_bytes


@pytest.fixture(scope="module")
def htpasswd_file(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return htpasswd_bytes(tmp_path_factory.mktemp("users"))


@pytest.fixture
async def open_ui(settings: Settings) -> AsyncIterator[tuple[Starlette, httpx.AsyncClient]]:
    """A registry in auth mode none (everyone may do everything) and a client of it."""
    async with running_app(settings) as pair:
        yield pair


@pytest.fixture(params=["htpasswd", "token"])
async def users_ui(
    request: pytest.FixtureRequest, settings: Settings, htpasswd_file: bytes
) -> AsyncIterator[tuple[Starlette, httpx.AsyncClient]]:
    """A registry with the users alice, bob and root (tests/support/users.py) in auth mode htpasswd, then
    token, and a client of it (its cookies kept between requests), holding the images of SEEDED."""
    async with running_app(settings) as (_, seeding):  # auth mode none while seeding
        for repository, tags in SEEDED.items():
            image = make_image()
            for tag in tags:
                await push_image(seeding, repository, image, tag)
    async with running_app(configure(settings, request.param, htpasswd_file)) as pair:
        yield pair
