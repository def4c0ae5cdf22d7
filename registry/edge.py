"""The edge of every request: the API version header on each answer and one access-log line."""

from __future__ import annotations

import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("registry.access")

_VERSION_HEADER = (b"docker-distribution-api-version", b"registry/2.0")


class Edge:
    """ASGI middleware: stamps `Docker-Distribution-API-Version` and logs
    `METHOD PATH STATUS BYTES DURATIONms` per request (no query string: it may hold secrets)."""

    def __init__(self, app: ASGIApp, access_log: bool = True):
        self.app, self.access_log = app, access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status, sent = 0, 0

        async def edge_send(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), _VERSION_HEADER]
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, edge_send)
        finally:
            if self.access_log:
                client = scope.get("client") or ("-", 0)
                log.info(
                    "%s %s %s %d %d %.1fms",
                    client[0],
                    scope["method"],
                    scope["path"],
                    status or 500,
                    sent,
                    (time.perf_counter() - started) * 1000,
                )
