"""Upstream registries for the pull-through cache tests: CNCF Distribution 2.8 (`docker-registry serve`) and our
own registry in token mode, the requests each one served (read back from its access log), images to seed them
with, and a throttling TCP relay that makes an upstream slow.

    dist = Distribution(tmp / "dist", users={"puller": "secret"}).start()
    seed = dist.mark()
    ... pull through the cache ...
    assert dist.fetches(f"/v2/team/app/blobs/{digest}", since=seed) == 1

Distribution writes one Apache "combined" line per request to stdout (`"GET /v2/...?ns=x HTTP/1.1" 200 ...`,
the query string included); our registry writes `... INFO <logger> CLIENT METHOD PATH STATUS BYTES DURATIONms`
lines to stderr (no query string). Both write the line once the response has been handed to the connection, so
a client can be done before its line is there: `wait_for_requests` polls until the expected lines arrived.
"""

from __future__ import annotations

import atexit
import contextlib
import gzip
import io
import json
import re
import secrets
import shutil
import socket
import subprocess
import tarfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Generator, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import bcrypt
import httpx

from tests.support.clients import BUSYBOX, BUSYBOX_APPLETS
from tests.support.content import OCI_CONFIG, OCI_INDEX, OCI_LAYER, OCI_MANIFEST, digest_of
from tests.support.processes import HOST, ServerProcess, free_port, wait_for_port_free
from tests.support.server import RegistryServer, registry_command, start_server

DISTRIBUTION_BINARY = "docker-registry"  # Debian's package of the same name: Distribution 2.8
READY_TIMEOUT_S = 20.0
SETTLE_S = 0.3  # how long after the last expected access line a count is taken, so late extra lines show

# ---------------------------------------------------------------------------------------------- access logs


@dataclass(frozen=True)
class Request:
    """One request an upstream served, from its access log."""

    method: str
    path: str  # without the query string
    query: str  # "" when none (our registry never logs it)
    status: int


_COMBINED = re.compile(r'"(?P<method>[A-Z]+) (?P<target>\S+) HTTP/[\d.]+" (?P<status>\d{3}) ')
# `<time> INFO <logger> CLIENT METHOD PATH STATUS BYTES DURATIONms request_id=ID` (the logger's name is not part of
# the contract)
_OURS = re.compile(
    r" INFO \S+ \S+ (?P<method>[A-Z]+) (?P<target>/\S*) (?P<status>\d{3}) \d+ [\d.]+ms(?: request_id=\S+)?$"
)


def _parse(pattern: re.Pattern[str], text: str) -> list[Request]:
    found = []
    for line in text.splitlines():
        match = pattern.search(line)
        if match:
            path, _, query = match["target"].partition("?")
            found.append(Request(match["method"], path, query, int(match["status"])))
    return found


def distribution_requests(log: str) -> list[Request]:
    """The requests in Distribution's access log (Apache combined format lines; its other lines are skipped)."""
    return _parse(_COMBINED, log)


def registry_requests(log: str) -> list[Request]:
    """The requests in our registry's log (its access lines)."""
    return _parse(_OURS, log)


class AccessLog:
    """Request counting over a server's log: `mark()` now, count what came after it."""

    def __init__(self, read: Callable[[], str], parse: Callable[[str], list[Request]]):
        self._read, self._parse = read, parse

    def mark(self) -> int:
        """A position in the log: `since=` it counts only the requests logged after this call."""
        return len(self._read())

    def requests(self, since: int = 0) -> list[Request]:
        return self._parse(self._read()[since:])

    def count(self, method: str, path: str, since: int = 0, ok_only: bool = False) -> int:
        """How many `method path` requests (any query string) were logged since `since`; with `ok_only`, only
        those answered with a status below 400 (a 401 challenge before a token is not a fetch)."""
        return sum(
            1 for r in self.requests(since) if r.method == method and r.path == path and (not ok_only or r.status < 400)
        )

    def fetches(self, path: str, since: int = 0) -> int:
        """Successful GETs of `path` since `since`: how often the content was actually sent."""
        return self.count("GET", path, since, ok_only=True)

    def wait_for_requests(
        self, ready: Callable[[list[Request]], bool], since: int = 0, timeout: float = 5.0
    ) -> list[Request]:
        """The requests since `since` once `ready(requests)` holds (or after `timeout`), then SETTLE_S later,
        so that lines still on their way are in the answer too."""
        deadline = time.monotonic() + timeout
        while not ready(self.requests(since)) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(SETTLE_S)
        return self.requests(since)


# ---------------------------------------------------------------------------------------------- Distribution


def htpasswd(users: Mapping[str, str]) -> str:
    """An htpasswd file's text: one `user:bcrypt-hash` line per user (cost 4, the least bcrypt allows)."""
    lines = [f"{user}:{bcrypt.hashpw(pw.encode(), bcrypt.gensalt(rounds=4)).decode()}" for user, pw in users.items()]
    return "\n".join(lines) + "\n"


def distribution_available() -> bool:
    return shutil.which(DISTRIBUTION_BINARY) is not None


class Distribution(AccessLog):
    """CNCF Distribution 2.8 (`docker-registry serve CONFIG`) on a free 127.0.0.1 port, filesystem storage under
    `directory`, its output (app log on stderr, access log on stdout) in `directory/distribution.log`.

    With `users`, every request needs HTTP Basic credentials of one of them (htpasswd auth); `user`/`password`
    are the first one's. `stop()`/`kill()` then `start()` keep port and data. Supervised by a `ServerProcess`.
    """

    def __init__(self, directory: Path, users: Mapping[str, str] | None = None, port: int | None = None):
        self.directory = directory
        self.users = dict(users or {})
        self.port = port or free_port()
        self.config_path = directory / "config.yml"
        self.storage_dir = directory / "storage"
        self.process = ServerProcess(
            [DISTRIBUTION_BINARY, "serve", str(self.config_path)],
            log_path=directory / "distribution.log",
            name=f"Distribution on {self.host}",
        )
        super().__init__(self.process.log_text, distribution_requests)
        atexit.register(self.process.kill)  # a session that ended without the fixture's teardown

    @property
    def host(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    @property
    def user(self) -> str | None:
        return next(iter(self.users), None)

    @property
    def password(self) -> str | None:
        return self.users[self.user] if self.user is not None else None

    def config(self) -> dict[str, object]:
        """The Distribution configuration this server runs with."""
        config: dict[str, object] = {
            "version": 0.1,
            "log": {"level": "info", "accesslog": {"disabled": False}},
            "storage": {
                "filesystem": {"rootdirectory": str(self.storage_dir)},
                "delete": {"enabled": True},
                "maintenance": {"uploadpurging": {"enabled": False}},
            },
            "http": {"addr": self.host, "secret": secrets.token_hex(16)},
        }
        if self.users:
            path = self.directory / "htpasswd"
            path.write_text(htpasswd(self.users))
            config["auth"] = {"htpasswd": {"realm": "distribution", "path": str(path)}}
        return config

    def start(self) -> Self:
        """Write the config (JSON is YAML) and start; returns once `/v2/` answers (401 with users)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(json.dumps(self.config(), indent=2))
        self.process.start()
        self.process.wait_for_url(f"{self.url}/v2/", READY_TIMEOUT_S, status=401 if self.users else 200)
        return self

    def stop(self) -> None:
        self.process.stop(5.0)
        wait_for_port_free(self.port)

    def kill(self) -> None:
        self.process.kill()
        wait_for_port_free(self.port)

    @property
    def running(self) -> bool:
        return self.process.running

    def client(self, timeout: float = 60.0) -> httpx.Client:
        """An httpx client of this server, with the first user's credentials when it has users."""
        auth = ChallengeAuth(self.user, self.password) if self.user and self.password else None
        return httpx.Client(base_url=self.url, timeout=timeout, auth=auth)

    def log_tail(self, lines: int = 60) -> str:
        return self.process.log_tail(lines)


# ---------------------------------------------------------------------------------------------- our registry

TOKEN_CONFIG = """
auth:
  mode: token
  rules:
    - {who: "*", repository: "**", actions: ["*"]}
"""


def start_token_registry(directory: Path, users: Mapping[str, str]) -> RegistryServer:
    """Our registry in token mode (every signed-in user may do everything, anonymous callers nothing) with
    `users` added through `registry user add`, started under `directory` (tests/support/server.py)."""
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "config.yaml"
    config.write_text(TOKEN_CONFIG)
    for user, password in users.items():
        command = [*registry_command(), "user", "add", user, "--password-stdin"]
        command += ["--config", str(config), "--data-dir", str(directory / "data")]
        subprocess.run(command, input=password + "\n", text=True, check=True, capture_output=True)
    server = start_server(directory, config)
    server.mode = "token"
    return server


def registry_log(server: RegistryServer) -> AccessLog:
    """Request counting over the access lines of one of our registries."""
    return AccessLog(server.log_text, registry_requests)


class ChallengeAuth(httpx.Auth):
    """Credentials the way docker uses them: on a 401, Basic if the challenge says Basic, else the token flow
    of a Bearer challenge (GET realm?service=&scope= with Basic credentials, then the token). Each request
    gets its own challenge: simple, and no token outlives its scope."""

    requires_response_body = True

    def __init__(self, user: str, password: str):
        self.basic = httpx.BasicAuth(user, password)

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        response = yield request
        challenge = response.headers.get("WWW-Authenticate", "")
        if response.status_code != 401 or not challenge:
            return
        scheme, _, params = challenge.partition(" ")
        if scheme.lower() == "basic":
            yield next(self.basic.auth_flow(request))
            return
        fields = dict(re.findall(r'(\w+)="([^"]*)"', params))
        query = {k: v for k, v in fields.items() if k in ("service", "scope")}
        token_request = httpx.Request("GET", fields["realm"], params=query)
        token_response = yield next(self.basic.auth_flow(token_request))
        body = token_response.json()
        request.headers["Authorization"] = f"Bearer {body.get('token') or body['access_token']}"
        yield request


# ---------------------------------------------------------------------------------------------- images


@dataclass
class PlatformImage:
    """An image for one platform: its gzip layers (see `platform_image`), an OCI config naming the platform,
    and its OCI manifest."""

    architecture: str
    layers: list[bytes]
    config: bytes
    manifest: bytes
    os: str = "linux"

    @property
    def digest(self) -> str:
        return digest_of(self.manifest)

    @property
    def blobs(self) -> list[bytes]:
        return [self.config, *self.layers]

    @property
    def blob_digests(self) -> list[str]:
        return [digest_of(b) for b in self.blobs]

    def descriptor(self) -> dict[str, object]:
        return {
            "mediaType": OCI_MANIFEST,
            "digest": self.digest,
            "size": len(self.manifest),
            "platform": {"architecture": self.architecture, "os": self.os},
        }


def layer_tar(
    files: Mapping[str, bytes], executable: Iterable[str] = (), links: Mapping[str, str] | None = None
) -> bytes:
    """An uncompressed layer tarball holding `files` (path -> bytes; mode 0755 for the paths in `executable`,
    else 0644) and symbolic `links` (path -> target), all with one fixed mtime."""
    executable = set(executable)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for path, data in files.items():
            info = tarfile.TarInfo(path.lstrip("/"))
            info.size, info.mtime = len(data), 1_700_000_000
            info.mode = 0o755 if path in executable else 0o644
            tar.addfile(info, io.BytesIO(data))
        for path, target in (links or {}).items():
            info = tarfile.TarInfo(path.lstrip("/"))
            info.type, info.linkname, info.mtime = tarfile.SYMTYPE, target, 1_700_000_000
            tar.addfile(info)
    return raw.getvalue()


def busybox_layer(marker: bytes, busybox: Path = BUSYBOX) -> bytes:
    """An uncompressed root filesystem layer: a static busybox with its applets, and `/etc/marker` holding
    `marker`, so that each marker gives a layer of its own (no engine already has it)."""
    files = {"bin/busybox": busybox.read_bytes(), "etc/marker": marker}
    links = {f"bin/{applet}": "busybox" for applet in BUSYBOX_APPLETS}
    return layer_tar(files, executable=["bin/busybox"], links=links)


def platform_image(files: Mapping[str, bytes], architecture: str = "amd64", base: bytes | None = None) -> PlatformImage:
    """An OCI image for linux/`architecture` whose last layer holds `files`, on top of `base` (an uncompressed
    layer tarball, e.g. a busybox root filesystem) when given."""
    tars = [*([base] if base is not None else []), layer_tar(files)]
    layers = [gzip.compress(t, compresslevel=1, mtime=0) for t in tars]
    config = json.dumps(
        {
            "architecture": architecture,
            "os": "linux",
            "config": {"Cmd": ["/bin/sh"]},
            "rootfs": {"type": "layers", "diff_ids": [digest_of(t) for t in tars]},
        }
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": digest_of(config), "size": len(config)},
            "layers": [{"mediaType": OCI_LAYER, "digest": digest_of(b), "size": len(b)} for b in layers],
        }
    ).encode()
    return PlatformImage(architecture, layers, config, manifest)


def push_blob(client: httpx.Client, repository: str, data: bytes) -> str:
    """Upload `data` as a blob of `repository` (POST, then PUT ?digest= with the bytes), unless it is there."""
    digest = digest_of(data)
    if client.head(f"/v2/{repository}/blobs/{digest}").status_code == 200:
        return digest
    started = client.post(f"/v2/{repository}/blobs/uploads/")
    assert started.status_code == 202, started.text
    location = started.headers["Location"]
    separator = "&" if "?" in location else "?"
    done = client.put(f"{location}{separator}digest={urllib.parse.quote(digest)}", content=data)
    assert done.status_code == 201, done.text
    return digest


def put_manifest(client: httpx.Client, repository: str, reference: str, body: bytes, media_type: str) -> str:
    """PUT a manifest under `reference` (a tag or its digest); returns its digest."""
    r = client.put(f"/v2/{repository}/manifests/{reference}", content=body, headers={"Content-Type": media_type})
    assert r.status_code == 201, r.text
    return digest_of(body)


def push_platform_image(client: httpx.Client, repository: str, image: PlatformImage, tag: str | None = None) -> str:
    """Push an image's blobs and its manifest (under `tag`, default its digest); returns the manifest digest."""
    for blob in image.blobs:
        push_blob(client, repository, blob)
    return put_manifest(client, repository, tag or image.digest, image.manifest, OCI_MANIFEST)


def push_index(client: httpx.Client, repository: str, tag: str, images: Iterable[PlatformImage]) -> str:
    """Push each image by digest, then an OCI index of them under `tag`; returns the index digest."""
    images = list(images)
    for image in images:
        push_platform_image(client, repository, image)
    index = json.dumps(
        {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [i.descriptor() for i in images]}
    ).encode()
    return put_manifest(client, repository, tag, index, OCI_INDEX)


# ---------------------------------------------------------------------------------------------- a slow link


class SlowRelay:
    """A TCP relay on a free 127.0.0.1 port to `target_port`, sending the target's answers on at most
    `bytes_per_s` (requests go through at full speed): an upstream that is slow to deliver a blob.

    Runs on threads of this process; `close()` stops accepting and cuts every relayed connection.
    """

    PIECE = 16 << 10

    def __init__(self, target_port: int, bytes_per_s: int):
        self.target_port, self.bytes_per_s = target_port, bytes_per_s
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> Self:
        """Listen (again, after `close()`) on `port` and relay each connection on threads of its own."""
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((HOST, self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True, name=f"relay-{self.port}").start()
        return self

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:  # closed
                return
            try:
                server = socket.create_connection((HOST, self.target_port), timeout=5)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            with self._lock:
                self._sockets += [client, server]
            threading.Thread(target=self._pump, args=(client, server, 0), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, self.bytes_per_s), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, rate: int) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(self.PIECE):
                sink.sendall(data)
                if rate:
                    time.sleep(len(data) / rate)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        """Stop listening (a connection attempt is refused from now on) and cut every relayed connection."""
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() in progress; close() alone would not
            self._listener.close()
            self._listener = None
        with self._lock:
            for s in self._sockets:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()
            self._sockets.clear()


# ---------------------------------------------------------------------------------------------- the cache


def upstream_entry(prefix: str, url: str, host: str, **options: object) -> dict[str, object]:
    """One `proxy.upstreams` entry: the cache of `url` under `prefix`, standing for registry host `host`
    (containerd's `?ns=`); `options` are its other keys (mirror, username, password, tag_ttl...)."""
    return {"prefix": prefix, "url": url, "hosts": [host], **options}


def start_cache(
    directory: Path, upstreams: Iterable[Mapping[str, object]], gc_grace: str = "1h", **proxy: object
) -> RegistryServer:
    """Our registry as a pull-through cache of `upstreams` (`upstream_entry` dicts), auth mode none, its config
    `directory/cache.yaml` and its data under `directory`; `proxy` are the other keys of the proxy section
    (max_bytes, connect_timeout_s...)."""
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "cache.yaml"
    document = {"proxy": {**proxy, "upstreams": [dict(u) for u in upstreams]}, "gc": {"grace": gc_grace}}
    config.write_text(json.dumps(document, indent=2))
    return start_server(directory, config)
