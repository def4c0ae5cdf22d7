"""Held load: keep-alive clients pulling a manifest and a blob while slow sockets dribble unfinished request heads.

Pushes one small image, then for `--seconds` runs `--connections` keep-alive connections, each sending GET manifest
and GET blob in turn as fast as answered (every answer checked: status, length), while `--slow` more sockets each
send part of a request head and one more header line every `--dribble-s` seconds, never finishing it; a socket the
server closes is opened again at once. Samples the server's RSS from /proc every second. Loopback only; stops by
itself; one client process on a shared machine: its own CPU can be what limits the rate.

Run:  .venv/bin/python bench/load.py --port 5000 [--connections 2000 --slow 2000 --seconds 60 --pid SERVER_PID]
As a workload of bench/run.py:  .venv/bin/python bench/run.py --only load
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
CONNECT_TIMEOUT_S = 10.0
ANSWER_TIMEOUT_S = 30.0  # an answer slower than this counts as an error
WRONG_ANSWERS = ("HTTP", "short body")  # error kinds that are wrong answers, not slow or dropped ones


class LoadError(RuntimeError):
    """The image could not be pushed: the load numbers would not mean anything."""


@dataclass
class Tally:
    """What the clients saw."""

    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    error_kinds: dict[str, int] = field(default_factory=dict)
    statuses: dict[int, int] = field(default_factory=dict)  # of the wrong answers
    slow_reopened: int = 0
    slow_refused: int = 0
    slow_open: int = 0

    def error(self, kind: str) -> None:
        self.errors += 1
        self.error_kinds[kind] = self.error_kinds.get(kind, 0) + 1


def raise_open_files() -> int:
    """This process's open-file soft limit raised to its hard limit; returns it."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def tree_pids(root: int) -> list[int]:
    """`root` and its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return found


def rss_kib(pids: list[int]) -> int:
    """Summed VmRSS of `pids` (those gone count 0)."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


async def read_answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response with a Content-Length: status, headers (lower-case names), body."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return status, headers, body


async def exchange(
    port: int, method: str, target: str, body: bytes = b"", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """One request on its own connection."""
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        lines = [f"{method} {target} HTTP/1.1", f"Host: {HOST}:{port}", f"Content-Length: {len(body)}"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        return await asyncio.wait_for(read_answer(reader), ANSWER_TIMEOUT_S)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def push_blob(port: int, name: str, data: bytes) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    status, headers, _ = await exchange(port, "POST", f"/v2/{name}/blobs/uploads/")
    if status != 202:
        raise LoadError(f"POST upload: HTTP {status}")
    location = headers["location"]
    location = location.split(f"{port}", 1)[1] if location.startswith("http") else location
    separator = "&" if "?" in location else "?"
    status, _, _ = await exchange(port, "PUT", f"{location}{separator}digest={digest}", data)
    if status != 201:
        raise LoadError(f"PUT upload: HTTP {status}")
    return digest


async def push_image(port: int, name: str, layer_size: int) -> tuple[str, bytes, str, int]:
    """Push a small image; return the manifest target, its bytes, the layer's blob target and size."""
    layer = os.urandom(layer_size)
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}})
    config_digest = await push_blob(port, name, config.encode())
    layer_digest = await push_blob(port, name, layer)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest,
                "size": len(config),
            },
            "layers": [
                {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer_digest, "size": layer_size}
            ],
        }
    ).encode()
    headers = {"Content-Type": OCI_MANIFEST}
    status, _, _ = await exchange(port, "PUT", f"/v2/{name}/manifests/latest", manifest, headers)
    if status != 201:
        raise LoadError(f"PUT manifest: HTTP {status}")
    return f"/v2/{name}/manifests/latest", manifest, f"/v2/{name}/blobs/{layer_digest}", layer_size


async def puller(
    port: int, requests: list[tuple[bytes, int]], until: float, tally: Tally, started: asyncio.Event
) -> None:
    """One keep-alive connection sending `requests` (raw request, expected body length) in turn until `until`;
    reconnects after an error."""
    reader = writer = None
    turn = 0
    first = True
    while time.monotonic() < until:
        try:
            if writer is None:
                reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), CONNECT_TIMEOUT_S)
                if first:
                    first = False
                    await started.wait()
            assert reader is not None
            raw, length = requests[turn % len(requests)]
            turn += 1
            begun = time.monotonic()
            writer.write(raw)
            status, headers, body = await asyncio.wait_for(read_answer(reader), ANSWER_TIMEOUT_S)
            if status != 200 or len(body) != length:
                tally.error("HTTP" if status != 200 else "short body")
                tally.statuses[status] = tally.statuses.get(status, 0) + 1
            else:
                tally.latencies.append(time.monotonic() - begun)
            if headers.get("connection", "").lower() == "close":
                writer.close()
                writer = None
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError, IndexError) as e:
            tally.error(type(e).__name__)
            if writer is not None:
                writer.close()
            writer = None
            await asyncio.sleep(0.05)
    if writer is not None:
        writer.close()


async def dribbler(port: int, until: float, dribble_s: float, tally: Tally) -> None:
    """A socket that sends part of a request head, then one header line every `dribble_s`, never the end; when the
    server closes it (or answers it), another takes its place."""
    while time.monotonic() < until:
        writer = None
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), CONNECT_TIMEOUT_S)
            writer.write(b"GET /v2/ HTTP/1.1\r\nHost: slow\r\n")
            tally.slow_open += 1
            try:
                while time.monotonic() < until:
                    try:
                        answer = await asyncio.wait_for(reader.read(1024), dribble_s)
                    except TimeoutError:
                        writer.write(b"X-Slow: 1\r\n")
                        continue
                    if answer:
                        tally.slow_refused += 1
                    break
            finally:
                tally.slow_open -= 1
            tally.slow_reopened += 1
        except (TimeoutError, OSError):
            await asyncio.sleep(0.1)
        finally:
            if writer is not None:
                writer.close()


async def sample_rss(pids: Callable[[], list[int]], until: float, samples: list[int], held: list[int], tally: Tally):
    while time.monotonic() < until:
        samples.append(rss_kib(pids()))
        held.append(tally.slow_open)
        await asyncio.sleep(1.0)


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else float("nan")


async def run_load(
    port: int, *, connections: int, slow: int, seconds: float, dribble_s: float = 1.0, server_pid: int | None = None
) -> dict[str, Any]:
    """Push an image, hold the load for `seconds`, return the stats: rate (answers/s), p50/p99 (ms), errors, ..."""
    manifest_target, manifest, blob_target, blob_size = await push_image(port, "bench/load", 16 << 10)
    host = f"Host: {HOST}:{port}\r\n"
    requests = [
        (f"GET {manifest_target} HTTP/1.1\r\n{host}Accept: {OCI_MANIFEST}\r\n\r\n".encode(), len(manifest)),
        (f"GET {blob_target} HTTP/1.1\r\n{host}\r\n".encode(), blob_size),
    ]
    tally = Tally()
    loop_started = time.monotonic()
    slow_until = loop_started + seconds + 5
    dribblers = [asyncio.create_task(dribbler(port, slow_until, dribble_s, tally)) for _ in range(slow)]
    await asyncio.sleep(min(3.0, 0.5 + slow / 2000))  # the slow sockets are in place before the clock starts
    started = asyncio.Event()
    until = time.monotonic() + seconds + 2
    pullers = [asyncio.create_task(puller(port, requests, until, tally, started)) for _ in range(connections)]
    await asyncio.sleep(2.0)  # the pullers connect
    tally.latencies.clear()
    tally.errors, tally.error_kinds, tally.statuses = 0, {}, {}
    rss: list[int] = []
    held: list[int] = []
    pids = (lambda: tree_pids(server_pid)) if server_pid else (lambda: [])
    clock = time.monotonic()
    started.set()
    sampler = asyncio.create_task(sample_rss(pids, until, rss, held, tally))
    await asyncio.gather(*pullers)
    elapsed = time.monotonic() - clock
    for task in dribblers:
        task.cancel()
    await asyncio.gather(*dribblers, sampler, return_exceptions=True)
    latencies = tally.latencies
    return {
        "rate": len(latencies) / elapsed,
        "p50": percentile(latencies, 0.50) * 1000,
        "p99": percentile(latencies, 0.99) * 1000,
        "answers": len(latencies),
        "errors": tally.errors,
        "error_kinds": tally.error_kinds,
        "wrong_statuses": tally.statuses,
        "seconds": round(elapsed, 1),
        "connections": connections,
        "slow": slow,
        "slow_held_median": statistics.median(held) if held else 0,
        "slow_reopened": tally.slow_reopened,
        "slow_answered": tally.slow_refused,
        "rss_first_mib": rss[0] / 1024 if rss else None,
        "rss_peak_mib": max(rss) / 1024 if rss else None,
        "rss_last_mib": rss[-1] / 1024 if rss else None,
    }


def load(port: int, **options: Any) -> dict[str, Any]:
    """`run_load` on a fresh event loop (uvloop when installed), with the open-file limit raised."""
    raise_open_files()
    try:
        import uvloop

        return uvloop.run(run_load(port, **options))
    except ImportError:
        return asyncio.run(run_load(port, **options))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True, help="the registry on 127.0.0.1")
    parser.add_argument("--connections", type=int, default=2000, help="keep-alive pulling connections")
    parser.add_argument("--slow", type=int, default=2000, help="sockets dribbling unfinished request heads")
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--dribble-s", type=float, default=1.0, help="seconds between a slow socket's header lines")
    parser.add_argument("--pid", type=int, help="the server's main process: its tree's RSS is sampled")
    args = parser.parse_args()
    stats = load(
        args.port,
        connections=args.connections,
        slow=args.slow,
        seconds=args.seconds,
        dribble_s=args.dribble_s,
        server_pid=args.pid,
    )
    print(json.dumps(stats, indent=2, default=str))


if __name__ == "__main__":
    main()
