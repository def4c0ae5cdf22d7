"""A minimal asyncio HTTP/1.1 client for loopback registries, and the small pushes and checks built on it.

It costs a fraction of httpx's CPU per request (httpx drove only about 500-800 requests/s per core here and would
have been the bottleneck of push-small, of creating the catalog's repositories and of the soak).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

from bench import HOST, BenchError

OCTET = "application/octet-stream"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
T = TypeVar("T")


def parse_headers(lines: Iterable[str]) -> dict[str, str]:
    """HTTP header lines as {lowercased name: value}; lines without a colon (the status line) are skipped."""
    headers = {}
    for line in lines:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return headers


def sha256_digest(data: bytes) -> str:
    """The `sha256:` digest of `data`."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def target_of(location: str) -> str:
    """The path and query of a Location header, absolute or not."""
    parts = urlsplit(location)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def with_query(target: str, key: str, value: str) -> str:
    """`target` with one more query parameter (Distribution's upload Locations already carry `_state`)."""
    return f"{target}{'&' if '?' in target else '?'}{key}={value}"


@dataclass
class Reply:
    """A response: status, lower-cased headers, body."""

    status: int
    headers: dict[str, str]
    body: bytes


class Connection:
    """One keep-alive HTTP/1.1 connection to a loopback server: content-length and chunked bodies, and a reconnect
    when the server closed a reused connection."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def close(self) -> None:
        """Close the connection if open."""
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()
        self.reader = self.writer = None

    async def request(
        self, method: str, target: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> Reply:
        """Send one request and read its response; retry once on a fresh connection if a reused one was closed."""
        for _ in range(2):
            reused = self.writer is not None
            if not reused:
                self.reader, self.writer = await asyncio.open_connection(HOST, self.port)
            try:
                return await self._exchange(method, target, body, headers or {})
            except (ConnectionError, asyncio.IncompleteReadError):
                await self.close()
                if not reused:
                    raise
        raise BenchError(f"{method} {target}: connection closed twice")

    async def _exchange(self, method: str, target: str, body: bytes, headers: dict[str, str]) -> Reply:
        """Write the request, read status line, headers and body."""
        assert self.reader is not None and self.writer is not None
        lines = [f"{method} {target} HTTP/1.1", f"Host: {HOST}:{self.port}"]
        if body or method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {len(body)}")
        lines += [f"{k}: {v}" for k, v in headers.items()]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        await self.writer.drain()
        head = (await self.reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        status = int(head[0].split()[1])
        reply_headers = parse_headers(head[1:])
        reply = Reply(status, reply_headers, await self._body(method, status, reply_headers))
        if reply_headers.get("connection", "").lower() == "close":
            await self.close()
        return reply

    async def _body(self, method: str, status: int, headers: dict[str, str]) -> bytes:
        """Read the response body as its headers describe it."""
        assert self.reader is not None
        if method == "HEAD" or status in (204, 304) or status < 200:
            return b""
        if "content-length" in headers:
            return await self.reader.readexactly(int(headers["content-length"]))
        if "chunked" in headers.get("transfer-encoding", "").lower():
            parts = []
            while size := int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16):
                parts.append(await self.reader.readexactly(size))
                await self.reader.readexactly(2)
            await self.reader.readuntil(b"\r\n")
            return b"".join(parts)
        body = await self.reader.read()
        await self.close()
        return body


def expect(reply: Reply, status: int, what: str) -> Reply:
    """Raise BenchError unless the reply has `status`."""
    if reply.status != status:
        raise BenchError(f"{what}: HTTP {reply.status}, expected {status}: {reply.body[:300]!r}")
    return reply


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine on uvloop when available (as our server does), else asyncio."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


async def pool(
    port: int, concurrency: int, jobs: Iterable[T], work: Callable[[Connection, T], Awaitable[None]]
) -> None:
    """Run `work(connection, job)` for every job, `concurrency` at a time, each worker on its own connection."""
    items = iter(jobs)

    async def worker() -> None:
        connection = Connection(port)
        try:
            for job in items:
                await work(connection, job)
        finally:
            await connection.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def push_blob(connection: Connection, name: str, data: bytes) -> str:
    """Upload a small blob the way every client can (POST, then PUT ?digest= with the body); return its digest."""
    digest = sha256_digest(data)
    started = expect(await connection.request("POST", f"/v2/{name}/blobs/uploads/"), 202, f"POST upload {name}")
    target = with_query(target_of(started.headers["location"]), "digest", digest)
    expect(await connection.request("PUT", target, data, {"Content-Type": OCTET}), 201, f"PUT upload {name}")
    return digest


@dataclass(frozen=True)
class SmallImage:
    """What a pushed small image consists of."""

    name: str
    tag: str
    manifest_digest: str
    manifest_size: int
    layer_digest: str
    layer_size: int


async def push_image(connection: Connection, name: str, tag: str, layer_size: int = 2048) -> SmallImage:
    """Push config + one random layer + an OCI manifest under `tag`."""
    layer = os.urandom(layer_size)
    layer_digest = await push_blob(connection, name, layer)
    config = json.dumps(
        {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [layer_digest]}}
    ).encode()
    config_digest = await push_blob(connection, name, config)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config)},
            "layers": [{"mediaType": OCI_LAYER, "digest": layer_digest, "size": len(layer)}],
        }
    ).encode()
    reply = await connection.request("PUT", f"/v2/{name}/manifests/{tag}", manifest, {"Content-Type": OCI_MANIFEST})
    expect(reply, 201, f"PUT manifest {name}:{tag}")
    return SmallImage(name, tag, sha256_digest(manifest), len(manifest), layer_digest, len(layer))


async def check_manifest(connection: Connection, image: SmallImage) -> None:
    """GET the image's manifest by tag: 200, OCI media type, body with the pushed digest."""
    reply = await connection.request("GET", f"/v2/{image.name}/manifests/{image.tag}", headers={"Accept": OCI_MANIFEST})
    expect(reply, 200, f"GET manifest {image.name}:{image.tag}")
    if sha256_digest(reply.body) != image.manifest_digest or not reply.headers.get("content-type", "").startswith(
        OCI_MANIFEST
    ):
        raise BenchError(f"GET manifest {image.name}:{image.tag}: wrong body or type {reply.headers}")
