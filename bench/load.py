"""Held load: keep-alive clients pulling a manifest and a blob while slow sockets dribble unfinished request heads.

Pushes one small image, then for `--seconds` runs `--connections` keep-alive connections, each sending GET manifest
and GET blob in turn as fast as answered (every answer checked: status, length), while `--slow` more sockets each
send part of a request head and one more header line every `--dribble-s` seconds, never finishing it; a socket the
server closes is opened again at once. Samples the server's RSS from /proc every second. Loopback only; stops by
itself; one client process on a shared machine: its own CPU can be what limits the rate.

Run from the project directory:
      .venv/bin/python -m bench.load --port 5000 [--connections 2000 --slow 2000 --seconds 60 --pid SERVER_PID]
As a workload of the suite:  .venv/bin/python -m bench.run --only load
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bench import HOST
from bench.client import OCI_MANIFEST, Connection, parse_headers, push_image, run_async
from bench.metrics import rss_kib, tree_pids

CONNECT_TIMEOUT_S = 10.0
ANSWER_TIMEOUT_S = 30.0  # an answer slower than this counts as an error
WRONG_ANSWERS = ("HTTP", "short body")  # error kinds that are wrong answers, not slow or dropped ones


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


async def read_answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response with a Content-Length: status, headers (lower-case names), body."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = parse_headers(lines[1:])
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return status, headers, body


async def puller(
    port: int, requests: list[tuple[bytes, int]], until: float, tally: Tally, started: asyncio.Event
) -> None:
    """One keep-alive connection sending `requests` (raw request, expected body length) in turn until `until`;
    reconnects after an error."""
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    turn = 0
    first = True
    while time.monotonic() < until:
        try:
            if writer is None:
                reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), CONNECT_TIMEOUT_S)
                if first:
                    first = False
                    await started.wait()
            assert reader is not None and writer is not None
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


async def sample_rss(
    pids: Callable[[], list[int]], until: float, samples: list[int], held: list[int], tally: Tally
) -> None:
    """Every second until `until`: the summed RSS of `pids()` and how many slow sockets are held."""
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
    connection = Connection(port)
    try:
        image = await push_image(connection, "bench/load", "latest", 16 << 10)
    finally:
        await connection.close()
    host = f"Host: {HOST}:{port}\r\n"
    manifest_target, blob_target = (
        f"/v2/{image.name}/manifests/{image.tag}",
        f"/v2/{image.name}/blobs/{image.layer_digest}",
    )
    requests = [
        (f"GET {manifest_target} HTTP/1.1\r\n{host}Accept: {OCI_MANIFEST}\r\n\r\n".encode(), image.manifest_size),
        (f"GET {blob_target} HTTP/1.1\r\n{host}\r\n".encode(), image.layer_size),
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
    return run_async(run_load(port, **options))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.load", description=(__doc__ or "").splitlines()[0])
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
