"""Benchmark suite: our registry against CNCF Distribution 2.8 on the same workloads, in alternation.

Starts both servers on free loopback ports with fresh temporary storage, then for each selected workload runs
`--rounds` rounds alternating ours, theirs, ours, theirs, ... and prints the medians, the ratio ours/theirs and the
issue's target for it (met / missed), the CPU each side used (to tell what limits our server) and each server's peak
RSS. Request rates come from `wrk` (GET) and `ab -k -i` (HEAD); large transfers from `curl`; the low-rate push
workloads from a minimal asyncio HTTP/1.1 client; `docker push`/`pull` from the real engine via
bench/docker_push_pull.py. Every workload checks its results (status codes, sizes, digests) and fails loudly.

The `soak` workload (bench/soak.py: our server alone, mixed traffic, worker RSS judged flat or not) runs last,
after both servers stopped, for --soak-minutes (30, 3 with --quick).

Run:  .venv/bin/python bench/run.py                      (default: 3 rounds, about 7-8 minutes, then the soak)
      .venv/bin/python bench/run.py --only soak          (the soak alone, as `make soak`)
      .venv/bin/python bench/run.py --quick              (1 round, small sizes: a smoke run of about 1 minute)
      .venv/bin/python bench/run.py --only manifest-get,blob-head --ours-env REGISTRY_HTTP_WORKERS=1
Writes bench/results/bench.json and bench/results/ratios.png (bench-quick.json / ratios-quick.png with --quick).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import re
import resource
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import docker_push_pull as dpp  # bench/ is sys.path[0] when this file runs as a script
import load as held_load

RESULTS_DIR = dpp.BENCH_DIR / "results"
MIB = dpp.MIB
HOST = dpp.HOST
OCTET = "application/octet-stream"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
RSS_LIMIT_MIB = 150
TAIL = 16  # bytes at the end of the large blob rewritten before every push, so each push uploads a new blob
ACTIVE = "_active_s"  # key of an action's result: seconds its requests were in flight
T = TypeVar("T")


class BenchError(RuntimeError):
    """A workload saw a wrong answer (status, size, digest, error count): the numbers would not mean anything."""


def parse_headers(lines: Iterable[str]) -> dict[str, str]:
    """HTTP header lines as {lowercased name: value}; lines without a colon (the status line) are skipped."""
    headers = {}
    for line in lines:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return headers


# --------------------------------------------------------------------------------------------- metrics


@dataclass(frozen=True)
class Metric:
    """One reported number: its unit, which direction is better, and the issue's target for the ratio ours/theirs."""

    name: str
    unit: str
    higher_is_better: bool
    target: float | None = None

    def target_text(self) -> str:
        """The target as printed, e.g. `>= 4x` or `<= 0.25x`; empty without one."""
        if self.target is None:
            return ""
        return f"{'>=' if self.higher_is_better else '<='} {self.target:g}x"

    def met(self, ratio: float) -> bool | None:
        """Whether the ratio ours/theirs meets the target (None when there is none)."""
        if self.target is None:
            return None
        return ratio >= self.target if self.higher_is_better else ratio <= self.target


METRICS = (
    Metric("push-large monolithic", "MiB/s", True, 4.0),
    Metric("push-large post+put", "MiB/s", True),
    Metric("push-large streamed", "MiB/s", True),
    Metric("push-chunked", "MiB/s", True, 5.0),
    Metric("pull-large full", "MiB/s", True, 1.0),
    Metric("pull-large range", "MiB/s", True, 1.0),
    Metric("manifest-get rate", "req/s", True, 6.0),
    Metric("manifest-get p50", "ms", False),
    Metric("manifest-get p99", "ms", False, 0.25),
    Metric("blob-head rate", "req/s", True, 6.0),
    Metric("blob-head p50", "ms", False),
    Metric("blob-head p99", "ms", False, 0.25),
    Metric("push-small", "images/s", True, 3.0),
    Metric("catalog first page", "ms", False),
    Metric("catalog walk", "ms", False, 0.1),
    Metric("docker push", "s", False, 0.9),
    Metric("docker pull", "s", False, 0.9),
    Metric("s3 push-large streamed", "MiB/s", True),
    Metric("s3 push-chunked", "MiB/s", True),
    Metric("s3 pull-large proxied", "MiB/s", True),
    Metric("s3 pull-large redirect", "MiB/s", True),
    Metric("load rate", "req/s", True),
    Metric("load p50", "ms", False),
    Metric("load p99", "ms", False),
)


@dataclass
class Sample:
    """One measured value of one metric on one server in one round, with the CPU both sides used meanwhile."""

    metric: str
    server: str
    round: int
    value: float
    wall_s: float
    active_s: float  # time requests were in flight (curl's own times); wall_s also counts starting curl processes
    server_cpu_s: float
    server_busiest_cpu_s: float
    client_cpu_s: float
    machine_busy_s: float
    machine_iowait_s: float
    server_processes: int
    load: float
    sequential: bool  # one request in flight at a time (the curl-driven transfers)
    extra: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------- processes


def pids_named(name: str) -> list[int]:
    """Pids of the processes whose command name is `name` (e.g. dockerd, whose CPU is the docker client's)."""
    return [pid for pid, (_, comm) in dpp.process_table().items() if comm == name]


def cpu_by_pid(pids: Iterable[int]) -> dict[int, float]:
    """User + system CPU seconds used so far by each process still alive among `pids`."""
    found = {}
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            found[pid] = dpp.cpu_seconds(pid)
    return found


def cpu_of(pids: Iterable[int]) -> float:
    """User + system CPU seconds used so far by the processes still alive among `pids`."""
    return sum(cpu_by_pid(pids).values())


def machine_cpu() -> tuple[float, float]:
    """Busy and iowait CPU seconds of the whole machine so far (all cores), from /proc/stat: other users of this
    shared machine show up as busy time that is neither the server's nor the client's."""
    with open("/proc/stat") as f:
        ticks = [int(n) for n in f.readline().split()[1:]]
    hz = os.sysconf("SC_CLK_TCK")
    idle, iowait = ticks[3], ticks[4]
    return (sum(ticks[:8]) - idle - iowait) / hz, iowait / hz


def own_cpu() -> float:
    """CPU seconds of this process plus its waited-for children (curl, wrk, ab, docker CLI): the client side."""
    return sum(
        r.ru_utime + r.ru_stime
        for r in (resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN))
    )


def reset_peaks(pid: int) -> None:
    """Reset VmHWM of every process of the server to its current RSS."""
    for p in dpp.tree_pids(pid):
        dpp.reset_peak_rss(p)


def peaks_kib(pid: int) -> dict[int, int]:
    """VmHWM (KiB) of every process of the server, by pid."""
    return {p: dpp.proc_status_kib(p, "VmHWM") for p in dpp.tree_pids(pid)}


@dataclass
class Meter:
    """What one measured action cost: wall clock, server CPU (all its processes), client CPU, machine load."""

    wall_s: float = 0.0
    server_cpu_s: float = 0.0
    server_busiest_cpu_s: float = 0.0
    client_cpu_s: float = 0.0
    machine_busy_s: float = 0.0
    machine_iowait_s: float = 0.0
    server_processes: int = 1
    load: float = 0.0


@contextlib.contextmanager
def metered(server: dpp.Server, client_pids: list[int] | None = None) -> Iterator[Meter]:
    """Measure the enclosed block: wall seconds, CPU of the server's process tree and of the client side
    (this process, its finished children, and `client_pids` such as dockerd)."""
    meter = Meter(load=dpp.load_average())
    pids = dpp.tree_pids(server.proc.pid)
    extra = client_pids or []
    server_before, client_before, extra_before = cpu_by_pid(pids), own_cpu(), cpu_of(extra)
    busy_before, iowait_before = machine_cpu()
    started = time.perf_counter()
    yield meter
    meter.wall_s = time.perf_counter() - started
    server_after, (busy_after, iowait_after) = cpu_by_pid(pids), machine_cpu()
    spent = [server_after[p] - server_before[p] for p in server_after if p in server_before]
    meter.server_cpu_s = sum(spent)
    meter.server_busiest_cpu_s = max(spent, default=0.0)
    meter.client_cpu_s = own_cpu() - client_before + cpu_of(extra) - extra_before
    meter.machine_busy_s = busy_after - busy_before
    meter.machine_iowait_s = iowait_after - iowait_before
    meter.server_processes = len(pids)


# --------------------------------------------------------------------------------------------- servers


def settle_workers(server: dpp.Server, timeout_s: float = 10.0) -> int:
    """Wait until the server's process count stops changing (workers start after /healthz answers); return it."""
    deadline, count, stable_since = time.monotonic() + timeout_s, 0, time.monotonic()
    while time.monotonic() < deadline:
        now = len(dpp.tree_pids(server.proc.pid))
        if now != count:
            count, stable_since = now, time.monotonic()
        elif time.monotonic() - stable_since > 1.0:
            break
        time.sleep(0.1)
    return count


def url_of(server: dpp.Server, target: str) -> str:
    """The absolute URL of `target` (a path, or an absolute Location as Distribution sends) on `server`."""
    return target if target.startswith("http") else f"http://{HOST}:{server.port}{target}"


def target_of(location: str) -> str:
    """The path and query of a Location header, absolute or not."""
    parts = urlsplit(location)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def with_query(target: str, key: str, value: str) -> str:
    """`target` with one more query parameter (Distribution's upload Locations already carry `_state`)."""
    return f"{target}{'&' if '?' in target else '?'}{key}={value}"


def sha256_digest(data: bytes) -> str:
    """The `sha256:` digest of `data`."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------------------------- asyncio HTTP client


@dataclass
class Reply:
    """A response: status, lower-cased headers, body."""

    status: int
    headers: dict[str, str]
    body: bytes


class Connection:
    """One keep-alive HTTP/1.1 connection to a loopback server.

    A deliberately minimal client (content-length and chunked bodies, reconnect when the server closes): it costs a
    fraction of httpx's CPU per request, which drove only about 500-800 requests/s per core here and so would have
    been the bottleneck of push-small and of creating the catalog's repositories.
    """

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


def run_async(coro: Awaitable[T]) -> T:
    """Run a coroutine on uvloop when available (as our server does), else asyncio."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)  # type: ignore[arg-type]
    return uvloop.run(coro)  # type: ignore[arg-type]


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
    return SmallImage(name, tag, sha256_digest(manifest), layer_digest, len(layer))


async def check_manifest(connection: Connection, image: SmallImage) -> None:
    """GET the image's manifest by tag: 200, OCI media type, body with the pushed digest."""
    reply = await connection.request("GET", f"/v2/{image.name}/manifests/{image.tag}", headers={"Accept": OCI_MANIFEST})
    expect(reply, 200, f"GET manifest {image.name}:{image.tag}")
    if sha256_digest(reply.body) != image.manifest_digest or not reply.headers.get("content-type", "").startswith(
        OCI_MANIFEST
    ):
        raise BenchError(f"GET manifest {image.name}:{image.tag}: wrong body or type {reply.headers}")


# --------------------------------------------------------------------------------------------- curl


@dataclass
class CurlResult:
    """One curl transfer: status, curl's own time (excludes process start), bytes received, headers."""

    status: int
    seconds: float
    downloaded: int
    headers: dict[str, str]


def curl(url: str, *args: str) -> CurlResult:
    """Run curl once (no `Expect: 100-continue`, body to /dev/null); raise BenchError if curl itself fails."""
    command = ["curl", "-sS", "-o", "/dev/null", "-D", "-", "-H", "Expect:"]
    command += ["-w", "\n%{http_code} %{time_total} %{size_download}", *args, url]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise BenchError(f"curl {' '.join(args)} {url}: exit {done.returncode}: {done.stderr.strip()[-500:]}")
    head, _, stats = done.stdout.rpartition("\n")
    status, seconds, downloaded = stats.split()
    return CurlResult(int(status), float(seconds), int(float(downloaded)), parse_headers(head.splitlines()))


def curl_expect(status: int, what: str, url: str, *args: str) -> CurlResult:
    """curl, then raise BenchError unless the response has `status`."""
    result = curl(url, *args)
    if result.status != status:
        raise BenchError(f"{what}: HTTP {result.status}, expected {status} ({url})")
    return result


def check_blob(server: dpp.Server, name: str, digest: str, size: int) -> None:
    """HEAD the blob: 200 with the right Content-Length, else BenchError."""
    result = curl_expect(200, f"HEAD {name}@{digest[:19]}", url_of(server, f"/v2/{name}/blobs/{digest}"), "-I")
    if int(result.headers.get("content-length", -1)) != size:
        raise BenchError(f"HEAD {name}@{digest}: content-length {result.headers.get('content-length')}, pushed {size}")


def blob_sha256(server: dpp.Server, name: str, digest: str, *args: str) -> str:
    """The sha256 digest of the bytes a GET of the blob returns (streamed from curl with `args`, not timed)."""
    command = ["curl", "-sS", "-f", *args, url_of(server, f"/v2/{name}/blobs/{digest}")]
    hasher = hashlib.sha256()
    with subprocess.Popen(command, stdout=subprocess.PIPE) as proc:
        assert proc.stdout is not None
        while piece := proc.stdout.read(8 * MIB):
            hasher.update(piece)
    if proc.returncode != 0:
        raise BenchError(f"GET {name}@{digest}: curl exit {proc.returncode}")
    return "sha256:" + hasher.hexdigest()


# --------------------------------------------------------------------------------------------- large blob


@dataclass
class LargeBlob:
    """A large random file, also split into chunk files. Before each push only its last TAIL bytes change, so every
    push uploads a blob the server has never seen, and the digest comes from a saved hash state of the rest."""

    path: Path
    chunks: list[Path]
    size: int
    chunk_size: int
    prefix_hash: Any
    digest: str = ""

    @property
    def mib(self) -> float:
        """Size in MiB."""
        return self.size / MIB

    def next_variant(self) -> str:
        """Rewrite the tail (in the file and in the last chunk) with new random bytes; return the new digest."""
        tail = secrets.token_bytes(TAIL)
        with open(self.path, "r+b") as f:
            f.seek(self.size - TAIL)
            f.write(tail)
        with open(self.chunks[-1], "r+b") as f:
            f.seek(self.size - TAIL - (len(self.chunks) - 1) * self.chunk_size)
            f.write(tail)
        hasher = self.prefix_hash.copy()
        hasher.update(tail)
        self.digest = "sha256:" + hasher.hexdigest()
        return self.digest


def make_large_blob(directory: Path, size: int, chunk_size: int) -> LargeBlob:
    """Write `size` random bytes to directory/blob.bin and, piece by piece, to chunk files of `chunk_size`."""
    directory.mkdir(parents=True, exist_ok=True)
    path, chunks, prefix_hash = directory / "blob.bin", [], hashlib.sha256()
    with open(path, "wb") as whole:
        for i, start in enumerate(range(0, size, chunk_size)):
            data = os.urandom(min(chunk_size, size - start))
            whole.write(data)
            chunk = directory / f"chunk-{i:05d}.bin"
            chunk.write_bytes(data)
            chunks.append(chunk)
            prefix_hash.update(data[: max(0, size - TAIL - start)])
    blob = LargeBlob(path, chunks, size, chunk_size, prefix_hash)
    blob.next_variant()
    return blob


def upload_start(server: dpp.Server, name: str) -> tuple[float, str]:
    """POST an empty upload; return curl's seconds and the Location."""
    result = curl_expect(202, f"POST upload {name}", url_of(server, f"/v2/{name}/blobs/uploads/"), "-X", "POST")
    return result.seconds, result.headers["location"]


def upload_finish(server: dpp.Server, location: str, digest: str, body: Path | None = None) -> float:
    """PUT ?digest= (with the whole body when given) to finish an upload; return curl's seconds."""
    args = ["-X", "PUT", "-H", f"Content-Type: {OCTET}"]
    args += ["-T", str(body)] if body is not None else ["-H", "Content-Length: 0"]
    return curl_expect(201, "PUT upload", url_of(server, with_query(location, "digest", digest)), *args).seconds


def push_single_post(server: dpp.Server, name: str, blob: LargeBlob) -> float:
    """Monolithic push in one request: POST ?digest= with the body. The path has no trailing slash, because curl -T
    appends the file name to a URL ending in `/`."""
    url = url_of(server, f"/v2/{name}/blobs/uploads?digest={blob.digest}")
    return curl_expect(
        201, f"POST ?digest {name}", url, "-X", "POST", "-H", f"Content-Type: {OCTET}", "-T", str(blob.path)
    ).seconds


def push_post_put(server: dpp.Server, name: str, blob: LargeBlob) -> float:
    """Monolithic push in two requests: POST, then PUT ?digest= with the body."""
    seconds, location = upload_start(server, name)
    return seconds + upload_finish(server, location, blob.digest, blob.path)


def push_streamed(server: dpp.Server, name: str, blob: LargeBlob) -> float:
    """Streamed push: POST, one PATCH with the whole body, PUT ?digest=."""
    seconds, location = upload_start(server, name)
    patch = ["-X", "PATCH", "-H", f"Content-Type: {OCTET}", "-T", str(blob.path)]
    result = curl_expect(202, f"PATCH {name}", url_of(server, location), *patch)
    return seconds + result.seconds + upload_finish(server, result.headers["location"], blob.digest)


def push_chunked(server: dpp.Server, name: str, blob: LargeBlob) -> float:
    """Chunked push: POST, one PATCH per chunk file with `Content-Range: start-end` (following each new Location,
    as Distribution requires), then PUT ?digest=."""
    seconds, location = upload_start(server, name)
    start = 0
    for chunk in blob.chunks:
        end = start + chunk.stat().st_size - 1
        args = ["-X", "PATCH", "-H", f"Content-Type: {OCTET}", "-H", f"Content-Range: {start}-{end}", "-T", str(chunk)]
        result = curl_expect(202, f"PATCH {name} {start}-{end}", url_of(server, location), *args)
        seconds, location, start = seconds + result.seconds, result.headers["location"], end + 1
    return seconds + upload_finish(server, location, blob.digest)


def supports_single_post(server: dpp.Server) -> bool:
    """Whether POST ?digest= with a body completes an upload (201). Distribution 2.8 answers 202 and ignores it."""
    data = secrets.token_bytes(64)
    url = url_of(server, f"/v2/bench/probe/blobs/uploads/?digest={sha256_digest(data)}")
    args = ("-X", "POST", "-H", f"Content-Type: {OCTET}", "--data-binary", "@-")
    done = subprocess.run(
        ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", *args, url], input=data, capture_output=True
    )
    return done.stdout.strip() == b"201"


# --------------------------------------------------------------------------------------------- load generators


def latency_ms(text: str) -> float:
    """Milliseconds in a wrk latency such as `812.00us`, `1.23ms`, `2.00s` or `1.00m`."""
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(number) * {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def parse_wrk(output: str) -> dict[str, Any]:
    """Requests/s, p50/p99 ms, request and error counts from `wrk --latency` output."""
    percentiles = {int(p): latency_ms(v) for p, v in re.findall(r"^\s+(\d+)%\s+(\S+)\s*$", output, re.M)}
    rate = re.search(r"Requests/sec:\s+([\d.]+)", output)
    count = re.search(r"(\d+) requests in", output)
    if rate is None or count is None or 50 not in percentiles or 99 not in percentiles:
        raise BenchError(f"cannot parse wrk output:\n{output}")
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    socket = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    return {
        "rate": float(rate[1]),
        "p50": percentiles[50],
        "p99": percentiles[99],
        "requests": int(count[1]),
        "non_2xx": int(non2xx[1]) if non2xx else 0,
        "socket_errors": sum(int(n) for n in socket.groups()) if socket else 0,
    }


def run_wrk(url: str, seconds: int, connections: int, headers: dict[str, str]) -> dict[str, Any]:
    """Run wrk (2 threads) against `url`; fail on any non-2xx answer or on socket errors above 0.1 %."""
    command = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", "10s"]
    for name, value in headers.items():
        command += ["-H", f"{name}: {value}"]
    done = subprocess.run([*command, url], capture_output=True, text=True)
    if done.returncode != 0:
        raise BenchError(f"wrk failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    stats = parse_wrk(done.stdout)
    if stats["non_2xx"] or stats["requests"] == 0 or stats["socket_errors"] > stats["requests"] / 1000:
        raise BenchError(f"wrk saw errors against {url}:\n{done.stdout}")
    return stats


def parse_ab(output: str, csv_text: str) -> dict[str, Any]:
    """Requests/s, counts and p50/p99 ms (from ab's -e CSV, which has sub-millisecond precision) of an ab run."""

    def count(label: str) -> int:
        found = re.search(rf"{label}:\s+(\d+)", output)
        return int(found[1]) if found else 0

    rate = re.search(r"Requests per second:\s+([\d.]+)", output)
    percentiles = dict(line.split(",") for line in csv_text.splitlines()[1:] if "," in line)
    if rate is None or "50" not in percentiles or "99" not in percentiles:
        raise BenchError(f"cannot parse ab output:\n{output}")
    return {
        "rate": float(rate[1]),
        "p50": float(percentiles["50"]),
        "p99": float(percentiles["99"]),
        "requests": count("Complete requests"),
        "failed": count("Failed requests"),
        "non_2xx": count("Non-2xx responses"),
        "keepalive_requests": count("Keep-Alive requests"),
    }


def run_ab_head(url: str, seconds: int, connections: int, workdir: Path) -> dict[str, Any]:
    """HEAD `url` with `ab -k -i` for `seconds`; fail on any failed or non-2xx request."""
    csv_path = workdir / "ab-percentiles.csv"
    # -t implies -n 50000; the -n after it raises that cap (ab allocates per-request stats lazily, so it is cheap).
    command = ["ab", "-k", "-i", "-q", "-c", str(connections), "-t", str(seconds), "-n", "2000000", "-e", str(csv_path)]
    done = subprocess.run([*command, url], capture_output=True, text=True)
    if done.returncode != 0:
        raise BenchError(f"ab failed ({done.returncode}): {done.stderr.strip()[-500:]}\n{done.stdout[-1500:]}")
    stats = parse_ab(done.stdout, csv_path.read_text())
    if stats["failed"] or stats["non_2xx"] or stats["requests"] == 0:
        raise BenchError(f"ab saw errors against {url}:\n{done.stdout}")
    return stats


# --------------------------------------------------------------------------------------------- the run


@dataclass
class Sizes:
    """The resolved sizes of this run (defaults, --quick defaults, or flags)."""

    rounds: int
    large_mib: int
    chunk_mib: int
    range_mib: int
    seconds: int
    connections: int
    small_images: int
    small_concurrency: int
    catalog_repos: int
    docker_mib: int
    docker_layers: int
    load_connections: int
    load_slow: int
    load_seconds: int


@dataclass
class Bench:
    """Everything one run shares: sizes, temp dir, both servers, the large blob, docker state, results."""

    sizes: Sizes
    run: dpp.Run
    servers: list[dpp.Server] = field(default_factory=list)
    large: LargeBlob | None = None
    apps: dict[str, SmallImage] = field(default_factory=dict)
    single_post: dict[str, bool] = field(default_factory=dict)
    samples: list[Sample] = field(default_factory=list)
    peaks: dict[str, dict[str, dict[int, int]]] = field(default_factory=dict)
    processes: dict[str, int] = field(default_factory=dict)

    @property
    def tmp(self) -> Path:
        """This run's temp dir."""
        return self.run.tmp

    def large_blob(self) -> LargeBlob:
        """The large random blob, written on first use."""
        if self.large is None:
            size, chunk = self.sizes.large_mib * MIB, self.sizes.chunk_mib * MIB
            print(f"  writing a {self.sizes.large_mib} MiB random blob and its {chunk // MIB} MiB chunks", flush=True)
            self.large = make_large_blob(self.tmp / "large", size, chunk)
        return self.large

    def app(self, server: dpp.Server) -> SmallImage:
        """The small image `bench/app:latest` on `server`, pushed and checked on first use."""
        if server.name not in self.apps:

            async def push() -> SmallImage:
                connection = Connection(server.port)
                try:
                    image = await push_image(connection, "bench/app", "latest")
                    await check_manifest(connection, image)
                    return image
                finally:
                    await connection.close()

            self.apps[server.name] = run_async(push())
            image = self.apps[server.name]
            check_blob(server, image.name, image.layer_digest, image.layer_size)
        return self.apps[server.name]

    def measure(
        self,
        server: dpp.Server,
        rnd: int,
        action: Callable[[], dict[str, float]],
        extra: dict[str, Any] | None = None,
        client_pids: list[int] | None = None,
    ) -> list[Sample]:
        """Run `action` under a meter; it returns {metric: value} and, optionally, {ACTIVE: seconds requests were in
        flight}; record one Sample per metric."""
        with metered(server, client_pids) as meter:
            values = action()
        sequential = ACTIVE in values
        active_s = min(values.pop(ACTIVE, meter.wall_s), meter.wall_s)
        costs = {key: round(v, 3) if isinstance(v, float) else v for key, v in asdict(meter).items()}
        samples = [
            Sample(
                metric,
                server.name,
                rnd,
                round(value, 3),
                active_s=round(active_s, 3),
                sequential=sequential,
                extra=dict(extra or {}),
                **costs,
            )
            for metric, value in values.items()
        ]
        self.samples += samples
        return samples

    def timed_push(
        self, server: dpp.Server, rnd: int, metric: str, how: Callable[..., float], **extra: Any
    ) -> list[Sample]:
        """Push a new variant of the large blob with `how`, timed as `metric`; check it arrived whole."""
        blob = self.large_blob()
        blob.next_variant()
        name = f"bench/{metric.replace(' ', '-').replace('+', '-')}-r{rnd}"
        os.sync()  # start with no dirty pages from the previous push, so it doesn't pay for their write-back

        def action() -> dict[str, float]:
            seconds = how(server, name, blob)
            return {metric: blob.mib / seconds, ACTIVE: seconds}

        samples = self.measure(server, rnd, action, extra)
        check_blob(server, name, blob.digest, blob.size)
        return samples


class Workload:
    """A named workload: `setup` once per server (not timed), then `run_round` per server and round."""

    name = ""

    def __init__(self, bench: Bench) -> None:
        self.bench = bench

    def setup(self, server: dpp.Server) -> None:
        """Prepare `server` for the timed rounds."""

    def run_round(self, server: dpp.Server, rnd: int) -> list[Sample]:
        """One timed round on `server`."""
        raise NotImplementedError

    def teardown(self) -> None:
        """Stop what `setup` started."""

    def measure_load(self, server: dpp.Server, rnd: int, load: Callable[[], dict[str, Any]]) -> list[Sample]:
        """Run a load generator (`load` returns its stats: rate, p50, p99, ...) as `<name> rate/p50/p99`
        samples, each carrying all the stats."""
        stats: dict[str, Any] = {}

        def action() -> dict[str, float]:
            stats.update(load())
            return {f"{self.name} {key}": stats[key] for key in ("rate", "p50", "p99")}

        samples = self.bench.measure(server, rnd, action)
        for sample in samples:
            sample.extra.update(stats)
        return samples


class PushLarge(Workload):
    """A large random blob pushed monolithically (one POST where supported, else POST + PUT), as POST + PUT with
    the body on both, and streamed (POST, PATCH with everything, PUT). Each push is a new blob."""

    name = "push-large"

    def setup(self, server: dpp.Server) -> None:
        """Write the blob; find out whether the server takes a single-POST monolithic upload."""
        self.bench.large_blob()
        self.bench.single_post[server.name] = supports_single_post(server)

    def run_round(self, server: dpp.Server, rnd: int) -> list[Sample]:
        """Monolithic, POST+PUT, streamed."""
        single = self.bench.single_post[server.name]
        monolithic = push_single_post if single else push_post_put
        method = "POST ?digest= with body" if single else "POST, PUT ?digest= with body (no single-POST support)"
        return [
            *self.bench.timed_push(server, rnd, "push-large monolithic", monolithic, method=method),
            *self.bench.timed_push(server, rnd, "push-large post+put", push_post_put),
            *self.bench.timed_push(server, rnd, "push-large streamed", push_streamed),
        ]


class PushChunked(PushLarge):
    """The large blob in chunks with Content-Range on each PATCH (one curl per chunk), then PUT ?digest=."""

    name = "push-chunked"

    def setup(self, server: dpp.Server) -> None:
        """Write the blob."""
        self.bench.large_blob()

    def run_round(self, server: dpp.Server, rnd: int) -> list[Sample]:
        """One chunked push."""
        return self.bench.timed_push(
            server, rnd, "push-chunked", push_chunked, chunks=len(self.bench.large_blob().chunks)
        )


class PullLarge(Workload):
    """GETs of the large blob, and Range GETs of its middle `--range-mib`; each measurement repeats the GET until
    about PULL_BYTES were sent (a single 512 MiB GET from the page cache takes a fraction of a second)."""

    name = "pull-large"
    PULL_BYTES = 2048 * MIB

    def __init__(self, bench: Bench) -> None:
        super().__init__(bench)
        self.digests: dict[str, str] = {}

    def setup(self, server: dpp.Server) -> None:
        """Push a variant of the blob (streamed) and check a full GET returns exactly its bytes."""
        blob = self.bench.large_blob()
        digest = blob.next_variant()
        push_streamed(server, "bench/pull", blob)
        if blob_sha256(server, "bench/pull", digest) != digest:
            raise BenchError(f"{server.name}: GET bench/pull@{digest} returned other bytes")
        self.digests[server.name] = digest

    def run_round(self, server: dpp.Server, rnd: int) -> list[Sample]:
        """Full GET, then the middle range."""
        blob, sizes = self.bench.large_blob(), self.bench.sizes
        url = url_of(server, f"/v2/bench/pull/blobs/{self.digests[server.name]}")
        length = min(sizes.range_mib * MIB, blob.size // 2)
        start = (blob.size - length) // 2

        full_times, range_times = max(1, self.PULL_BYTES // blob.size), max(1, self.PULL_BYTES // length)

        def full() -> dict[str, float]:
            seconds = pull(url, 200, blob.size, full_times)
            return {"pull-large full": full_times * blob.mib / seconds, ACTIVE: seconds}

        def ranged() -> dict[str, float]:
            seconds = pull(url, 206, length, range_times, "-H", f"Range: bytes={start}-{start + length - 1}")
            return {"pull-large range": range_times * length / MIB / seconds, ACTIVE: seconds}

        return [
            *self.bench.measure(server, rnd, full, {"gets": full_times}),
            *self.bench.measure(server, rnd, ranged, {"gets": range_times, "range_mib": length / MIB}),
        ]


def pull(url: str, status: int, size: int, times: int, *args: str) -> float:
    """GET `url` `times` times with curl, each answer checked for `status` and exactly `size` bytes; return the
    sum of curl's own transfer times."""
    seconds = 0.0
    for _ in range(times):
        result = curl_expect(status, f"GET {url} {' '.join(args)}", url, *args)
        if result.downloaded != size:
            raise BenchError(f"GET {url} {' '.join(args)}: {result.downloaded} bytes, expected {size}")
        seconds += result.seconds
    return seconds


class ManifestGet(Workload):
    """wrk GETs of `bench/app:latest` with the OCI manifest Accept header."""

    name = "manifest-get"

    def setup(self, server: dpp.Server) -> None:
        """Push the small image."""
        self.bench.app(server)

    def run_round(self, server: dpp.Server, rnd: int) -> list[Sample]:
        """One wrk run."""
        sizes = self.bench.sizes
        url = url_of(server, "/v2/bench/app/manifests/latest")
        return self.measure_load(
            server, rnd, lambda: run_wrk(url, sizes.seconds, sizes.connections, {"Accept": OCI_MANIFEST})
        )


class BlobHead(Workload):
    """ab -k -i HEADs of the small image's layer blob (wrk would wait for a body after HEAD)."""

    name = "blob-head"

    def setup(self, server: dpp.Server) -> None:
        """Push the small image."""
        self.bench.app(server)

    def run_round(self, server: dpp.Server, rnd: int) -> list[Sample]:
        """One ab run."""
        sizes, image = self.bench.sizes, self.bench.app(server)
        url = url_of(server, f"/v2/{image.name}/blobs/{image.layer_digest}")
        return self.measure_load(
            server, rnd, lambda: run_ab_head(url, sizes.seconds, sizes.connections, self.bench.tmp)
        )


class PushSmall(Workload):
    """`--small-images` small images (2 blobs + manifest + tag, 5 requests each), `--small-concurrency` at a time,
    spread over as many repositories as there are concurrent pushers."""

    name = "push-small"

    def run_round(self, server: dpp.Server, rnd: int) -> list[Sample]:
        """Push them all (timed), then GET a few manifests back."""
        sizes, pushed = self.bench.sizes, []

        async def one(connection: Connection, i: int) -> None:
            pushed.append(await push_image(connection, f"bench/small-r{rnd}-{i % sizes.small_concurrency}", f"i{i}"))

        def action() -> dict[str, float]:
            started = time.perf_counter()
            run_async(pool(server.port, sizes.small_concurrency, range(sizes.small_images), one))
            return {"push-small": sizes.small_images / (time.perf_counter() - started)}

        samples = self.bench.measure(server, rnd, action, {"images": sizes.small_images, "requests_per_image": 5})
        if len(pushed) != sizes.small_images:
            raise BenchError(f"push-small: {len(pushed)} of {sizes.small_images} images pushed")
        run_async(pool(server.port, 1, pushed[:: max(1, len(pushed) // 8)], check_manifest))
        return samples


class Catalog(Workload):
    """`--catalog-repos` repositories (one tiny blob each, created concurrently before timing); then the first
    catalog page at n=100 (median of 5) and the full walk following Link headers."""

    name = "catalog"
    PAGE = 100

    def __init__(self, bench: Bench) -> None:
        super().__init__(bench)
        self.totals: dict[str, int] = {}

    def setup(self, server: dpp.Server) -> None:
        """Create the repositories; walk once to count every repository the server has."""
        count = self.bench.sizes.catalog_repos
        data = b"catalog bench blob\n"

        async def create(connection: Connection, i: int) -> None:
            await push_blob(connection, f"catalog/r{i:06d}", data)

        started = time.perf_counter()
        run_async(pool(server.port, 16, range(count), create))
        print(f"  {server.name}: created {count} repositories in {time.perf_counter() - started:.1f}s", flush=True)
        names = run_async(self.walk(server.port))
        if sum(name.startswith("catalog/") for name in names) != count:
            raise BenchError(f"{server.name}: the catalog lists {len(names)} repositories, not the {count} created")
        self.totals[server.name] = len(names)

    async def walk(self, port: int) -> list[str]:
        """Every repository name, page by page (n=100), following the Link headers."""
        connection, names = Connection(port), []
        target: str | None = f"/v2/_catalog?n={self.PAGE}"
        try:
            while target is not None:
                reply = expect(await connection.request("GET", target), 200, f"GET {target}")
                names += json.loads(reply.body)["repositories"]
                link = re.search(r'<([^>]+)>;\s*rel="next"', reply.headers.get("link", ""))
                target = target_of(link[1]) if link else None
        finally:
            await connection.close()
        return names

    async def first_pages(self, port: int, times: int) -> list[float]:
        """Milliseconds of `times` GETs of the first page."""
        connection, spent = Connection(port), []
        try:
            for _ in range(times):
                started = time.perf_counter()
                reply = expect(await connection.request("GET", f"/v2/_catalog?n={self.PAGE}"), 200, "GET _catalog")
                spent.append((time.perf_counter() - started) * 1000)
                if len(json.loads(reply.body)["repositories"]) != self.PAGE:
                    raise BenchError("GET _catalog?n=100: not 100 repositories")
        finally:
            await connection.close()
        return spent

    def run_round(self, server: dpp.Server, rnd: int) -> list[Sample]:
        """First page, then the walk."""
        total = self.totals[server.name]

        def first() -> dict[str, float]:
            return {"catalog first page": statistics.median(run_async(self.first_pages(server.port, 5)))}

        def walk() -> dict[str, float]:
            started = time.perf_counter()
            names = run_async(self.walk(server.port))
            spent = (time.perf_counter() - started) * 1000
            if len(names) != total or names != sorted(names):
                raise BenchError(
                    f"{server.name}: catalog walk gave {len(names)} names (sorted: {names == sorted(names)})"
                )
            return {"catalog walk": spent}

        return [
            *self.bench.measure(server, rnd, first),
            *self.bench.measure(server, rnd, walk, {"repositories": total}),
        ]


class DockerPushPull(Workload):
    """`docker push` and `docker pull` of a fresh multi-layer image with the real engine (the image building and
    checks come from bench/docker_push_pull.py). The client CPU column includes dockerd's."""

    name = "docker"

    def __init__(self, bench: Bench) -> None:
        super().__init__(bench)
        sizes = bench.sizes
        self.image = dpp.Workload((sizes.docker_mib // sizes.docker_layers,) * sizes.docker_layers)
        self.base = ""
        self.env: dict[str, str] = {}

    def setup(self, server: dpp.Server) -> None:
        """Import the busybox base image once."""
        if not self.base:
            self.env = dpp.docker_build_env()
            self.base = dpp.import_base(self.bench.run)

    def run_round(self, server: dpp.Server, rnd: int) -> list[Sample]:
        """Build a fresh image, push it (timed), drop it, pull it (timed), check its id, drop it."""
        run = self.bench.run
        local = f"bench-pushpull-{run.suffix}:{server.name}-docker-r{rnd}"
        image_id = dpp.build_image(run, self.base, self.image, local, self.env)
        ref = f"{server.host}/bench-{run.suffix}/docker-r{rnd}:latest"
        dpp.docker("tag", local, ref)
        run.tags.add(ref)
        dockerd = pids_named("dockerd")
        extra = {"image": self.image.name}

        def push() -> dict[str, float]:
            started = time.perf_counter()
            dpp.docker("push", ref)
            return {"docker push": time.perf_counter() - started}

        def pull() -> dict[str, float]:
            started = time.perf_counter()
            dpp.docker("pull", ref)
            return {"docker pull": time.perf_counter() - started}

        samples = self.bench.measure(server, rnd, push, extra, dockerd)
        dpp.remove_image(image_id)
        samples += self.bench.measure(server, rnd, pull, extra, dockerd)
        if dpp.image_id_of(ref) != image_id:
            raise BenchError(f"pulled {ref} as {dpp.image_id_of(ref)}, pushed {image_id}")
        dpp.remove_image(image_id)
        return samples


class S3Storage(Workload):
    """The large blob again with both registries keeping blobs in S3 (SeaweedFS, started here; the index of ours
    stays SQLite): for each server kind, one twin proxying blob GETs and one answering them with a 307 to a
    presigned S3 URL (curl follows it). Timed: streamed push, chunked push, full GET through the registry, full
    GET by redirect."""

    name = "s3"

    def __init__(self, bench: Bench) -> None:
        super().__init__(bench)
        self.s3: Any = None
        self.twins: dict[tuple[str, bool], dpp.Server] = {}
        self.digests: dict[tuple[str, bool], str] = {}

    def storage(self) -> Any:
        """SeaweedFS, started on first use."""
        if self.s3 is None:
            sys.path.insert(0, str(dpp.BENCH_DIR.parent))
            from tests.support.services import SeaweedS3

            self.s3 = SeaweedS3(self.bench.tmp / "seaweed")
            self.s3.start()
        return self.s3

    def start_twin(self, server: dpp.Server, redirect: bool) -> dpp.Server:
        s3 = self.storage()
        bucket = f"{server.name[:4]}-{'redirect' if redirect else 'proxy'}"
        s3.create_bucket(bucket)
        directory = f"{server.name}-s3-{'redirect' if redirect else 'proxy'}"
        if server.name == "ours":
            env = {
                **s3.env(),
                "REGISTRY_STORAGE_S3_BUCKET": bucket,
                "REGISTRY_STORAGE_S3_ENDPOINT": s3.endpoint,
                "REGISTRY_STORAGE_S3_REGION": s3.region,
                "REGISTRY_STORAGE_S3_REDIRECT": str(redirect).lower(),
            }
            return dpp.start_ours(self.bench.tmp, env, directory, access_log=False)
        storage = (
            f"  s3:\n    accesskey: {s3.access_key}\n    secretkey: {s3.secret_key}\n    region: {s3.region}\n"
            f"    regionendpoint: {s3.endpoint}\n    bucket: {bucket}\n    secure: false\n    v4auth: true\n"
            f"  redirect:\n    disable: {str(not redirect).lower()}\n"
        )
        return dpp.start_distribution(self.bench.tmp, log_level="error", storage=storage, directory=directory)

    def setup(self, server: dpp.Server) -> None:
        """Start both twins of `server` and push the blob that the GETs fetch to each (checked)."""
        blob = self.bench.large_blob()
        for redirect in (False, True):
            twin = self.twins[server.name, redirect] = self.start_twin(server, redirect)
            settle_workers(twin)
            digest = blob.next_variant()
            push_streamed(twin, "bench/s3-pull", blob)
            if blob_sha256(twin, "bench/s3-pull", digest, "-L") != digest:
                raise BenchError(f"{server.name} on S3: GET bench/s3-pull@{digest} returned other bytes")
            self.digests[server.name, redirect] = digest

    def run_round(self, server: dpp.Server, rnd: int) -> list[Sample]:
        """Pushes on the proxying twin, then a GET from each twin."""
        blob, samples = self.bench.large_blob(), []
        proxy = self.twins[server.name, False]
        for metric, how in (("s3 push-large streamed", push_streamed), ("s3 push-chunked", push_chunked)):
            samples += self.bench.timed_push(proxy, rnd, metric, how)
        for redirect, metric in ((False, "s3 pull-large proxied"), (True, "s3 pull-large redirect")):
            twin = self.twins[server.name, redirect]
            url = url_of(twin, f"/v2/bench/s3-pull/blobs/{self.digests[server.name, redirect]}")

            def get(url: str = url, metric: str = metric) -> dict[str, float]:
                seconds = pull(url, 200, blob.size, 2, "-L")
                return {metric: 2 * blob.mib / seconds, ACTIVE: seconds}

            samples += self.bench.measure(twin, rnd, get)
        return samples

    def teardown(self) -> None:
        """Stop the twins and SeaweedFS."""
        for twin in self.twins.values():
            dpp.stop(twin)
        if self.s3 is not None:
            self.s3.close()


class HeldLoad(Workload):
    """bench/load.py: keep-alive connections pulling a manifest and a blob for a while, as fast as answered, while as
    many slow sockets dribble request heads they never finish. A wrong answer fails the run; the stats (errors:
    wrong answers, answers slower than 30 s and dropped connections; slow sockets held; RSS sampled from /proc)
    go with the samples."""

    name = "load"

    def run_round(self, server: dpp.Server, rnd: int) -> list[Sample]:
        sizes = self.bench.sizes

        def load() -> dict[str, Any]:
            stats = held_load.load(
                server.port,
                connections=sizes.load_connections,
                slow=sizes.load_slow,
                seconds=sizes.load_seconds,
                server_pid=server.proc.pid,
            )
            print(f"  {server.name}: " + ", ".join(f"{k} {v}" for k, v in stats.items()), flush=True)
            wrong = {kind: n for kind, n in stats["error_kinds"].items() if kind in held_load.WRONG_ANSWERS}
            if wrong:
                raise BenchError(f"load on {server.name}: wrong answers {wrong}")
            return stats

        return self.measure_load(server, rnd, load)


SOAK = "soak"  # bench/soak.py, run after the paired workloads with its own server
WORKLOADS: dict[str, type[Workload]] = {
    w.name: w
    for w in (
        PushLarge,
        PushChunked,
        PullLarge,
        ManifestGet,
        BlobHead,
        PushSmall,
        Catalog,
        DockerPushPull,
        S3Storage,
        HeldLoad,
    )
}


def run_workload(bench: Bench, workload: Workload) -> None:
    """Set up both servers, then the rounds alternating servers, recording each server's peak RSS meanwhile."""
    print(f"\n== {workload.name}", flush=True)
    try:
        for server in bench.servers:
            workload.setup(server)
        for server in bench.servers:
            reset_peaks(server.proc.pid)
        for rnd in range(bench.sizes.rounds):
            for server in bench.servers:
                for s in workload.run_round(server, rnd):
                    print(
                        f"  r{rnd} {server.name:>12} {s.metric:<22} {s.value:>10.2f}   wall {s.wall_s:6.2f}s"
                        f"  server cpu {s.server_cpu_s:6.2f}s  client cpu {s.client_cpu_s:6.2f}s  load {s.load:.1f}",
                        flush=True,
                    )
        bench.peaks[workload.name] = {server.name: peaks_kib(server.proc.pid) for server in bench.servers}
    finally:
        workload.teardown()


# --------------------------------------------------------------------------------------------- report


MIN_JUDGED_WALL_S = 0.5  # CPU times tick every 10 ms: shorter measurements say nothing about the bottleneck


def cores(samples: list[Sample], key: str, per: str = "wall_s") -> float:
    """Median over samples of `key` (a CPU seconds field) per second of `per` (wall_s, or active_s: the time
    requests were in flight, which leaves out the gaps while curl processes start)."""
    return statistics.median(getattr(s, key) / getattr(s, per) for s in samples if getattr(s, per)) if samples else 0.0


def bottleneck(samples: list[Sample]) -> str:
    """A rough label for what limited our server in these samples: its CPU (for one-request-at-a-time transfers,
    all its processes together while a request was in flight, since consecutive requests may land on different
    workers; under concurrent load, its busiest process, as a Python worker runs one request's code at a time),
    the client, the machine's CPUs being full (server, client and other users of the machine together), waiting on
    disk, or none of these (latency, locks, sleeps)."""
    if not samples or statistics.median(s.wall_s for s in samples) < MIN_JUDGED_WALL_S:
        return "too short to judge"
    cpus = os.cpu_count() or 1
    client, server = cores(samples, "client_cpu_s"), cores(samples, "server_cpu_s")
    busy, iowait = cores(samples, "machine_busy_s"), cores(samples, "machine_iowait_s")
    if all(s.sequential for s in samples):
        in_flight = cores(samples, "server_cpu_s", "active_s")
        if in_flight >= 0.85:
            return f"server CPU: {in_flight:.2f} cores while a request was in flight"
    elif (busiest := cores(samples, "server_busiest_cpu_s")) >= 0.85:
        return f"server CPU: busiest process at {busiest:.2f} cores"
    if client >= 0.85:
        return f"client CPU ({client:.2f} cores)"
    if busy >= 0.85 * cpus:
        return (
            f"machine CPU full: server {server:.2f}, client {client:.2f}, others {max(0.0, busy - server - client):.2f}"
        )
    if iowait >= 0.3:
        return f"disk ({iowait:.2f} cores in iowait)"
    return "not CPU (waits, locks, latency)"


def summary_rows(bench: Bench) -> list[dict[str, Any]]:
    """One row per metric measured on both servers, plus the push-large peak RSS row."""
    rows = []
    for metric in METRICS:
        ours = [s for s in bench.samples if s.metric == metric.name and s.server == "ours"]
        theirs = [s for s in bench.samples if s.metric == metric.name and s.server == "distribution"]
        if not ours or not theirs:
            continue
        ours_median = statistics.median(s.value for s in ours)
        theirs_median = statistics.median(s.value for s in theirs)
        ratio = ours_median / theirs_median if theirs_median else float("inf")
        rows.append(
            {
                "metric": metric.name,
                "unit": metric.unit,
                "ours": round(ours_median, 3),
                "distribution": round(theirs_median, 3),
                "ratio": float(f"{ratio:.4g}"),
                "target": metric.target_text(),
                "met": metric.met(ratio),
                "ours_values": [s.value for s in ours],
                "distribution_values": [s.value for s in theirs],
                "ours_server_cores": round(cores(ours, "server_cpu_s"), 2),
                "ours_busiest_process_cores": round(cores(ours, "server_busiest_cpu_s"), 2),
                "ours_server_cores_in_flight": round(cores(ours, "server_cpu_s", "active_s"), 2),
                "ours_iowait_cores": round(cores(ours, "machine_iowait_s"), 2),
                "ours_client_cores": round(cores(ours, "client_cpu_s"), 2),
                "ours_machine_busy_cores": round(cores(ours, "machine_busy_s"), 2),
                "distribution_server_cores": round(cores(theirs, "server_cpu_s"), 2),
                "distribution_client_cores": round(cores(theirs, "client_cpu_s"), 2),
                "distribution_machine_busy_cores": round(cores(theirs, "machine_busy_s"), 2),
                "ours_bottleneck": bottleneck(ours),
            }
        )
    if "push-large" in bench.peaks:
        peaks = bench.peaks["push-large"]
        ours_max = max(peaks["ours"].values()) / 1024
        theirs_max = max(peaks["distribution"].values()) / 1024
        rows.append(
            {
                "metric": "peak RSS push-large",
                "unit": "MiB/proc",
                "ours": round(ours_max, 1),
                "distribution": round(theirs_max, 1),
                "ratio": float(f"{ours_max / theirs_max:.4g}"),
                "target": f"< {RSS_LIMIT_MIB} MiB",
                "met": ours_max < RSS_LIMIT_MIB,
                "ours_sum_mib": round(sum(peaks["ours"].values()) / 1024, 1),
            }
        )
    return rows


def ratio_text(ratio: float) -> str:
    """A ratio with three significant digits (`11.4x`, `0.95x`, `0.00291x`)."""
    return f"{ratio:.3g}x"


def status_text(met: bool | None) -> str:
    """`met`, `MISSED` or blank."""
    return "" if met is None else ("met" if met else "MISSED")


def print_report(rows: list[dict[str, Any]], bench: Bench) -> None:
    """The medians table with ratios, targets and the CPU / bottleneck columns, then peak RSS per workload."""
    print()
    header = f"{'metric':<22} {'unit':<9} {'ours':>10} {'distribution':>13} {'ours/theirs':>11} {'target':>11} {'':<6}"
    print(header + f" | {'ours srv':>8} {'client':>6} {'machine':>7} {'dist srv':>8}  ours limited by")
    blank = f"{'':<22} {'':<9} {'median':>10} {'median':>13} {'':>11} {'':>11} {'':<6}"
    print(blank + f" | {'(CPU cores in use, median)':>32}")
    for row in rows:
        line = (
            f"{row['metric']:<22} {row['unit']:<9} {row['ours']:>10.2f} {row['distribution']:>13.2f}"
            f" {ratio_text(row['ratio']):>11} {row['target']:>11} {status_text(row['met']):<6}"
        )
        if "ours_server_cores" in row:
            line += (
                f" | {row['ours_server_cores']:>8.2f} {row['ours_client_cores']:>6.2f}"
                f" {row['ours_machine_busy_cores']:>7.2f} {row['distribution_server_cores']:>8.2f}"
                f"  {row['ours_bottleneck']}"
            )
        print(line)
    print()
    for name, per_server in bench.peaks.items():
        parts = []
        for server, peaks in per_server.items():
            each = "+".join(f"{kib / 1024:.0f}" for kib in peaks.values())
            parts.append(f"{server} {max(peaks.values()) / 1024:.0f} MiB max/proc ({each})")
        print(f"peak RSS {name:<13} {'; '.join(parts)}")


def tool_versions() -> dict[str, str]:
    """Versions of the project, Docker, Distribution, Python (from docker_push_pull) and of wrk, ab and curl."""
    try:
        found = dpp.versions()
    except (OSError, RuntimeError) as e:
        found = {"error": str(e)}
    for tool, args in (("wrk", ["wrk", "--version"]), ("ab", ["ab", "-V"]), ("curl", ["curl", "--version"])):
        done = subprocess.run(args, capture_output=True, text=True)
        found[tool] = (done.stdout or done.stderr).splitlines()[0].strip() if (done.stdout or done.stderr) else "?"
    return found


def log_problems(bench: Bench) -> list[str]:
    """Warnings, errors and 5xx lines from both servers' logs (Docker's TLS probes excluded)."""
    problems = []
    for server in bench.servers:
        server.log_offset = 0
        _, found = dpp.read_new_log(server)
        problems += [f"{server.name}: {line}" for line in found]
    return problems


def write_results(bench: Bench, args: argparse.Namespace, rows: list[dict[str, Any]], problems: list[str]) -> Path:
    """Write the JSON document (configuration, versions, summary, every sample, peak RSS, log problems)."""
    path = RESULTS_DIR / ("bench-quick.json" if args.quick else "bench.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "benchmark": "bench/run.py",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "config": {
            **asdict(bench.sizes),
            "only": args.only,
            "quick": args.quick,
            "ours_env": dict(args.ours_env),
            "distribution_cache": "inmemory" if args.distribution_cache else "none",
            "ours_processes": bench.processes.get("ours"),
            "single_post_monolithic": bench.single_post,
            "cpus": os.cpu_count(),
        },
        "versions": tool_versions(),
        "summary": rows,
        "peak_rss_kib": {
            w: {s: {str(p): k for p, k in peaks.items()} for s, peaks in per.items()} for w, per in bench.peaks.items()
        },
        "samples": [asdict(s) for s in bench.samples],
        "log_problems": problems[:100],
    }
    path.write_text(json.dumps(document, indent=2) + "\n")
    return path


def plot_ratios(rows: list[dict[str, Any]], args: argparse.Namespace) -> Path | None:
    """A horizontal bar chart (log scale) of every ratio ours/theirs with its target; None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install -e '.[bench]'): no chart")
        return None
    rows = [r for r in rows if r["ratio"] > 0 and r["unit"] != "MiB/proc"]
    colors = ["tab:gray" if r["met"] is None else ("tab:green" if r["met"] else "tab:red") for r in rows]
    fig, ax = plt.subplots(figsize=(9, 0.42 * len(rows) + 1.8))
    positions = range(len(rows))
    ax.barh(list(positions), [r["ratio"] - 1.0 for r in rows], left=1.0, color=colors)
    for i, row in enumerate(rows):
        metric = next(m for m in METRICS if m.name == row["metric"])
        if metric.target is not None:
            ax.plot([metric.target] * 2, [i - 0.4, i + 0.4], color="black", linewidth=2)
        ax.annotate(ratio_text(row["ratio"]), (row["ratio"], i), xytext=(4, -3), textcoords="offset points", fontsize=8)
    ax.set_yticks(list(positions), [f"{r['metric']} ({r['unit']})" for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.axvline(1.0, color="gray", linestyle=":", linewidth=1)
    env = " ".join(f"{k}={v}" for k, v in args.ours_env) or "default settings"
    ax.set_title(f"ours / Distribution 2.8.2 (median of {args.sizes.rounds}); black bar: target; {env}", fontsize=9)
    ax.set_xlabel("ratio ours/theirs (higher is better for rates, lower for ms and s)")
    fig.tight_layout()
    path = RESULTS_DIR / ("ratios-quick.png" if args.quick else "ratios.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------------------------- main

DEFAULTS = {
    "rounds": (3, 1),
    "large_mib": (512, 64),
    "chunk_mib": (8, 8),
    "range_mib": (64, 16),
    "seconds": (10, 3),
    "connections": (64, 64),
    "small_images": (500, 100),
    "small_concurrency": (16, 16),
    "catalog_repos": (10000, 1000),
    "docker_mib": (300, 30),
    "docker_layers": (3, 3),
    "load_connections": (2000, 200),
    "load_slow": (2000, 200),
    "load_seconds": (60, 5),
}


def env_pair(text: str) -> tuple[str, str]:
    """Parse `KEY=VALUE` for --ours-env."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options; sizes left unset take the default or, with --quick, the quick default."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    every = [*WORKLOADS, SOAK]
    parser.add_argument(
        "--only", default=",".join(every), help=f"comma-separated workloads (default all: {','.join(every)})"
    )
    parser.add_argument("--soak-minutes", type=float, default=None, help="how long the soak runs (30, --quick 3)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 round and small sizes")
    parser.add_argument(
        "--ours-env",
        type=env_pair,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for our server, e.g. REGISTRY_HTTP_WORKERS=2 (repeatable)",
    )
    parser.add_argument(
        "--distribution-cache",
        action="store_true",
        help="turn on Distribution's in-memory blob descriptor cache (storage.cache.blobdescriptor: inmemory)",
    )
    parser.add_argument("--keep-logs", action="store_true", help="copy both servers' logs to bench/results/")
    for name, (normal, quick) in DEFAULTS.items():
        parser.add_argument(
            f"--{name.replace('_', '-')}", type=int, default=None, help=f"default {normal}, --quick {quick}"
        )
    args = parser.parse_args(argv)
    args.sizes = Sizes(
        **{n: getattr(args, n) if getattr(args, n) is not None else d[args.quick] for n, d in DEFAULTS.items()}
    )
    args.workloads = [w.strip() for w in args.only.split(",") if w.strip()]
    unknown = [w for w in args.workloads if w not in every]
    if unknown:
        parser.error(f"unknown workload(s) {', '.join(unknown)}; choose from {', '.join(every)}")
    if args.soak_minutes is None:
        args.soak_minutes = 3.0 if args.quick else 30.0
    if args.sizes.large_mib < 1 or args.sizes.chunk_mib < 1 or args.sizes.docker_layers < 1:
        parser.error("--large-mib, --chunk-mib and --docker-layers must be at least 1")
    return args


def preflight(args: argparse.Namespace, tmp: Path) -> None:
    """Fail early when a tool is missing or the disk cannot hold what the servers will keep."""
    needed = ["curl", "wrk", "ab"] + (["docker"] if "docker" in args.workloads else [])
    missing = [tool for tool in needed if shutil.which(tool) is None]
    if missing or not dpp.DISTRIBUTION_BIN.exists() or not dpp.OURS_BIN.exists():
        sys.exit(f"missing: {', '.join(missing) or '-'}; run bench/deps.sh (and make the venv) first")
    if "docker" in args.workloads and dpp.docker("info", check=False).returncode != 0:
        sys.exit("the Docker engine is not usable; leave the docker workload out with --only")
    s = args.sizes
    pushes = s.rounds * (3 * ("push-large" in args.workloads) + ("push-chunked" in args.workloads)) + 1
    pushes += (2 * s.rounds + 2) * ("s3" in args.workloads)  # SeaweedFS keeps what both registries push there
    docker = s.rounds * s.docker_mib * ("docker" in args.workloads)
    need_mib = 2 * (pushes * s.large_mib + docker) + 2 * s.large_mib + 1024
    free_mib = shutil.disk_usage(tmp).free // MIB
    if free_mib < need_mib:
        sys.exit(f"{tmp}: {free_mib} MiB free, this run needs about {need_mib} MiB")
    print(f"temp dir {tmp} ({free_mib} MiB free, this run writes about {need_mib} MiB)")


def main(argv: list[str] | None = None) -> None:
    """Run the selected paired workloads (both servers), then the soak if selected."""
    args = parse_args(argv)
    if any(w in WORKLOADS for w in args.workloads):
        compare(args)
    if SOAK in args.workloads:
        import soak  # bench/soak.py, which imports this module: only imported when it runs

        soak.main(["--minutes", str(args.soak_minutes), *(f"--ours-env={k}={v}" for k, v in args.ours_env)])


def compare(args: argparse.Namespace) -> None:
    """Start both servers, run the selected workloads in alternation, report, clean up."""
    run = dpp.Run(suffix=secrets.token_hex(4), tmp=Path(tempfile.mkdtemp(prefix="bench-run-")))
    bench = Bench(args.sizes, run)
    started = time.monotonic()
    try:
        preflight(args, run.tmp)
        run.servers = bench.servers = [
            dpp.start_ours(run.tmp, dict(args.ours_env), access_log=False),
            dpp.start_distribution(run.tmp, log_level="error", cache=args.distribution_cache),
        ]
        for server in bench.servers:
            bench.processes[server.name] = settle_workers(server)
            server.baseline_rss_kib = sum(dpp.proc_status_kib(p, "VmRSS") for p in dpp.tree_pids(server.proc.pid))
            print(
                f"{server.name} on {server.host}: pid {server.proc.pid}, {bench.processes[server.name]} process(es),"
                f" idle RSS {server.baseline_rss_kib / 1024:.0f} MiB",
                flush=True,
            )
        if args.ours_env:
            print("ours env: " + " ".join(f"{k}={v}" for k, v in args.ours_env))
        for name in args.workloads:
            if name in WORKLOADS:
                run_workload(bench, WORKLOADS[name](bench))
        rows = summary_rows(bench)
        print_report(rows, bench)
        problems = log_problems(bench)
        for line in problems[:20]:
            print(f"log problem: {line}")
        print(f"\nwrote {write_results(bench, args, rows, problems)}")
        chart = plot_ratios(rows, args)
        if chart is not None:
            print(f"wrote {chart}")
        print(f"total {time.monotonic() - started:.0f}s")
    finally:
        if args.keep_logs:
            for server in bench.servers:
                with contextlib.suppress(OSError):
                    shutil.copy(server.log_path, RESULTS_DIR / f"bench.{server.name}.log")
        for server in bench.servers:
            dpp.stop(server)
        dpp.cleanup(run)


if __name__ == "__main__":
    main()
