"""A small upstream registry for the pull-through cache's in-process tests: real HTTP (aiohttp.web) on a free
127.0.0.1 port in the test's event loop, serving manifests and blobs from memory, with Basic or token-flow auth,
blob redirects to another such server, and the faults a cache must survive (error statuses, stalls, wrong
bytes, bodies cut short, being down). It records every request it receives.

    async with FakeUpstream() as upstream, cache_app(tmp_path, {"prefix": "dist", "url": upstream.url}) as (_, client):
        upstream.add_image("team/app", image, tag="1")
        r = await client.get("/v2/dist/team/app/manifests/1")
        assert upstream.count("GET", "/v2/team/app/manifests/1") == 1

Also here: `cache_app`, an app of the registry with the `proxy` settings given (disk and SQLite), and `raw_get`,
a client of an app at the ASGI level that sees how far a body got and can go away mid-body (httpx's ASGI
transport buffers whole bodies and cannot).
"""

from __future__ import annotations

import asyncio
import base64
import re
import secrets
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import httpx
from aiohttp import web
from starlette.applications import Starlette

from registry.config import Settings, load_settings
from registry.layout import blob_key
from storage.drivers import NotFound
from tests.support.app import running_app
from tests.support.content import Image, digest_of

SERVICE = "fake-upstream"
_MANIFEST = re.compile(r"/v2/(?P<name>.+)/manifests/(?P<reference>[^/]+)")
_BLOB = re.compile(r"/v2/(?P<name>.+)/blobs/(?P<digest>[^/]+)")
_CDN = re.compile(r"/cdn/(?P<digest>[^/]+)")
_SCOPE = re.compile(r"repository:(?P<name>[^:]+):(?P<actions>[a-z,*]+)")


@dataclass
class Seen:
    """One request the upstream received, and its answer's status (0 until answered, and for ever when the
    client went away first)."""

    method: str
    path: str
    query: str  # the raw query string
    authorization: str | None
    status: int = 0


@dataclass(repr=False)
class FakeUpstream:
    """An upstream registry (or, behind another's redirects, a blob CDN) on 127.0.0.1.

    `auth` is "none", "basic" (HTTP Basic with `username`/`password` on every request) or "token" (a Bearer
    challenge naming this server's `/token`, which wants those credentials as Basic and hands out tokens good
    for `token_expires_in` seconds, for one repository's pull each).

    The knobs a test turns (all take effect on the next request):
    - `status`: answer every `/v2/<name>/...` request with this status instead (500, 503, 429...);
    - `stall_s`: wait this long before answering a `/v2/<name>/...` request;
    - `piece_bytes`, `piece_pause_s`: blob bodies go out in pieces of this size, this far apart;
    - `hold`: when set, blob bodies stop after their first piece until the event is set;
    - `wrong`: digest -> the bytes served under that digest instead (a blob's or a manifest's);
    - `short`: digests whose blob body breaks off halfway (its Content-Length stays the whole size);
    - `redirect_to`: blob GETs and HEADs answer 307 to that server's `/cdn/<digest>` (see `redirect_blobs_to`).
    """

    auth: str = "none"
    username: str | None = None
    password: str | None = None
    token_expires_in: int = 300
    status: int | None = None
    stall_s: float = 0.0
    piece_bytes: int = 64 << 10
    piece_pause_s: float = 0.0
    hold: asyncio.Event | None = None
    wrong: dict[str, bytes] = field(default_factory=dict)
    short: set[str] = field(default_factory=set)
    redirect_to: FakeUpstream | None = None
    blobs: dict[str, bytes] = field(default_factory=dict)
    manifests: dict[str, tuple[bytes, str]] = field(default_factory=dict)  # digest -> (bytes, media type)
    tags: dict[tuple[str, str], str] = field(default_factory=dict)  # (repository, tag) -> digest
    names: set[str] = field(default_factory=set)  # the repositories it has
    requests: list[Seen] = field(default_factory=list)
    port: int = 0
    _tokens: dict[str, tuple[str, float]] = field(default_factory=dict)  # token -> (repository, expires at)
    _runner: web.AppRunner | None = None

    def __repr__(self) -> str:
        return f"FakeUpstream({self.url})"

    # -- running ------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> Self:
        """Serve (again on the same port after `stop`)."""
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=0.1, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        """Stop serving: connections to its port are refused until `start`."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        if self.hold is not None:
            self.hold.set()
        await self.stop()

    # -- content -----------------------------------------------------------------------------------

    def add_blob(self, repository: str, data: bytes) -> str:
        self.names.add(repository)
        self.blobs[digest_of(data)] = data
        return digest_of(data)

    def add_manifest(self, repository: str, body: bytes, media_type: str, tag: str | None = None) -> str:
        self.names.add(repository)
        digest = digest_of(body)
        self.manifests[digest] = (body, media_type)
        if tag is not None:
            self.tags[(repository, tag)] = digest
        return digest

    def add_image(self, repository: str, image: Image, tag: str | None = None) -> str:
        """Its config, layers and manifest (under `tag` too, if given); returns the manifest's digest."""
        for blob in [image.config, *image.layers]:
            self.add_blob(repository, blob)
        return self.add_manifest(repository, image.manifest, image.media_type, tag)

    def redirect_blobs_to(self, cdn: FakeUpstream) -> None:
        """Answer blob GETs and HEADs with a 307 to `cdn`, which serves the same blobs (under `/cdn/`)."""
        self.redirect_to = cdn
        cdn.blobs = self.blobs

    # -- what it saw -------------------------------------------------------------------------------

    def count(self, method: str, path: str) -> int:
        """How many `method` requests of exactly `path` it received."""
        return sum(1 for r in self.requests if r.method == method and r.path == path)

    def count_kind(self, method: str, kind: str) -> int:
        """How many `method` requests of a kind (manifests, blobs, token, cdn) it received."""
        return sum(1 for r in self.requests if r.method == method and _kind(r.path) == kind)

    # -- serving -----------------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        seen = Seen(request.method, request.path, request.query_string, request.headers.get("Authorization"))
        self.requests.append(seen)
        response = await self._answer(request)
        seen.status = response.status
        return response

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        if path == "/token":
            return self._token(request)
        if (cdn := _CDN.fullmatch(path)) is not None:
            return await self._blob(request, cdn["digest"], "/cdn")
        if not path.startswith("/v2/"):
            return web.Response(status=404)
        name = _MANIFEST.fullmatch(path) or _BLOB.fullmatch(path)
        refused = self._refuse(request, name["name"] if name else "")
        if refused is not None:
            return refused
        if path == "/v2/":
            return web.json_response({})
        if self.stall_s:
            await asyncio.sleep(self.stall_s)
        if self.status is not None:
            return web.json_response(
                {"errors": [{"code": "UNAVAILABLE", "message": "told to fail"}]}, status=self.status
            )
        if (m := _MANIFEST.fullmatch(path)) is not None:
            return self._manifest(request, m["name"], m["reference"])
        if (b := _BLOB.fullmatch(path)) is not None and b["name"] in self.names:
            if self.redirect_to is not None:
                location = f"{self.redirect_to.url}/cdn/{b['digest']}?signature=abc"
                return web.Response(status=307, headers={"Location": location})
            return await self._blob(request, b["digest"], "/v2")
        return _missing("BLOB_UNKNOWN")

    def _refuse(self, request: web.Request, name: str) -> web.Response | None:
        """The 401 for a request without the credentials `auth` wants, else None."""
        given = request.headers.get("Authorization")
        if self.auth == "basic":
            if given == self._basic():
                return None
            return web.Response(status=401, headers={"WWW-Authenticate": f'Basic realm="{SERVICE}"'})
        if self.auth == "token":
            token = self._tokens.get((given or "").removeprefix("Bearer "))
            if given and given.startswith("Bearer ") and token is not None:
                repository, expires_at = token
                if expires_at > time.monotonic() and (name in ("", repository)):
                    return None
            scope = f',scope="repository:{name}:pull"' if name else ""
            challenge = f'Bearer realm="{self.url}/token",service="{SERVICE}"{scope}'
            return web.Response(status=401, headers={"WWW-Authenticate": challenge})
        return None

    def _basic(self) -> str:
        return "Basic " + base64.b64encode(f"{self.username}:{self.password}".encode()).decode()

    def _token(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != self._basic() or request.query.get("service") != SERVICE:
            return web.json_response({"details": "incorrect username or password"}, status=401)
        scope = _SCOPE.fullmatch(request.query.get("scope", ""))
        if scope is None:
            return web.json_response({"details": "no scope"}, status=400)
        token = secrets.token_hex(16)
        self._tokens[token] = (scope["name"], time.monotonic() + self.token_expires_in)
        return web.json_response({"token": token, "expires_in": self.token_expires_in})

    def _manifest(self, request: web.Request, name: str, reference: str) -> web.Response:
        digest = reference if reference.startswith("sha256:") else self.tags.get((name, reference))
        if name not in self.names or digest is None or digest not in self.manifests:
            return _missing("MANIFEST_UNKNOWN")
        body, media_type = self.manifests[digest]
        body = self.wrong.get(digest, body)
        headers = {"Content-Type": media_type, "Docker-Content-Digest": digest}
        return web.Response(body=body, headers=headers)

    async def _blob(self, request: web.Request, digest: str, where: str) -> web.StreamResponse:
        if where == "/cdn" and self.redirect_to is not None:  # a CDN that sends it on again
            return web.Response(status=307, headers={"Location": f"{self.redirect_to.url}/cdn/{digest}"})
        if digest not in self.blobs:
            return _missing("BLOB_UNKNOWN")
        data = self.wrong.get(digest, self.blobs[digest])
        headers = {"Docker-Content-Digest": digest, "Content-Type": "application/octet-stream"}
        if request.method == "HEAD":
            return web.Response(headers=headers | {"Content-Length": str(len(data))})
        response = web.StreamResponse(headers=headers)
        response.content_length = len(data)
        await response.prepare(request)
        end = len(data) // 2 if digest in self.short else len(data)
        for start in range(0, end, self.piece_bytes):
            if start and self.hold is not None:
                await self.hold.wait()
            if start and self.piece_pause_s:
                await asyncio.sleep(self.piece_pause_s)
            await response.write(data[start : min(start + self.piece_bytes, end)])
        if end < len(data):
            assert request.transport is not None
            request.transport.close()  # the body breaks off
        return response


def _missing(code: str) -> web.Response:
    return web.json_response({"errors": [{"code": code, "message": "not here"}]}, status=404)


def _kind(path: str) -> str:
    if path == "/token":
        return "token"
    if path.startswith("/cdn/"):
        return "cdn"
    if _MANIFEST.fullmatch(path):
        return "manifests"
    if _BLOB.fullmatch(path):
        return "blobs"
    return "other"


# -- the cache under test ---------------------------------------------------------------------------------


def cache_settings(directory: Path, *upstreams: Mapping[str, Any], **proxy: Any) -> Settings:
    """A registry on disk and SQLite under `directory / "data"` (no access log) caching `upstreams` (each a
    mapping as under `proxy.upstreams` in YAML); `proxy` holds the section's other keys."""
    overrides = {
        "data_dir": str(directory / "data"),
        "log": {"access": False},
        "proxy": {"upstreams": [dict(u) for u in upstreams], **proxy},
    }
    return load_settings(env={}, overrides=overrides)


@asynccontextmanager
async def cache_app(
    directory: Path, *upstreams: Mapping[str, Any], **proxy: Any
) -> AsyncIterator[tuple[Starlette, httpx.AsyncClient]]:
    """An app of `cache_settings(directory, *upstreams, **proxy)`, its lifespan running, and a client of it."""
    async with running_app(cache_settings(directory, *upstreams, **proxy)) as pair:
        yield pair


@dataclass
class Received:
    """What a client of `raw_get` received."""

    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    complete: bool = False  # whether the app said the body ended (and so handed over all of it)
    error: BaseException | None = None  # what the app raised, if it did


async def blob_stored(app: Starlette, digest: str) -> bool:
    """Whether the bytes of blob `digest` are in the storage of `app`'s registry."""
    try:
        await app.state.registry.driver.stat(blob_key(digest))
    except NotFound:
        return False
    return True


async def raw_get(app: Starlette, path: str, *, leave_after: int | None = None) -> Received:
    """GET `path` of `app` at the ASGI level. With `leave_after`, the client goes away once it received that
    many pieces of the body: every later `send` raises ConnectionResetError, as a server's does for a closed
    connection, and `receive` answers `http.disconnect`."""
    received = Received()
    gone = asyncio.Event()
    pieces = 0
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"registry.test")],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 5000),
        "state": {},
    }
    requested = False

    async def receive() -> dict[str, Any]:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal pieces
        if gone.is_set():
            raise ConnectionResetError("the client went away")
        if message["type"] == "http.response.start":
            received.status = message["status"]
            received.headers = {k.decode().lower(): v.decode() for k, v in message["headers"]}
        elif message["type"] == "http.response.body":
            received.body += message.get("body", b"")
            if message.get("body"):
                pieces += 1
            if not message.get("more_body", False):
                received.complete = True
            if leave_after is not None and pieces >= leave_after:
                gone.set()

    try:
        await app(scope, receive, send)
    except Exception as e:
        received.error = e
    return received
