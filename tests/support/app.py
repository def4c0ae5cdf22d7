"""A registry app run in process (its lifespan running, a client through httpx's ASGI transport), and what it
left in storage."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from starlette.applications import Starlette

from registry.app import create_app
from registry.config import Settings
from storage.drivers import Driver


@asynccontextmanager
async def running_app(settings: Settings) -> AsyncIterator[tuple[Starlette, httpx.AsyncClient]]:
    """A registry app built from `settings`, its lifespan running, and a client of it."""
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://registry.test") as client,
    ):
        yield app, client


@asynccontextmanager
async def app_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """A client of a registry app built from `settings`, its lifespan running."""
    async with running_app(settings) as (_, client):
        yield client


async def stored_keys(driver: Driver, prefix: str) -> list[str]:
    """The keys under `prefix` in `driver`."""
    return [entry.key async for entry in driver.list(prefix)]


def open_to_others(top: str) -> list[str]:
    """The files and directories under `top` (itself included) that users other than the owner may
    read, write or enter, each as `mode path`."""
    found = []
    for directory, _dirs, files in os.walk(top):
        for path in [directory, *(os.path.join(directory, name) for name in files)]:
            mode = os.stat(path).st_mode & 0o777
            if mode & 0o077:
                found.append(f"{mode:o} {os.path.relpath(path, top)}")
    return sorted(found)
