"""A webhook receiver served over real HTTP (aiohttp.web) in the test's event loop: it records each
envelope of events it takes, can answer with an error status, and can go down (its port closed) and
come back on the same port."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from typing import Any

from aiohttp import web

from registry.config import EventEndpointSettings, EventIgnoreSettings, Settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Receiver:
    """Records POSTed envelopes (`envelopes`: each with its headers) while up; answers `status`."""

    def __init__(self, port: int | None = None, status: int = 200):
        self.port = port or free_port()
        self.status = status
        self.envelopes: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.attempts = 0  # POSTs received, whatever the answer
        self.delay_s = 0.0  # how long it takes to answer
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    @property
    def events(self) -> list[dict[str, Any]]:
        """Every event taken, in the order received."""
        return [event for envelope in self.envelopes for event in envelope["events"]]

    async def _hook(self, request: web.Request) -> web.Response:
        self.attempts += 1
        body = await request.read()
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
            return web.Response(status=self.status)  # its answer comes too late to count: nothing kept
        if not 200 <= self.status < 300:
            return web.Response(status=self.status, text="receiver says no")
        self.envelopes.append(json.loads(body))
        self.headers.append(dict(request.headers))
        return web.Response(status=self.status)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
        await site.start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Receiver:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def wait_for(self, count: int, timeout_s: float = 15.0) -> list[dict[str, Any]]:
        """The events once at least `count` were taken; fails after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while len(self.events) < count:
            assert time.monotonic() < deadline, f"{len(self.events)} events of {count} arrived: {self.events}"
            await asyncio.sleep(0.02)
        return self.events


class ReceiverThread:
    """The same kind of receiver for tests that do not run an event loop (the e2e tests): a stdlib HTTP
    server on its own thread, answering every POST with `status` and recording its envelope if 2xx."""

    def __init__(self) -> None:
        import http.server
        import threading

        self.envelopes: list[dict[str, Any]] = []
        self.content_types: list[str] = []
        self.status = 200  # the answer; envelopes are recorded only with a 2xx
        self.attempts = 0
        lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                status = receiver.status
                with lock:
                    receiver.attempts += 1
                    if 200 <= status < 300:
                        receiver.envelopes.append(json.loads(body))
                        receiver.content_types.append(self.headers.get("Content-Type", ""))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    @property
    def events(self) -> list[dict[str, Any]]:
        return [event for envelope in list(self.envelopes) for event in envelope["events"]]

    def wait_until(self, done: Any, timeout_s: float = 30.0) -> list[dict[str, Any]]:
        """The events once `done(events)` is true; fails after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while not done(self.events):
            assert time.monotonic() < deadline, f"the events never satisfied the test: {self.events}"
            time.sleep(0.05)
        return self.events

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def hooked(
    settings: Settings, *receivers: Receiver | ReceiverThread, pulls: bool = False, **ignore: list[str]
) -> Settings:
    """`settings` with an endpoint `hook<i>` per receiver (an Authorization header, quick retries), the first
    ignoring `ignore` (actions, media_types); pulls reported when `pulls`."""
    settings.events.pulls = pulls
    settings.events.endpoints = [
        EventEndpointSettings(
            name=f"hook{i}",
            url=r.url,
            headers={"Authorization": ["Bearer secret"]},
            backoff="0.05s",
            backoff_max="0.2s",
            ignore=EventIgnoreSettings(**ignore) if i == 0 else EventIgnoreSettings(),
        )
        for i, r in enumerate(receivers)
    ]
    return settings
