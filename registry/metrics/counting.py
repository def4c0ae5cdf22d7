"""Counting at the edge: each request's route template, method, status, bytes and duration, how a
pull-through cache served it, and, from the error handler, the index and storage errors it met."""

from __future__ import annotations

import re
import time
from types import TracebackType

from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from registry.errors import RegistryError
from registry.metrics.families import Metrics
from storage.errors import BackendUnavailable

OTHER = "other"  # the route of a request no route matched
_CONVERTOR = re.compile(r"\{(\w+):\w+\}")
_CACHE_HEADER = b"x-registry-cache"
STATE_KEY = "metrics"  # where in the request's state Counted leaves its Metrics


class Counted:
    """ASGI middleware counting every HTTP request into `metrics` (outermost, so that what the edge
    refuses before routing counts too). The route label is the matched route's path template with
    its convertors dropped (`/v2/{name}/blobs/{digest}`), the mount's path before it, or `other`."""

    def __init__(self, app: ASGIApp, metrics: Metrics):
        self.app, self.metrics = app, metrics
        self._templates: dict[tuple[int, str], str] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        root_path = scope.get("root_path", "")
        scope.setdefault("state", {})[STATE_KEY] = self.metrics
        status, received, sent = 0, 0, 0
        cache: str | None = None

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
            return message

        async def counted_send(message: Message) -> None:
            nonlocal status, sent, cache
            if message["type"] == "http.response.start":
                status = message["status"]
                for name, value in message.get("headers", ()):
                    if name == _CACHE_HEADER:
                        cache = value.decode("latin-1")
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        self.metrics.in_progress.inc()
        try:
            await self.app(scope, counted_receive, counted_send)
        finally:
            self.metrics.in_progress.dec()
            route = self._template(scope, root_path)
            seconds = time.perf_counter() - started
            self.metrics.request(route, scope["method"], status or 500, received, sent, seconds, cache)

    def _template(self, scope: Scope, root_path: str) -> str:
        route = scope.get("route")
        if not isinstance(route, Route):
            return OTHER
        mount = scope.get("root_path", "")[len(root_path) :]
        key = (id(route), mount)
        template = self._templates.get(key)
        if template is None:
            template = self._templates[key] = mount + _CONVERTOR.sub(r"{\1}", route.path)
        return template


def _backend(traceback: TracebackType | None) -> str | None:
    """`index` or `storage`: which part of storage/ raised, by the innermost frame there; None when
    the exception did not come from there."""
    backend = None
    while traceback is not None:
        module = str(traceback.tb_frame.f_globals.get("__name__", ""))
        if module.startswith("storage.metadata"):
            backend = "index"
        elif module.startswith("storage."):
            backend = "storage"
        traceback = traceback.tb_next
    return backend


def count_backend_error(request: Request, exc: Exception) -> None:
    """Count `exc`, met while serving `request`, as an error of the index (the metadata database) or of
    storage (a driver) when it was raised there, or when it is the RegistryError of an unavailable
    backend; nothing for other errors, or when the request was not counted (metrics off)."""
    metrics = request.scope.get("state", {}).get(STATE_KEY)
    if not isinstance(metrics, Metrics) or isinstance(exc, HTTPException | ClientDisconnect):
        return  # metrics off; the router's 404 or 405, or a client gone (maybe while a driver read its body)
    if isinstance(exc, RegistryError):
        # A client error, unless it stands for an unavailable backend (registry/errors.py translate).
        if not isinstance(exc.__context__, BackendUnavailable):
            return
        exc = exc.__context__
    backend = _backend(exc.__traceback__)
    if backend is not None:
        metrics.backend_error(backend, type(exc).__name__)
