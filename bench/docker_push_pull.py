"""Benchmark: wall-clock `docker push` and `docker pull` against our registry and CNCF Distribution.

Both servers run on free loopback ports with fresh temporary storage. For every round a fresh image
is built (new random bytes, so every push really uploads) on a tiny busybox base imported with
`docker import`; it is tagged for one server under a fresh repository, pushed (timed), removed from
the local Docker store by image id (all tags, so its layers are gone), then pulled back (timed) and
checked to have the same image id. Servers alternate A, B, A, B within each image shape.

Run from the project directory:  .venv/bin/python -m bench.docker_push_pull --rounds 3 --size-mib 200
Writes bench/results/docker_push_pull.json and prints a table of medians.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench import RESULTS_DIR
from bench.images import ImageShape, build_image, docker, docker_build_env, image_id_of, import_base, remove_image
from bench.logs import read_new_log, summarize_requests
from bench.metrics import cpu_seconds, load_average, proc_status_kib, reset_peak_rss
from bench.report import versions
from bench.servers import Server, start_distribution, start_ours
from bench.session import Run, cleanup

RESULTS_PATH = RESULTS_DIR / "docker_push_pull.json"


def timed_docker(pid: int, *args: str) -> tuple[float, float]:
    """Wall-clock seconds one docker CLI command takes (it must succeed) and the CPU seconds process `pid`
    used meanwhile."""
    cpu_before, started = cpu_seconds(pid), time.perf_counter()
    docker(*args)
    return time.perf_counter() - started, cpu_seconds(pid) - cpu_before


def one_round(run: Run, server: Server, shape: ImageShape, rnd: int, base: str, env: dict[str, str]) -> dict[str, Any]:
    """Build a fresh image, push it to `server` (timed), drop it locally, pull it back (timed), drop it again."""
    local_tag = f"bench-pushpull-{run.suffix}:{server.name}-{shape.name.lower()}-r{rnd}"
    image_id = build_image(run, base, shape, local_tag, env)
    ref = f"{server.host}/bench-{run.suffix}/{shape.name.lower()}-r{rnd}:latest"
    docker("tag", local_tag, ref)
    run.tags.add(ref)
    read_new_log(server)  # skip anything logged before the push
    load = load_average()
    push_s, push_cpu_s = timed_docker(server.pid, "push", ref)
    push_requests, push_problems = read_new_log(server)
    remove_image(image_id)
    pull_s, pull_cpu_s = timed_docker(server.pid, "pull", ref)
    pull_requests, pull_problems = read_new_log(server)
    pulled_id = image_id_of(ref)
    if pulled_id != image_id:
        raise RuntimeError(f"pulled {ref} as {pulled_id}, pushed {image_id}")
    remove_image(image_id)
    return {
        "workload": shape.name,
        "round": rnd,
        "server": server.name,
        "push_s": round(push_s, 3),
        "pull_s": round(pull_s, 3),
        "push_server_cpu_s": round(push_cpu_s, 3),
        "pull_server_cpu_s": round(pull_cpu_s, 3),
        "load_average_1m": load,
        "push_requests": summarize_requests(push_requests),
        "pull_requests": summarize_requests(pull_requests),
        "problems": push_problems + pull_problems,
    }


def run_shape(run: Run, shape: ImageShape, rounds: int, base: str, env: dict[str, str]) -> list[dict[str, Any]]:
    """All rounds of one shape, alternating servers (A, B, A, B), with per-shape peak RSS."""
    for server in run.servers:
        reset_peak_rss(server.pid)
    results = []
    for rnd in range(rounds):
        for server in run.servers:
            result = one_round(run, server, shape, rnd, base, env)
            print(
                f"  {shape.name} round {rnd} {server.name:>12}: push {result['push_s']:7.2f}s"
                f"  pull {result['pull_s']:7.2f}s   server CPU push {result['push_server_cpu_s']:5.2f}s"
                f" pull {result['pull_server_cpu_s']:5.2f}s   load {result['load_average_1m']:.1f}",
                flush=True,
            )
            results.append(result)
    for server in run.servers:
        server.peak_rss_kib[shape.name] = proc_status_kib(server.pid, "VmHWM")
    return results


# --------------------------------------------------------------------------------------------- report


def values_of(results: list[dict[str, Any]], shape: str, server: str, key: str) -> list[float]:
    """`key` of every round of one shape on one server."""
    return [r[key] for r in results if r["workload"] == shape and r["server"] == server]


def median_of(results: list[dict[str, Any]], shape: str, server: str, key: str) -> float:
    """Median of `key` over the rounds of one shape on one server."""
    return statistics.median(values_of(results, shape, server, key))


def median_server_ms(results: list[dict[str, Any]], shape: str, server: str, phase: str, group: str) -> float:
    """Median over rounds of the total server-side ms of one request group (e.g. `PATCH upload`) in a phase."""
    values = [
        r[f"{phase}_requests"].get(group, {}).get("total_ms", 0.0)
        for r in results
        if r["workload"] == shape and r["server"] == server
    ]
    return float(statistics.median(values))


def push_pull_rows(results: list[dict[str, Any]], shapes: list[ImageShape]) -> list[dict[str, Any]]:
    """One row per (shape, push|pull): both servers' median seconds and the ratio ours/theirs."""
    rows = []
    for shape in shapes:
        for phase in ("push", "pull"):
            ours = median_of(results, shape.name, "ours", f"{phase}_s")
            theirs = median_of(results, shape.name, "distribution", f"{phase}_s")
            rows.append(
                {
                    "workload": f"{phase} {shape.name}",
                    "ours_median_s": round(ours, 3),
                    "distribution_median_s": round(theirs, 3),
                    "ratio": round(ours / theirs, 3),
                    "ours_min_s": min(values_of(results, shape.name, "ours", f"{phase}_s")),
                    "distribution_min_s": min(values_of(results, shape.name, "distribution", f"{phase}_s")),
                    "ours_mib_s": round(sum(shape.layer_mib) / ours, 1),
                    "distribution_mib_s": round(sum(shape.layer_mib) / theirs, 1),
                    "ours_server_cpu_median_s": median_of(results, shape.name, "ours", f"{phase}_server_cpu_s"),
                    "distribution_server_cpu_median_s": median_of(
                        results, shape.name, "distribution", f"{phase}_server_cpu_s"
                    ),
                }
            )
    return rows


def server_side_rows(results: list[dict[str, Any]], shapes: list[ImageShape]) -> list[tuple[str, str, float, float]]:
    """Median total server-side ms of the requests that carry the bytes, per shape and server."""
    groups = (("push", "PATCH upload"), ("push", "PUT upload"), ("pull", "GET blob"), ("push", "PUT manifest"))
    rows = []
    for shape in shapes:
        for phase, group in groups:
            ours = median_server_ms(results, shape.name, "ours", phase, group)
            theirs = median_server_ms(results, shape.name, "distribution", phase, group)
            rows.append((f"{phase} {shape.name}", group, ours, theirs))
    return rows


def print_tables(rows: list[dict[str, Any]], side: list[tuple[str, str, float, float]], servers: list[Server]) -> None:
    """Print the medians table, the server-side request time table and peak RSS."""
    print()
    print(f"{'workload':<20} {'ours median s':>14} {'distribution median s':>22} {'ratio ours/theirs':>18}")
    for row in rows:
        print(
            f"{row['workload']:<20} {row['ours_median_s']:>14.2f} {row['distribution_median_s']:>22.2f}"
            f" {row['ratio']:>18.2f}"
        )
    print()
    print("server CPU seconds (user+sys of the server process during the docker command, median over rounds)")
    print(f"{'workload':<20} {'ours cpu s':>14} {'distribution cpu s':>22} {'ratio ours/theirs':>18}")
    for row in rows:
        ours, theirs = row["ours_server_cpu_median_s"], row["distribution_server_cpu_median_s"]
        ratio = f"{ours / theirs:.2f}" if theirs else "-"
        print(f"{row['workload']:<20} {ours:>14.2f} {theirs:>22.2f} {ratio:>18}")
    print()
    print("server-side time (median over rounds of the summed request durations from the access logs)")
    print(f"{'workload':<20} {'requests':<14} {'ours ms':>10} {'distribution ms':>16}")
    for label, group, ours, theirs in side:
        print(f"{label:<20} {group:<14} {ours:>10.1f} {theirs:>16.1f}")
    print()
    for server in servers:
        peaks = ", ".join(f"{w} {kib / 1024:.1f} MiB" for w, kib in server.peak_rss_kib.items())
        print(f"peak RSS {server.name:>12}: idle {server.baseline_rss_kib / 1024:.1f} MiB; {peaks}")


def write_json(
    args: argparse.Namespace,
    shapes: list[ImageShape],
    run: Run,
    results: list[dict[str, Any]],
    rows: list[dict[str, Any]],
) -> None:
    """Write the configuration, per-round results, medians and peak RSS to RESULTS_PATH."""
    RESULTS_PATH.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "benchmark": "docker_push_pull",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "config": {"rounds": args.rounds, "workloads": [w.name for w in shapes], "cpus": os.cpu_count()},
        "versions": versions(),
        "summary": rows,
        "peak_rss_kib": {s.name: {"idle": s.baseline_rss_kib, **s.peak_rss_kib} for s in run.servers},
        "rounds": results,
    }
    RESULTS_PATH.write_text(json.dumps(document, indent=2) + "\n")
    print(f"\nwrote {RESULTS_PATH}")


# --------------------------------------------------------------------------------------------- main


@contextlib.contextmanager
def bench_run(keep_logs: Path | None) -> Iterator[Run]:
    """A Run with a temp dir and both servers started; always cleaned up afterwards."""
    run = Run(suffix=secrets.token_hex(4), tmp=Path(tempfile.mkdtemp(prefix="bench-pushpull-")))
    try:
        run.servers.append(start_ours(run.tmp))
        run.servers.append(start_distribution(run.tmp))
        for server in run.servers:
            server.baseline_rss_kib = proc_status_kib(server.pid, "VmRSS")
        yield run
    finally:
        if keep_logs is not None:
            keep_logs.mkdir(parents=True, exist_ok=True)
            for server in run.servers:
                with contextlib.suppress(OSError):
                    shutil.copy(server.log_path, keep_logs / f"docker_push_pull.{server.name}.log")
        cleanup(run)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.docker_push_pull", description=(__doc__ or "").splitlines()[0]
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds per server and shape (default 3)")
    parser.add_argument("--size-mib", type=int, default=200, help="size of the single-layer image (default 200)")
    parser.add_argument("--layers", type=int, default=3, help="layers of the multi-layer variant; <2 skips it")
    parser.add_argument("--multi-size-mib", type=int, default=300, help="total MiB of the multi-layer variant")
    parser.add_argument("--keep-logs", action="store_true", help="copy both servers' logs to bench/results/")
    return parser.parse_args(argv)


def shapes_from(args: argparse.Namespace) -> list[ImageShape]:
    """The single-layer shape, plus the multi-layer one unless --layers < 2."""
    shapes = [ImageShape((args.size_mib,))]
    if args.layers >= 2:
        shapes.append(ImageShape((args.multi_size_mib // args.layers,) * args.layers))
    return shapes


def main(argv: list[str] | None = None) -> None:
    """Run every shape against both servers and report."""
    args = parse_args(argv)
    shapes = shapes_from(args)
    env = docker_build_env()
    with bench_run(RESULTS_PATH.parent if args.keep_logs else None) as run:
        for server in run.servers:
            print(f"{server.name} on {server.host} (pid {server.pid})", flush=True)
        base = import_base(run)
        results: list[dict[str, Any]] = []
        for shape in shapes:
            results += run_shape(run, shape, args.rounds, base, env)
        rows = push_pull_rows(results, shapes)
        print_tables(rows, server_side_rows(results, shapes), run.servers)
        problems = [(r["server"], p) for r in results for p in r["problems"]]
        for server_name, line in problems[:20]:
            print(f"log problem ({server_name}): {line}")
        write_json(args, shapes, run, results, rows)


if __name__ == "__main__":
    main()
