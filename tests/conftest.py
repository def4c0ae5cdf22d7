"""Shared fixtures: an app on a temp dir driven through httpx's ASGI transport."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from registry.config import Settings, load_settings
from tests.support import app_client


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def settings(tmp_path) -> Settings:
    return load_settings(env={}, overrides={"data_dir": str(tmp_path / "data"), "log": {"access": False}})


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """A client of a fresh registry on local disk and SQLite."""
    async with app_client(settings) as http:
        yield http
