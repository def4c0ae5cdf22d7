"""The ASGI application: routes, error rendering and lifespan. Everything it uses is passed in."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.convertors import register_url_convertor
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from registry.auth.access import CATALOG, DELETE, PULL, PUSH, Access, access
from registry.auth.setup import build_auth
from registry.config import Settings, parse_duration
from registry.edge import Edge, printable
from registry.errors import BlobUploadInvalid, RegistryError, Unavailable, Unsupported
from registry.facade import Registry
from registry.gc import Collector, collect_every
from registry.handlers import base, blobs, listings, manifests, token, uploads
from storage.drivers import Driver
from storage.drivers.local import LocalDriver
from storage.drivers.memory import MemoryDriver
from storage.errors import BackendUnavailable
from storage.metadata import Metadata, open_metadata

log = logging.getLogger("registry")


class EndpointUnknown(RegistryError):
    code, status, message = "NOT_FOUND", 404, "no such endpoint"


Needs = Callable[[Request], list[Access]]


def _needs(*actions: str) -> Needs:
    """The access a repository route needs: `actions` on the repository in its path."""

    def needs(request: Request) -> list[Access]:
        return [access("repository", base.repository(request), actions)]

    return needs


def _guarded(endpoint: Callable[[Request], Awaitable[Response]], needs: Needs) -> Callable:
    """`endpoint`, called only once the gate admits the caller (the principal is in request.state)."""

    async def guarded(request: Request) -> Response:
        request.state.principal = await request.app.state.gate.admit(request, needs(request))
        return await endpoint(request)

    return guarded


def _routes(settings: Settings) -> list[Route]:
    register_url_convertor("repository", base.RepositoryConvertor())
    name = "/v2/{name:repository}"
    pull, push, delete = _needs(PULL), _needs(PULL, PUSH), _needs(DELETE)
    routes = [
        # The hottest first: the router tries routes in order.
        Route(f"{name}/blobs/{{digest}}", _guarded(blobs.get_blob, pull), methods=["GET"]),
        Route(f"{name}/manifests/{{reference}}", _guarded(manifests.get_manifest, pull), methods=["GET"]),
        Route(f"{name}/blobs/uploads/", _guarded(uploads.start_upload, push), methods=["POST"]),
        Route(f"{name}/blobs/uploads/{{upload_id}}", _guarded(uploads.patch_upload, push), methods=["PATCH"]),
        Route(f"{name}/blobs/uploads/{{upload_id}}", _guarded(uploads.put_upload, push), methods=["PUT"]),
        Route(f"{name}/manifests/{{reference}}", _guarded(manifests.put_manifest, push), methods=["PUT"]),
        Route("/v2/", _guarded(base.version_check, lambda r: []), methods=["GET"]),
        Route("/healthz", health, methods=["GET"]),
        Route("/v2/_catalog", _guarded(listings.catalog, lambda r: [CATALOG]), methods=["GET"]),
        Route(f"{name}/tags/list", _guarded(listings.list_tags, pull), methods=["GET"]),
        Route(f"{name}/referrers/{{digest}}", _guarded(listings.referrers, pull), methods=["GET"]),
        Route(f"{name}/manifests/{{reference}}", _guarded(manifests.delete_manifest, delete), methods=["DELETE"]),
        Route(f"{name}/blobs/uploads", _guarded(uploads.start_upload, push), methods=["POST"]),
        Route(f"{name}/blobs/uploads/{{upload_id}}", _guarded(uploads.upload_status, push), methods=["GET"]),
        Route(f"{name}/blobs/uploads/{{upload_id}}", _guarded(uploads.cancel_upload, push), methods=["DELETE"]),
        Route(f"{name}/blobs/{{digest}}", _guarded(blobs.delete_blob, delete), methods=["DELETE"]),
    ]
    if settings.auth.mode == "token":
        routes += [
            Route(settings.auth.token.path, token.get_token, methods=["GET"]),
            Route(settings.auth.token.path, token.post_token, methods=["POST"]),
        ]
    return routes


async def health(request: Request) -> Response:
    """Liveness and readiness: answers 200 once the index answers."""
    await base.registry(request).metadata.repository_exists("")
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
        return _render(EndpointUnknown({"path": request.scope["path"][:300]}))
    return base.json_response({"errors": [{"code": "UNKNOWN", "message": exc.detail}]}, exc.status_code)


async def _backend_unavailable(request: Request, exc: Exception) -> Response:
    log.warning("%s %s: %s", printable(request.method), printable(request.scope["path"]), exc)
    return _render(
        Unavailable({"reason": "the storage backend is unavailable; retry shortly"}, headers={"Retry-After": "5"})
    )


async def _body_ended(request: Request, exc: Exception) -> Response:
    """The request body ended early: the client went away, or its body could not be parsed (granian and uvicorn
    report both as a disconnect). Not a server error: one INFO line, and a 400 for a client still listening."""
    log.info(
        "%s %s: the client went away or sent a malformed body",
        printable(request.method),
        printable(request.scope["path"]),
    )
    return _render(BlobUploadInvalid({"reason": "the request body ended before it was complete, or was malformed"}))


async def _unexpected_error(request: Request, exc: Exception) -> Response:
    log.error("unexpected error on %s %s", printable(request.method), printable(request.scope["path"]), exc_info=exc)
    return base.json_response({"errors": [{"code": "UNKNOWN", "message": "internal server error"}]}, 500)


def make_driver(settings: Settings) -> Driver:
    """The storage driver the settings name."""
    if settings.storage.kind == "memory":
        return MemoryDriver()
    if settings.storage.kind == "s3":
        from storage.drivers.s3 import S3Driver

        s3 = settings.storage.s3
        assert s3.bucket is not None
        return S3Driver(
            s3.bucket, prefix=s3.prefix, endpoint=s3.endpoint, region=s3.region, max_connections=s3.max_connections
        )
    return LocalDriver(settings.storage_root)


def create_app(settings: Settings, *, metadata: Metadata | None = None, driver: Driver | None = None) -> Starlette:
    """The registry app; `index` and `driver` default to those the settings describe.

    The index is opened and closed by the app's lifespan.
    """
    metadata = metadata or open_metadata(settings.index_url)
    driver = driver or make_driver(settings)
    registry = Registry(
        metadata,
        driver,
        delete_enabled=settings.storage.delete_enabled,
        manifest_max_bytes=settings.manifests.max_bytes,
        manifest_cache_bytes=settings.manifests.cache_bytes,
        redirect_expiry_s=settings.storage.s3.redirect_expiry_s if settings.storage.s3.redirect else None,
    )

    collector = Collector.configured(metadata, driver, settings)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await metadata.open()
        interval = parse_duration(settings.gc.interval)
        schedule = asyncio.create_task(collect_every(collector, interval)) if interval else None
        try:
            yield
        finally:
            if schedule is not None:
                schedule.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await schedule
            await metadata.close()

    auth = build_auth(settings, metadata)
    app = Starlette(
        routes=_routes(settings),
        middleware=[Middleware(Edge, access_log=settings.log.access)],
        exception_handlers={
            RegistryError: _registry_error,
            HTTPException: _http_error,
            BackendUnavailable: _backend_unavailable,
            ClientDisconnect: _body_ended,
            Exception: _unexpected_error,
        },
        lifespan=lifespan,
    )
    app.state.registry = registry
    app.state.collector = collector
    app.state.gate = auth.gate
    app.state.token_server = auth.token_server
    app.state.settings = settings
    return app
