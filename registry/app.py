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
from starlette.routing import BaseRoute, Route

from registry.auth.access import CATALOG, Access, access
from registry.auth.setup import build_auth
from registry.config import Settings, parse_duration
from registry.edge import Edge, printable
from registry.errors import BlobUploadInvalid, EndpointUnknown, RegistryError, Unsupported, translate
from registry.events import Webhooks
from registry.factory import make_driver, make_metadata, make_registry
from registry.gc import Collector, collect_every
from registry.handlers import base, blobs, listings, manifests, search, token, uploads
from registry.metrics.counting import count_backend_error
from registry.metrics.families import Metrics
from registry.metrics.setup import metrics_middleware, metrics_routes, metrics_work
from registry.reviews import ReviewCollector
from registry.rule_syntax import DELETE, PULL, PUSH
from storage.drivers import Driver
from storage.errors import BackendUnavailable, StorageError
from storage.metadata import Metadata

log = logging.getLogger("registry")


Needs = Callable[[Request], list[Access]]


def _needs(*actions: str) -> Needs:
    """The access a repository route needs: `actions` on the repository in its path."""

    def needs(request: Request) -> list[Access]:
        return [access("repository", base.repository(request), actions)]

    return needs


def _nothing(request: Request) -> list[Access]:
    return []


def _catalog(request: Request) -> list[Access]:
    return [CATALOG]


Endpoint = Callable[[Request], Awaitable[Response]]


def _guarded(endpoint: Endpoint, needs: Needs) -> Endpoint:
    """`endpoint`, called only once the gate admits the caller (the principal is in request.state)."""

    async def guarded(request: Request) -> Response:
        request.state.principal = await request.app.state.gate.admit(request, needs(request))
        return await endpoint(request)

    return guarded


def _identified(endpoint: Endpoint) -> Endpoint:
    """`endpoint`, called with the caller known (request.state.principal), anonymous when no
    credentials came: for routes whose answer depends on who asks but that need no access."""

    async def identified(request: Request) -> Response:
        request.state.principal = await request.app.state.gate.identify(request)
        return await endpoint(request)

    return identified


def _route(path: str, method: str, endpoint: Endpoint, needs: Needs | None = None) -> Route:
    """The route of `method` on `path`, named after its handler; behind the gate unless `needs` is None."""
    handler = endpoint if needs is None else _guarded(endpoint, needs)
    return Route(path, handler, methods=[method], name=endpoint.__name__)


def _routes(settings: Settings) -> list[Route]:
    """Every route, by resource. The paths built for `Location` headers (registry/urls.py) are those of
    the routes `get_blob`, `get_manifest` and `upload_status`.

    No two routes match the same method and path, so their order changes no answer, only the speed:
    the router tries the routes in order, a regex match each. So the resources come hottest first
    (blobs, manifests, then uploads) and the rest after. Measured in process on a busy 2-core machine
    (a manifest GET by tag through the whole app, disk and SQLite; three runs): 22.5-24.9 µs a request
    in this order, 21.4-28.6 with every hot route first (as before), 26.3-37.6 with the groups in URL
    order (base, blobs, uploads, manifests...), where the manifest GET is tenth. Over HTTP (granian,
    one worker, wrk with 16 connections) the medians were 20,500, 21,300 and 18,700 requests/s, in
    that order, within the noise of the machine."""
    register_url_convertor("repository", base.RepositoryConvertor())
    name = "/v2/{name:repository}"
    pull, push, delete = _needs(PULL), _needs(PULL, PUSH), _needs(DELETE)
    routes = [
        # blobs (GET serves HEAD too)
        _route(f"{name}/blobs/{{digest}}", "GET", blobs.get_blob, pull),
        _route(f"{name}/blobs/{{digest}}", "DELETE", blobs.delete_blob, delete),
        # manifests
        _route(f"{name}/manifests/{{reference}}", "GET", manifests.get_manifest, pull),
        _route(f"{name}/manifests/{{reference}}", "PUT", manifests.put_manifest, push),
        _route(f"{name}/manifests/{{reference}}", "DELETE", manifests.delete_manifest, delete),
        # uploads
        _route(f"{name}/blobs/uploads/", "POST", uploads.start_upload, push),
        _route(f"{name}/blobs/uploads", "POST", uploads.start_upload, push),
        _route(f"{name}/blobs/uploads/{{upload_id}}", "PATCH", uploads.patch_upload, push),
        _route(f"{name}/blobs/uploads/{{upload_id}}", "PUT", uploads.put_upload, push),
        _route(f"{name}/blobs/uploads/{{upload_id}}", "GET", uploads.upload_status, push),
        _route(f"{name}/blobs/uploads/{{upload_id}}", "DELETE", uploads.cancel_upload, push),
        # base
        _route("/v2/", "GET", base.version_check, _nothing),
        # tags and referrers
        _route(f"{name}/tags/list", "GET", listings.list_tags, pull),
        _route(f"{name}/referrers/{{digest}}", "GET", listings.referrers, pull),
        # catalog
        _route("/v2/_catalog", "GET", listings.catalog, _catalog),
        # docker search (the registry API v1 endpoints the engine calls for it)
        _route("/v1/_ping", "GET", search.ping),
        Route("/v1/search", _identified(search.search), methods=["GET"], name="search"),
    ]
    if settings.auth.mode == "token":
        routes += [
            _route(settings.auth.token.path, "GET", token.get_token),
            _route(settings.auth.token.path, "POST", token.post_token),
        ]
    routes.append(_route("/healthz", "GET", base.health))
    return routes


def registry_error(request: Request, exc: Exception) -> RegistryError:
    """The RegistryError the client gets for `exc`, met while serving `request`: a RegistryError as it
    is, the router's 404 and 405 as EndpointUnknown and Unsupported, a body that ended early as
    BlobUploadInvalid, a storage exception as `registry.errors.translate` says, anything else as a
    500 UNKNOWN. Logs what the operator should see, and counts the index's and storage's errors."""
    count_backend_error(request, exc)
    if isinstance(exc, RegistryError):
        return exc
    method, path = request.method, request.scope["path"]
    if isinstance(exc, HTTPException):
        if exc.status_code == 405:
            return Unsupported({"method": method}, message="method not allowed here")
        if exc.status_code == 404:
            return EndpointUnknown({"path": path[:300]})
        return RegistryError(message=str(exc.detail), status=exc.status_code)
    if isinstance(exc, ClientDisconnect):
        # The client went away, or its body could not be parsed (granian and uvicorn report both as a
        # disconnect). Not a server error: one INFO line, and a 400 for a client still listening.
        log.info("%s %s: the client went away or sent a malformed body", printable(method), printable(path))
        return BlobUploadInvalid({"reason": "the request body ended before it was complete, or was malformed"})
    if isinstance(exc, StorageError):
        error = translate(exc)
        if error is not None:
            log.warning("%s %s: %s", printable(method), printable(path), exc)
            return error
    log.error("unexpected error on %s %s", printable(method), printable(path), exc_info=exc)
    return RegistryError(message="internal server error")


async def _error(request: Request, exc: Exception) -> Response:
    """The one exception handler: every error a request meets, as its RegistryError's body."""
    return base.error_response(registry_error(request, exc))


def create_app(settings: Settings, *, metadata: Metadata | None = None, driver: Driver | None = None) -> Starlette:
    """The registry app; `metadata` and `driver` default to those the settings describe.

    The metadata store is opened and closed by the app's lifespan.
    """
    metadata = metadata or make_metadata(settings)
    driver = driver or make_driver(settings)
    metrics = Metrics()
    registry = make_registry(settings, metadata, driver, metrics.upstreams)

    collector = Collector.configured(metadata, driver, settings)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await metadata.open()
        # Read-only mode changes nothing stored: no collections, no pull times of cached content.
        interval = 0.0 if settings.maintenance.read_only else parse_duration(settings.gc.interval)
        tasks = [asyncio.create_task(collect_every(collector, interval, metrics.gc_run))] if interval else []
        if settings.gc.reviews and not settings.maintenance.read_only:  # every worker: reviews are claimed
            reviewer = ReviewCollector.configured(metadata, driver, settings)
            tasks.append(asyncio.create_task(reviewer.run_forever(parse_duration(settings.gc.poll))))
        tasks += [asyncio.create_task(work) for work in metrics_work(settings, metrics, metadata)]
        if registry.pull_through is not None and not settings.maintenance.read_only:
            tasks.append(asyncio.create_task(registry.pull_through.pulls.flush_every()))
        webhooks = None if registry.events is None else Webhooks(registry.events, metadata.events, metadata.leases)
        if webhooks is not None:
            webhooks.start()
        try:
            yield
        finally:
            if webhooks is not None:
                await webhooks.stop()
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await registry.close()
            await metadata.close()

    auth = build_auth(settings, metadata)
    routes: list[BaseRoute] = [*_routes(settings), *metrics_routes(settings, metrics)]
    if settings.ui.enabled:
        # Imported here: Jinja2 and the templates cost memory only where the UI is on.
        from registry.ui import ui_routes

        routes += ui_routes(settings, registry, auth.gate, registry_error)
    app = Starlette(
        routes=routes,
        middleware=[*metrics_middleware(settings, metrics), Middleware(Edge, access_log=settings.log.access)],
        # One handler for every error. Starlette calls it for the classes named here; for any other
        # exception (a storage one without a translation included) through ServerErrorMiddleware, which
        # then re-raises it for the server to log.
        exception_handlers={
            RegistryError: _error,
            HTTPException: _error,
            ClientDisconnect: _error,
            BackendUnavailable: _error,
            Exception: _error,
        },
        lifespan=lifespan,
    )
    app.state.registry = registry
    app.state.collector = collector
    app.state.gate = auth.gate
    app.state.token_server = auth.token_server
    app.state.settings = settings
    app.state.metrics = metrics
    return app
