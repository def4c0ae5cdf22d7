"""The ASGI application: routes, error rendering and lifespan. Everything it uses is passed in."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from registry.config import Settings
from registry.edge import Edge
from registry.errors import RegistryError, Unsupported
from registry.handlers import base, blobs, listings, manifests, uploads
from registry.service import Registry
from storage.drivers import Driver
from storage.drivers.local import LocalDriver
from storage.drivers.memory import MemoryDriver
from storage.index import Index, open_index

log = logging.getLogger("registry")


class EndpointUnknown(RegistryError):
    code, status, message = "NOT_FOUND", 404, "no such endpoint"


def _routes() -> list[Route]:
    name = "/v2/{name:path}"
    return [
        Route("/healthz", health, methods=["GET"]),
        Route("/v2/", base.version_check, methods=["GET"]),
        Route("/v2/_catalog", listings.catalog, methods=["GET"]),
        Route(f"{name}/tags/list", listings.list_tags, methods=["GET"]),
        Route(f"{name}/referrers/{{digest}}", listings.referrers, methods=["GET"]),
        Route(f"{name}/manifests/{{reference}}", manifests.get_manifest, methods=["GET"]),
        Route(f"{name}/manifests/{{reference}}", manifests.put_manifest, methods=["PUT"]),
        Route(f"{name}/manifests/{{reference}}", manifests.delete_manifest, methods=["DELETE"]),
        Route(f"{name}/blobs/uploads/", uploads.start_upload, methods=["POST"]),
        Route(f"{name}/blobs/uploads", uploads.start_upload, methods=["POST"]),
        Route(f"{name}/blobs/uploads/{{upload_id}}", uploads.upload_status, methods=["GET"]),
        Route(f"{name}/blobs/uploads/{{upload_id}}", uploads.patch_upload, methods=["PATCH"]),
        Route(f"{name}/blobs/uploads/{{upload_id}}", uploads.put_upload, methods=["PUT"]),
        Route(f"{name}/blobs/uploads/{{upload_id}}", uploads.cancel_upload, methods=["DELETE"]),
        Route(f"{name}/blobs/{{digest}}", blobs.get_blob, methods=["GET"]),
        Route(f"{name}/blobs/{{digest}}", blobs.delete_blob, methods=["DELETE"]),
    ]


async def health(request: Request) -> Response:
    """Liveness and readiness: answers 200 once the index answers."""
    await base.registry(request).index.repository_exists("")
    return base.json_response({"status": "ok"})


def _render(error: RegistryError) -> Response:
    headers = error.headers or None
    return base.json_response(error.body(), error.status, headers)


async def _registry_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RegistryError)
    return _render(exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        return _render(Unsupported({"method": request.method}, message="method not allowed here"))
    if exc.status_code == 404:
        return _render(EndpointUnknown({"path": request.url.path[:300]}))
    return base.json_response({"errors": [{"code": "UNKNOWN", "message": exc.detail}]}, exc.status_code)


async def _unexpected_error(request: Request, exc: Exception) -> Response:
    log.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    return base.json_response({"errors": [{"code": "UNKNOWN", "message": "internal server error"}]}, 500)


def make_driver(settings: Settings) -> Driver:
    """The storage driver the settings name."""
    if settings.storage.driver == "memory":
        return MemoryDriver()
    return LocalDriver(settings.storage_root)


def create_app(settings: Settings, *, index: Index | None = None, driver: Driver | None = None) -> Starlette:
    """The registry app; `index` and `driver` default to those the settings describe.

    The index is opened and closed by the app's lifespan.
    """
    index = index or open_index(settings.index_url)
    driver = driver or make_driver(settings)
    registry = Registry(
        index,
        driver,
        delete_enabled=settings.storage.delete_enabled,
        manifest_max_bytes=settings.manifests.max_bytes,
    )

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await index.open()
        try:
            yield
        finally:
            await index.close()

    app = Starlette(
        routes=_routes(),
        middleware=[Middleware(Edge, access_log=settings.log.access)],
        exception_handlers={
            RegistryError: _registry_error,
            HTTPException: _http_error,
            Exception: _unexpected_error,
        },
        lifespan=lifespan,
    )
    app.state.registry = registry
    app.state.settings = settings
    return app
