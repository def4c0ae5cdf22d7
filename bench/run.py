"""Benchmark suite: our registry against CNCF Distribution 2.8 on the same workloads, in alternation.

Starts both servers on free loopback ports with fresh temporary storage, then for each selected workload runs
`--rounds` rounds alternating ours, theirs, ours, theirs, ... and prints the medians, the ratio ours/theirs and the
issue's target for it (met / missed), the CPU each side used (to tell what limits our server) and each server's peak
RSS. Request rates come from `wrk` (GET) and `ab -k -i` (HEAD); large transfers from `curl`; the low-rate push
workloads from a minimal asyncio HTTP/1.1 client; `docker push`/`pull` from the real engine. Every workload checks its
results (status codes, sizes, digests) and fails loudly.

The `soak` workload (bench/soak.py: our server alone, mixed traffic, worker RSS judged flat or not) runs last,
after both servers stopped, for --soak-minutes (30, 3 with --quick).

Run from the project directory:
      .venv/bin/python -m bench.run                      (default: 3 rounds, about 7-8 minutes, then the soak)
      .venv/bin/python -m bench.run --only soak          (the soak alone, as `make soak`)
      .venv/bin/python -m bench.run --quick              (1 round, small sizes: a smoke run of about 1 minute)
      .venv/bin/python -m bench.run --only manifest-get,blob-head --ours-env REGISTRY_HTTP_WORKERS=1
Writes bench/results/bench.json and bench/results/ratios.png (bench-quick.json / ratios-quick.png with --quick).
"""

from __future__ import annotations

import argparse
import contextlib
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path

from bench import MIB, RESULTS_DIR, soak
from bench.cache import LARGE_MIB, PullThroughCache
from bench.images import docker
from bench.metrics import peaks_kib, reset_peaks, rss_kib, tree_pids
from bench.report import log_problems, plot_ratios, print_report, summary_rows, write_results
from bench.servers import DISTRIBUTION_BIN, OURS_BIN, env_pair, settle_workers, start_distribution, start_ours
from bench.session import Bench, Run, Sizes, cleanup
from bench.workloads import WORKLOADS as PAIRED
from bench.workloads import Workload

SOAK = "soak"  # bench/soak.py, run after the paired workloads with its own server
# The paired workloads and the pull-through cache's (bench/cache.py builds on bench/workloads.py, so it joins here).
WORKLOADS: dict[str, type[Workload]] = {**PAIRED, PullThroughCache.name: PullThroughCache}
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


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options; sizes left unset take the default or, with --quick, the quick default."""
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=(__doc__ or "").splitlines()[0])
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
    if missing or not DISTRIBUTION_BIN.exists() or not OURS_BIN.exists():
        sys.exit(f"missing: {', '.join(missing) or '-'}; run bench/deps.sh (and make the venv) first")
    if "docker" in args.workloads and docker("info", check=False).returncode != 0:
        sys.exit("the Docker engine is not usable; leave the docker workload out with --only")
    s = args.sizes
    pushes = s.rounds * (3 * ("push-large" in args.workloads) + ("push-chunked" in args.workloads)) + 1
    pushes += (2 * s.rounds + 2) * ("s3" in args.workloads)  # SeaweedFS keeps what both registries push there
    docker_mib = s.rounds * s.docker_mib * ("docker" in args.workloads)
    # the cache workload: its layer's file and chunks, the upstream's copy, a cache's, a local push per round
    cache_mib = (4 + s.rounds) * min(s.large_mib, LARGE_MIB) * ("cache" in args.workloads)
    need_mib = 2 * (pushes * s.large_mib + docker_mib) + 2 * s.large_mib + cache_mib + 1024
    free_mib = shutil.disk_usage(tmp).free // MIB
    if free_mib < need_mib:
        sys.exit(f"{tmp}: {free_mib} MiB free, this run needs about {need_mib} MiB")
    print(f"temp dir {tmp} ({free_mib} MiB free, this run writes about {need_mib} MiB)")


def run_workload(bench: Bench, workload: Workload) -> None:
    """Set up both servers, then the rounds alternating servers, recording each server's peak RSS meanwhile."""
    print(f"\n== {workload.name}", flush=True)
    try:
        for server in bench.servers:
            workload.setup(server)
        for server in bench.servers:
            reset_peaks(server.pid)
        for rnd in range(bench.sizes.rounds):
            for server in bench.servers:
                for s in workload.run_round(server, rnd):
                    print(
                        f"  r{rnd} {server.name:>12} {s.metric:<22} {s.value:>10.2f}   wall {s.wall_s:6.2f}s"
                        f"  server cpu {s.server_cpu_s:6.2f}s  client cpu {s.client_cpu_s:6.2f}s  load {s.load:.1f}",
                        flush=True,
                    )
        bench.peaks[workload.name] = {server.name: peaks_kib(server.pid) for server in bench.servers}
    finally:
        workload.teardown()


def compare(args: argparse.Namespace) -> None:
    """Start both servers, run the selected workloads in alternation, report, clean up."""
    run = Run(suffix=secrets.token_hex(4), tmp=Path(tempfile.mkdtemp(prefix="bench-run-")))
    bench = Bench(args.sizes, run)
    started = time.monotonic()
    try:
        preflight(args, run.tmp)
        run.servers = bench.servers  # the same list: cleanup stops whichever started
        bench.servers.append(start_ours(run.tmp, dict(args.ours_env), access_log=False))
        bench.servers.append(start_distribution(run.tmp, log_level="error", cache=args.distribution_cache))
        for server in bench.servers:
            bench.processes[server.name] = settle_workers(server)
            server.baseline_rss_kib = rss_kib(tree_pids(server.pid))
            print(
                f"{server.name} on {server.host}: pid {server.pid}, {bench.processes[server.name]} process(es),"
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
        cleanup(run)


def main(argv: list[str] | None = None) -> None:
    """Run the selected paired workloads (both servers), then the soak if selected."""
    args = parse_args(argv)
    if any(w in WORKLOADS for w in args.workloads):
        compare(args)
    if SOAK in args.workloads:
        soak.main(["--minutes", str(args.soak_minutes), *(f"--ours-env={k}={v}" for k, v in args.ours_env)])


if __name__ == "__main__":
    main()
