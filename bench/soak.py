"""Soak: mixed registry traffic for `--minutes` against a 2-worker server, worker RSS sampled every 30 s, judged flat.

Starts `registry serve` (through `bench.servers.start_ours`) with fresh disk storage, `--workers` workers, the
server's own collector every `--gc-interval` (grace `--gc-grace`, abandoned uploads purged after `--purge-after`) and
a manifest cache of `--cache-bytes` a worker (1 MiB, so that it is full within the warm-up), then runs `--clients`
loopback client tasks at `--rate` operations a second in all (100, about 200 requests/s: a steady load, not the
machine's limit), each on its own keep-alive connection, doing a weighted mix of:
monolithic (single POST ?digest=) and chunked (POST, PATCH..., PUT) pushes of small images, images of shared layers
mounted across repositories, manifest GET/HEAD by tag and digest, blob GETs whole and with Range, tag lists, catalog
pages, tag deletes and manifest deletes (each pushed image is retired: its tag deleted, a pull checked 404, then its
manifest deleted, so the collector always has blobs to remove), and abandoned uploads (for the upload purge). Every
answer is checked; a wrong one counts as an error, it does not stop the run.

Every `--interval` seconds it samples the RSS (and anonymous RSS) of the server and of each worker (the server's
child processes, from /proc), prints a row, and at the end writes bench/results/soak.json (soak-short.json for runs
shorter than 10 minutes) and a verdict. A worker is flat when, in MiB, the median RSS of the last third of the
samples exceeds that of the middle third by at most `--max-growth`, and the least-squares slope of its RSS over
the second half is at most `--max-slope` MiB/min. The first third is warm-up (caches, allocator arenas, the index's
page cache fill there). A worker that restarts, or errors above 0.1% of requests, also fail the run.

Run from the project directory:
      .venv/bin/python -m bench.soak                  (30 minutes)
      .venv/bin/python -m bench.soak --minutes 3      (a shake-out run)
      make soak                                       (the same as the first)
Other users of the machine change the request rate, not whether RSS is flat.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import secrets
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench import RESULTS_DIR, BenchError, command_line
from bench.client import (
    OCI_CONFIG,
    OCI_LAYER,
    OCI_MANIFEST,
    OCTET,
    Connection,
    Reply,
    expect,
    run_async,
    sha256_digest,
    target_of,
    with_query,
)
from bench.logs import read_new_log
from bench.metrics import load_average, proc_status_kib, tree_pids
from bench.servers import OURS_BIN, Server, env_pair, settle_workers, start_ours
from bench.session import Run, cleanup

REPOSITORIES = 12
SHARED_LAYERS = 6
LIVE_PER_CLIENT = 30  # images a client keeps before it retires its oldest
CATALOG_PAGE = 100

# Relative weights of the operations a client picks from.
MIX = {
    "push-monolithic": 6,
    "push-chunked": 3,
    "push-shared": 3,
    "pull-manifest": 20,
    "head-manifest": 6,
    "pull-blob": 10,
    "pull-blob-range": 8,
    "tags-list": 5,
    "catalog": 2,
    "retire": 9,
    "abandon-upload": 1,
}


@dataclass
class Image:
    """A pushed image: where, under which tag, its manifest digest and blobs (digest -> size)."""

    repository: str
    tag: str
    digest: str
    blobs: dict[str, int]


@dataclass
class Tally:
    """What the clients did: requests and operations by kind, errors with their first messages."""

    requests: int = 0
    operations: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    messages: list[str] = field(default_factory=list)

    def error(self, kind: str, message: str) -> None:
        """Count an error of operation `kind`, keeping the first 50 messages."""
        self.errors[kind] += 1
        if len(self.messages) < 50:
            self.messages.append(f"{time.strftime('%H:%M:%S')} {kind}: {message}")


@dataclass
class RssSample:
    """One RSS sample: when (seconds since the load started), the machine's load, what was done so far, and the
    RSS and anonymous RSS (KiB) of the server process and of each worker by pid."""

    t_s: float
    load: float
    requests: int
    errors: int
    server_rss_kib: int
    workers_rss_kib: dict[int, int]
    workers_anon_kib: dict[int, int]


class Client:
    """One client task: a keep-alive connection, its own images, a random generator."""

    def __init__(self, number: int, port: int, tally: Tally, rng: random.Random, shared: dict[str, bytes]):
        self.number, self.tally, self.rng, self.shared = number, tally, rng, shared
        self.connection = Connection(port)
        self.images: list[Image] = []
        self.pushed = 0

    async def request(self, method: str, target: str, status: int, body: bytes = b"", **headers: str) -> Reply:
        """One request that must answer `status` (BenchError otherwise)."""
        self.tally.requests += 1
        reply = await self.connection.request(
            method, target, body, {k.replace("_", "-"): v for k, v in headers.items()}
        )
        return expect(reply, status, f"{method} {target}")

    # ----------------------------------------------------------------------------------------- pushes

    async def push_monolithic(self, repository: str, data: bytes) -> str:
        """One request: POST ?digest= with the body."""
        digest = sha256_digest(data)
        await self.request("POST", f"/v2/{repository}/blobs/uploads/?digest={digest}", 201, data, Content_Type=OCTET)
        return digest

    async def push_chunked(self, repository: str, data: bytes) -> str:
        """POST, a PATCH per chunk with Content-Range, following each Location, then PUT ?digest=."""
        digest = sha256_digest(data)
        reply = await self.request("POST", f"/v2/{repository}/blobs/uploads/", 202)
        location = target_of(reply.headers["location"])
        size = max(1, len(data) // self.rng.randint(2, 4))
        for start in range(0, len(data), size):
            piece = data[start : start + size]
            reply = await self.request(
                "PATCH",
                location,
                202,
                piece,
                Content_Type=OCTET,
                Content_Range=f"{start}-{start + len(piece) - 1}",
            )
            location = target_of(reply.headers["location"])
        await self.request("PUT", with_query(location, "digest", digest), 201, Content_Type=OCTET)
        return digest

    async def mount_or_push(self, repository: str, data: bytes) -> str:
        """Mount a shared layer from another repository (201), or push it when it is not there yet (202)."""
        digest = sha256_digest(data)
        source = f"soak/r{self.rng.randrange(REPOSITORIES)}"
        self.tally.requests += 1
        reply = await self.connection.request("POST", f"/v2/{repository}/blobs/uploads/?mount={digest}&from={source}")
        if reply.status == 201:
            return digest
        expect(reply, 202, f"POST mount {digest} from {source}")
        location = with_query(target_of(reply.headers["location"]), "digest", digest)
        await self.request("PUT", location, 201, data, Content_Type=OCTET)
        return digest

    async def push_image(self, how: str) -> None:
        """A config, one or two layers (fresh, or from the shared pool), an OCI manifest under a new tag."""
        repository = f"soak/r{self.rng.randrange(REPOSITORIES)}"
        blobs: dict[str, int] = {}
        if how == "push-shared":
            for data in self.rng.sample(list(self.shared.values()), 2):
                blobs[await self.mount_or_push(repository, data)] = len(data)
        else:
            push = self.push_monolithic if how == "push-monolithic" else self.push_chunked
            for _ in range(self.rng.randint(1, 2)):
                data = secrets.token_bytes(self.rng.choice((512, 4096, 32768)))
                blobs[await push(repository, data)] = len(data)
        config = json.dumps({"architecture": "amd64", "os": "linux", "soak": secrets.token_hex(8)}).encode()
        config_digest = await self.push_monolithic(repository, config)
        layers = [{"mediaType": OCI_LAYER, "digest": d, "size": s} for d, s in blobs.items()]
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config)},
                "layers": layers,
            }
        ).encode()
        self.pushed += 1
        tag = f"c{self.number}-{self.pushed}"
        await self.request("PUT", f"/v2/{repository}/manifests/{tag}", 201, manifest, Content_Type=OCI_MANIFEST)
        blobs[config_digest] = len(config)
        self.images.append(Image(repository, tag, sha256_digest(manifest), blobs))

    # ----------------------------------------------------------------------------------------- reads, deletes

    async def pull_manifest(self, image: Image, method: str) -> None:
        """GET (body checked against the digest) or HEAD a manifest, by tag or by digest at random."""
        reference = self.rng.choice((image.tag, image.digest))
        reply = await self.request(method, f"/v2/{image.repository}/manifests/{reference}", 200, Accept=OCI_MANIFEST)
        if reply.headers.get("docker-content-digest") != image.digest:
            raise BenchError(f"{method} manifest {image.repository}:{reference}: wrong digest {reply.headers}")
        if method == "GET" and sha256_digest(reply.body) != image.digest:
            raise BenchError(f"GET manifest {image.repository}:{reference}: body does not match its digest")

    async def pull_blob(self, image: Image, ranged: bool) -> None:
        """GET a blob of the image whole (digest checked) or a byte range of it (206, length checked)."""
        digest, size = self.rng.choice(list(image.blobs.items()))
        target = f"/v2/{image.repository}/blobs/{digest}"
        if not ranged or size < 2:
            reply = await self.request("GET", target, 200)
            if sha256_digest(reply.body) != digest:
                raise BenchError(f"GET {target}: body does not match its digest")
            return
        start = self.rng.randrange(size - 1)
        end = self.rng.randrange(start, size)
        reply = await self.request("GET", target, 206, Range=f"bytes={start}-{end}")
        if len(reply.body) != end - start + 1:
            raise BenchError(f"GET {target} bytes={start}-{end}: {len(reply.body)} bytes")

    async def tags_list(self, image: Image) -> None:
        """The first page of the tags of a repository the client has an image in (the image's tag among them when
        the repository has at most 50 tags)."""
        reply = await self.request("GET", f"/v2/{image.repository}/tags/list?n=50", 200)
        tags = json.loads(reply.body)["tags"]
        if len(tags) < 50 and image.tag not in tags:
            raise BenchError(f"tags of {image.repository} lack {image.tag}")

    async def catalog(self) -> None:
        """Walk the catalog (following Link headers) and check every soak repository with a live image is in it."""
        target, names = f"/v2/_catalog?n={CATALOG_PAGE}", []
        while target:
            reply = await self.request("GET", target, 200)
            names += json.loads(reply.body)["repositories"]
            link = reply.headers.get("link", "")
            target = link[link.index("<") + 1 : link.index(">")] if link else ""
        missing = {i.repository for i in self.images} - set(names)
        if missing:
            raise BenchError(f"catalog lacks {sorted(missing)}")

    async def retire(self) -> None:
        """Delete the oldest image's tag, check the tag is gone, then delete its manifest by digest."""
        image = self.images.pop(0)
        await self.request("DELETE", f"/v2/{image.repository}/manifests/{image.tag}", 202)
        await self.request("GET", f"/v2/{image.repository}/manifests/{image.tag}", 404, Accept=OCI_MANIFEST)
        await self.request("DELETE", f"/v2/{image.repository}/manifests/{image.digest}", 202)

    async def abandon_upload(self) -> None:
        """Start an upload, send one chunk, never finish it: the collector purges it later."""
        reply = await self.request("POST", f"/v2/soak/r{self.rng.randrange(REPOSITORIES)}/blobs/uploads/", 202)
        location = target_of(reply.headers["location"])
        await self.request("PATCH", location, 202, secrets.token_bytes(1000), Content_Type=OCTET)

    async def step(self) -> None:
        """One operation picked by MIX weight (a push when the client has no image yet; a retire when it has too
        many), counted, its error recorded."""
        kind = self.rng.choices(list(MIX), weights=list(MIX.values()))[0]
        if not self.images and kind not in ("push-monolithic", "push-chunked", "push-shared"):
            kind = "push-monolithic"
        elif len(self.images) > LIVE_PER_CLIENT:
            kind = "retire"
        image = self.rng.choice(self.images) if self.images else None
        try:
            if kind.startswith("push-"):
                await self.push_image(kind)
            elif kind in ("pull-manifest", "head-manifest") and image:
                await self.pull_manifest(image, "GET" if kind == "pull-manifest" else "HEAD")
            elif kind.startswith("pull-blob") and image:
                await self.pull_blob(image, kind == "pull-blob-range")
            elif kind == "tags-list" and image:
                await self.tags_list(image)
            elif kind == "catalog":
                await self.catalog()
            elif kind == "retire":
                await self.retire()
            elif kind == "abandon-upload":
                await self.abandon_upload()
            self.tally.operations[kind] += 1
        except (BenchError, OSError, asyncio.IncompleteReadError, KeyError, ValueError) as e:
            self.tally.error(kind, str(e)[:300])
            await self.connection.close()


# --------------------------------------------------------------------------------------------- sampling


def status_kib(pid: int) -> tuple[int, int]:
    """VmRSS and RssAnon (KiB) of a process, zeros when it is gone."""
    return proc_status_kib(pid, "VmRSS"), proc_status_kib(pid, "RssAnon")


def sample(server: Server, t_s: float, tally: Tally) -> RssSample:
    """The RSS of the server and of each of its workers now."""
    pids = tree_pids(server.pid)
    workers = sorted(p for p in pids if p != server.pid)
    rss = {p: status_kib(p) for p in workers}
    return RssSample(
        t_s=round(t_s, 1),
        load=load_average(),
        requests=tally.requests,
        errors=sum(tally.errors.values()),
        server_rss_kib=status_kib(server.pid)[0],
        workers_rss_kib={p: r for p, (r, _) in rss.items()},
        workers_anon_kib={p: a for p, (_, a) in rss.items()},
    )


def print_header(workers: list[int]) -> None:
    """The table's header: one RSS column per worker."""
    columns = "".join(f" {'w' + str(p):>10}" for p in workers)
    print(f"{'min':>6} {'load':>5} {'requests':>9} {'req/s':>6} {'errors':>6} {'server':>7}{columns}   (RSS MiB)")


def print_row(row: RssSample, previous: RssSample | None, workers: list[int]) -> None:
    """One sample as a table row (RSS in MiB)."""
    elapsed = row.t_s - (previous.t_s if previous else 0.0)
    rate = (row.requests - (previous.requests if previous else 0)) / elapsed if elapsed > 0 else 0.0
    columns = "".join(f" {row.workers_rss_kib.get(p, 0) / 1024:>10.1f}" for p in workers)
    print(
        f"{row.t_s / 60:>6.1f} {row.load:>5.2f} {row.requests:>9} {rate:>6.0f} {row.errors:>6}"
        f" {row.server_rss_kib / 1024:>7.1f}{columns}",
        flush=True,
    )


# --------------------------------------------------------------------------------------------- verdict


def slope_per_min(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MiB) points, in MiB per minute (0 with fewer than two)."""
    if len(points) < 2:
        return 0.0
    mean_t = statistics.fmean(t for t, _ in points)
    mean_v = statistics.fmean(v for _, v in points)
    spread = sum((t - mean_t) ** 2 for t, _ in points)
    if spread == 0:
        return 0.0
    return sum((t - mean_t) * (v - mean_v) for t, v in points) / spread * 60


def judge(samples: list[RssSample], workers: list[int], args: argparse.Namespace, tally: Tally) -> dict[str, Any]:
    """Per worker: RSS first/last, growth of the last third's median over the middle third's, slope over the second
    half; the run is flat when every worker is within both limits, no worker restarted and errors stayed rare."""
    per_worker, reasons = {}, []
    third = max(1, len(samples) // 3)
    for pid in workers:
        series = [(s.t_s, s.workers_rss_kib.get(pid, 0) / 1024) for s in samples]
        middle = [v for _, v in series[third : 2 * third]] or [series[0][1]]
        last = [v for _, v in series[2 * third :]]
        growth = statistics.median(last) - statistics.median(middle)
        slope = slope_per_min(series[len(series) // 2 :])
        flat = growth <= args.max_growth and slope <= args.max_slope
        per_worker[str(pid)] = {
            "first_mib": round(series[0][1], 1),
            "max_mib": round(max(v for _, v in series), 1),
            "last_mib": round(series[-1][1], 1),
            "growth_last_vs_middle_third_mib": round(growth, 2),
            "slope_second_half_mib_per_min": round(slope, 3),
            "flat": flat,
        }
        if not flat:
            reasons.append(f"worker {pid}: grew {growth:.2f} MiB (last vs middle third), {slope:.3f} MiB/min")
    seen = {p for s in samples for p in s.workers_rss_kib}
    if seen != set(workers):
        reasons.append(f"workers changed during the run: {sorted(workers)} at start, {sorted(seen)} seen")
    errors = sum(tally.errors.values())
    if errors > max(1, tally.requests // 1000):
        reasons.append(f"{errors} errors in {tally.requests} requests")
    return {
        "flat": not reasons,
        "criterion": (
            f"every worker: median RSS of the last third <= that of the middle third + {args.max_growth} MiB, and "
            f"least-squares slope over the second half <= {args.max_slope} MiB/min; no worker restart; "
            "errors <= 0.1% of requests"
        ),
        "workers": per_worker,
        "reasons": reasons,
    }


# --------------------------------------------------------------------------------------------- main


async def soak(server: Server, args: argparse.Namespace, tally: Tally) -> tuple[list[RssSample], list[int]]:
    """Run the clients until the time is up, sampling RSS every `args.interval` seconds (first sample at 0)."""
    rng = random.Random(args.seed)
    shared = {f"shared{i}": secrets.token_bytes(rng.choice((2048, 16384))) for i in range(SHARED_LAYERS)}
    clients = [Client(n, server.port, tally, random.Random(rng.random()), shared) for n in range(args.clients)]
    started = time.monotonic()
    deadline = started + args.minutes * 60
    pace = 1.0 / args.rate * args.clients if args.rate else 0.0

    async def drive(client: Client) -> None:
        try:
            while time.monotonic() < deadline:
                before = time.monotonic()
                await client.step()
                if pace:
                    await asyncio.sleep(max(0.0, pace - (time.monotonic() - before)))
        finally:
            await client.connection.close()

    workers = sorted(p for p in tree_pids(server.pid) if p != server.pid)
    samples = [sample(server, 0.0, tally)]
    print_header(workers)
    print_row(samples[0], None, workers)
    tasks = [asyncio.create_task(drive(c)) for c in clients]
    while (now := time.monotonic()) < deadline:
        await asyncio.sleep(min(args.interval, deadline - now))
        samples.append(sample(server, time.monotonic() - started, tally))
        print_row(samples[-1], samples[-2], workers)
        if not server.process.running:
            tally.error("server", f"the server exited with {server.process.returncode}")
            break
    await asyncio.gather(*tasks)
    return samples, workers


def collections_logged(server: Server) -> list[str]:
    """The server log's lines about garbage collections (one per run that did not find another one running)."""
    with contextlib.suppress(OSError):
        return [
            line for line in server.log_path.read_text(errors="replace").splitlines() if "garbage collection" in line
        ]
    return []


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="how long the load runs (default 30)")
    parser.add_argument("--interval", type=float, default=30.0, help="seconds between RSS samples (default 30)")
    parser.add_argument("--workers", type=int, default=2, help="server worker processes (default 2)")
    parser.add_argument("--clients", type=int, default=4, help="concurrent client tasks (default 4)")
    parser.add_argument(
        "--rate",
        type=float,
        default=100.0,
        help="operations/s in all, at most (default 100, ~200 requests/s; 0: no limit)",
    )
    parser.add_argument("--gc-interval", default="60s", help="the server's own collection interval (default 60s)")
    parser.add_argument("--gc-grace", default="30s", help="collector grace (default 30s)")
    parser.add_argument("--purge-after", default="2m", help="abandoned uploads are purged after (default 2m)")
    parser.add_argument(
        "--cache-bytes",
        type=int,
        default=1 << 20,
        help="each worker's manifest cache (manifests.cache_bytes; default 1 MiB: full within the warm-up third)",
    )
    parser.add_argument("--max-growth", type=float, default=2.0, help="flat: MiB last vs middle third (default 2)")
    parser.add_argument("--max-slope", type=float, default=0.1, help="flat: MiB/min over the second half (0.1)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--ours-env", type=env_pair, action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", type=Path, default=None, help="result file (default bench/results/soak.json)")
    parser.add_argument("--keep-log", action="store_true", help="copy the server log next to the result file")
    args = parser.parse_args(argv)
    if args.minutes <= 0 or args.interval <= 0 or args.workers < 1 or args.clients < 1:
        parser.error("--minutes, --interval, --workers and --clients must be positive")
    if args.out is None:
        args.out = RESULTS_DIR / ("soak.json" if args.minutes >= 10 else "soak-short.json")
    return args


def main(argv: list[str] | None = None) -> bool:
    """Start the server, soak it, print and write the table and verdict; return whether RSS stayed flat."""
    args = parse_args(argv)
    if not OURS_BIN.exists():
        sys.exit(f"{OURS_BIN} is missing: make the venv first")
    run = Run(suffix=secrets.token_hex(4), tmp=Path(tempfile.mkdtemp(prefix="bench-soak-")))
    env = {
        "REGISTRY_HTTP_WORKERS": str(args.workers),
        "REGISTRY_GC_INTERVAL": args.gc_interval,
        "REGISTRY_GC_GRACE": args.gc_grace,
        "REGISTRY_UPLOADS_PURGE_AFTER": args.purge_after,
        "REGISTRY_MANIFESTS_CACHE_BYTES": str(args.cache_bytes),
        **dict(args.ours_env),
    }
    tally = Tally()
    server = start_ours(run.tmp, env, access_log=False)
    run.servers = [server]
    try:
        settle_workers(server)
        print(
            f"soak: {args.minutes:g} min, {args.clients} clients, {args.workers} workers, collector every"
            f" {args.gc_interval} (grace {args.gc_grace}); server pid {server.pid} on {server.host}",
            flush=True,
        )
        started = time.time()
        samples, workers = run_async(soak(server, args, tally))
        verdict = judge(samples, workers, args, tally)
        collections = collections_logged(server)
        _, problems = read_new_log(server)
        duration = samples[-1].t_s if samples else 0.0
        print(f"\nrequests {tally.requests} ({tally.requests / max(duration, 1):.0f}/s), operations:")
        print("  " + ", ".join(f"{k} {v}" for k, v in sorted(tally.operations.items())))
        print(f"errors {sum(tally.errors.values())}: {dict(tally.errors)}")
        for message in tally.messages[:10]:
            print(f"  {message}")
        print(f"collections logged {len(collections)}; log problems {len(problems)}")
        for line in problems[:10]:
            print(f"  {line}")
        for pid, worker in verdict["workers"].items():
            print(f"worker {pid}: {worker}")
        print(f"criterion: {verdict['criterion']}")
        print("verdict: " + ("FLAT" if verdict["flat"] else "NOT FLAT: " + "; ".join(verdict["reasons"])))
        document = {
            "benchmark": "bench/soak.py",
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
            "command": command_line(),
            "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()} | {"env": env},
            "cpus": os.cpu_count(),
            "requests": tally.requests,
            "operations": dict(tally.operations),
            "errors": dict(tally.errors),
            "error_messages": tally.messages,
            "collections_logged": len(collections),
            "collections": collections[:200],
            "log_problems": problems[:50],
            "verdict": verdict,
            "samples": [asdict(s) for s in samples],
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(document, indent=2) + "\n")
        print(f"wrote {args.out}")
        return bool(verdict["flat"])
    finally:
        if args.keep_log:
            with contextlib.suppress(OSError):
                args.out.with_suffix(".server.log").write_bytes(server.log_path.read_bytes())
        cleanup(run)


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
