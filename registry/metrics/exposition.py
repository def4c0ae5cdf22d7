"""/metrics in the Prometheus text format: of one app, or merged over every worker of `registry serve`
from the directory they write to; on the API port, or on a listener of its own in the main process.
A scrape may have to show a bearer token."""

from __future__ import annotations

import fcntl
import glob
import hmac
import logging
import os
import shutil
import socket
import tempfile
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response

from registry.config import MetricsSettings
from registry.errors import Unauthorized
from registry.metrics.merge import MergedFiles

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

log = logging.getLogger("registry.metrics")

DIRECTORY_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
CHALLENGE = 'Bearer realm="metrics"'


_PREFIX = "registry-metrics-"
_LOCK = ".lock"  # held (flock) by the serving process and its workers while they use the directory


def prepare_directory() -> tuple[str, int]:
    """A new, empty directory for the workers' metric files, named in PROMETHEUS_MULTIPROC_DIR for
    the processes started from now on, and the descriptor of the lock held on it (the workers inherit
    it). It is a temporary directory (usually memory-backed, and per machine, unlike the data directory
    replicas may share): every start counts from zero. Directories that servers killed outright left
    behind (no process holds their lock) are removed first."""
    _sweep(tempfile.gettempdir())
    directory = tempfile.mkdtemp(prefix=_PREFIX)
    lock = os.open(os.path.join(directory, _LOCK), os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(lock, fcntl.LOCK_EX)
    os.environ[DIRECTORY_VARIABLE] = directory
    return directory, lock


def _sweep(parent: str) -> None:
    """Remove the metric directories under `parent` whose lock no process holds."""
    for directory in glob.glob(os.path.join(parent, _PREFIX + "*")):
        try:
            lock = os.open(os.path.join(directory, _LOCK), os.O_RDWR)
        except OSError:
            continue  # not ours, or being made
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            continue  # in use
        else:
            shutil.rmtree(directory, ignore_errors=True)
        finally:
            os.close(lock)


def remove_directory(directory: str, lock: int) -> None:
    shutil.rmtree(directory, ignore_errors=True)
    os.close(lock)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _bury_dead(directory: str) -> None:
    """Drop the `live*` gauge files of processes that are gone (a worker the server replaced)."""
    from prometheus_client import multiprocess

    for path in glob.glob(os.path.join(directory, "gauge_live*_*.db")):
        pid = os.path.basename(path).rsplit("_", 1)[1].removesuffix(".db")
        if pid.isdigit() and not _alive(int(pid)):
            multiprocess.mark_process_dead(int(pid), directory)  # type: ignore[no-untyped-call]


class Exposition:
    """The text /metrics shows: `own` (an app's registry) when `directory` is None, else every
    process's files in `directory` merged (registry/metrics/merge.py). Thread-safe."""

    def __init__(self, own: CollectorRegistry | None, directory: str | None):
        assert own is not None or directory is not None
        self.own, self.directory = own, directory
        self._merged = None if directory is None else MergedFiles(directory)
        self._lock = threading.Lock()

    def render(self) -> bytes:
        if self._merged is None:
            from prometheus_client import generate_latest

            assert self.own is not None
            return generate_latest(self.own)
        with self._lock:
            _bury_dead(self._merged.directory)
            return self._merged.render()


def scrape_token(settings: MetricsSettings) -> str | None:
    """The bearer token a scrape must show (`metrics.token`, or the first line of `metrics.token_file`),
    or None."""
    if settings.token_file is not None:
        with open(settings.token_file) as f:
            return f.readline().strip() or None
    return settings.token or None


def authorized(header: str | None, token: str | None) -> bool:
    """Whether an `Authorization` header value shows `token` (always, without a token)."""
    if token is None:
        return True
    if header is None or not header.startswith("Bearer "):
        return False
    return hmac.compare_digest(header.removeprefix("Bearer ").strip().encode(), token.encode())


def metrics_endpoint(exposition: Exposition, token: str | None) -> Callable[[Request], Awaitable[Response]]:
    """The Starlette endpoint of GET /metrics: 401 UNAUTHORIZED without the token."""

    async def metrics(request: Request) -> Response:
        if not authorized(request.headers.get("authorization"), token):
            raise Unauthorized({"reason": "metrics need a bearer token"}, headers={"WWW-Authenticate": CHALLENGE})
        return Response(exposition.render(), media_type=CONTENT_TYPE)

    return metrics


class _Handler(BaseHTTPRequestHandler):
    exposition: Exposition
    token: str | None

    def do_GET(self) -> None:
        if self.path.split("?", 1)[0] != "/metrics":
            self._answer(404, b"not found: try /metrics\n", "text/plain")
        elif not authorized(self.headers.get("Authorization"), self.token):
            self._answer(401, b"metrics need a bearer token\n", "text/plain", {"WWW-Authenticate": CHALLENGE})
        else:
            self._answer(200, self.exposition.render(), CONTENT_TYPE)

    def _answer(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        log.debug("metrics listener: " + format, *args)


class _IPv6Server(ThreadingHTTPServer):
    address_family = socket.AF_INET6


def serve_listener(listen: str, exposition: Exposition, token: str | None) -> ThreadingHTTPServer:
    """Serve GET /metrics on `listen` (host:port, or [IPv6]:port) from a daemon thread of this process;
    the caller shuts the returned server down."""
    host, _, port = listen.rpartition(":")
    handler = type("MetricsHandler", (_Handler,), {"exposition": exposition, "token": token})
    server_class = _IPv6Server if host.startswith("[") else ThreadingHTTPServer
    server = server_class((host.strip("[]"), int(port)), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="metrics-listener", daemon=True).start()
    return server


@contextmanager
def for_workers(settings: MetricsSettings) -> Iterator[None]:
    """For `registry serve`, around its workers' lifetime, with metrics on: a fresh directory for their
    values (`prepare_directory`; call this before anything imports prometheus_client, so that the
    workers, forked or spawned, write there), and the listener of `metrics.listen` in this process,
    merging every worker's files. Both are gone afterwards, and the variable as it was."""
    if not settings.enabled:
        yield
        return
    before = os.environ.get(DIRECTORY_VARIABLE)
    directory, lock = prepare_directory()
    log.info("the workers' metrics are kept in %s", directory)
    listener = None
    try:
        if settings.listen is not None:
            listener = serve_listener(settings.listen, Exposition(None, directory), scrape_token(settings))
            log.info("metrics on http://%s/metrics", settings.listen)
        yield
    finally:
        if listener is not None:
            listener.shutdown()
            listener.server_close()
        remove_directory(directory, lock)
        if before is None:
            os.environ.pop(DIRECTORY_VARIABLE, None)
        else:
            os.environ[DIRECTORY_VARIABLE] = before
