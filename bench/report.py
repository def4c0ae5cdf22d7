"""The report of `python -m bench.run`: the metrics and their targets, the medians table with ratios and CPU
columns, peak RSS, the results JSON and the chart of ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench import PROJECT_DIR, RESULTS_DIR, command_line
from bench.images import docker
from bench.logs import read_new_log
from bench.metrics import Sample
from bench.servers import DISTRIBUTION_BIN
from bench.session import Bench

RSS_LIMIT_MIB = 150
MIN_JUDGED_WALL_S = 0.5  # CPU times tick every 10 ms: shorter measurements say nothing about the bottleneck


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
    Metric("cache cold pull", "MiB/s", True),
    Metric("cache cold upstream sent", "MiB", False),
    Metric("cache warm pull", "MiB/s", True),
    Metric("cache hot pull", "MiB/s", True),
    Metric("cache 16 cold pulls", "s", False),
    Metric("cache 16 upstream sent", "MiB", False),
    Metric("cache manifest-get rate", "req/s", True),
    Metric("cache manifest-get p50", "ms", False),
    Metric("cache manifest-get p99", "ms", False),
    Metric("cache local pull", "MiB/s", True),
    Metric("cache local hot pull", "MiB/s", True),
    Metric("cache local manifest-get rate", "req/s", True),
)
# Metrics also compared with a reference measured on one server only: (metric, reference metric, its server, what
# the reference is). The cache workload pulls the large layer straight from its upstream and, on ours, locally.
REFERENCES = (
    ("cache cold pull", "cache direct pull", "upstream", "direct from the upstream"),
    ("cache warm pull", "cache local pull", "ours", "a local blob GET of ours"),
    ("cache hot pull", "cache local hot pull", "ours", "local blob GETs of ours"),
    ("cache manifest-get rate", "cache local manifest-get rate", "ours", "a local manifest GET of ours"),
)


def cores(samples: list[Sample], key: str, per: str = "wall_s") -> float:
    """Median over samples of `key` (a CPU seconds field) per second of `per` (wall_s, or active_s: the time
    requests were in flight, which leaves out the gaps while curl processes start)."""
    rates = [getattr(s, key) / getattr(s, per) for s in samples if getattr(s, per)]
    return statistics.median(rates) if rates else 0.0  # none: instant readings (the cache's upstream byte counts)


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


def reference_rows(bench: Bench) -> list[dict[str, Any]]:
    """For each of REFERENCES measured in this run: each server's median of the metric, the reference's median and
    their ratio."""
    rows = []
    for metric, reference, reference_server, label in REFERENCES:
        base = [s.value for s in bench.samples if s.metric == reference and s.server == reference_server]
        if not base:
            continue
        base_median = statistics.median(base)
        for server in ("ours", "distribution"):
            values = [s.value for s in bench.samples if s.metric == metric and s.server == server]
            if values:
                median = statistics.median(values)
                rows.append(
                    {
                        "metric": metric,
                        "server": server,
                        "median": round(median, 3),
                        "reference": label,
                        "reference_median": round(base_median, 3),
                        "reference_values": base,
                        "ratio": float(f"{median / base_median:.4g}") if base_median else float("inf"),
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
    references = reference_rows(bench)
    if references:
        print()
    for ref in references:
        unit = next(m.unit for m in METRICS if m.name == ref["metric"])
        left = f"{ref['metric']:<23} {ref['server']:<12} {ref['median']:>10.2f} {unit:<6}"
        print(f"{left} vs {ref['reference_median']:>10.2f} {ref['reference']:<26} {ratio_text(ref['ratio']):>8}")
    print()
    for name, per_server in bench.peaks.items():
        parts = []
        for server, peaks in per_server.items():
            each = "+".join(f"{kib / 1024:.0f}" for kib in peaks.values())
            parts.append(f"{server} {max(peaks.values()) / 1024:.0f} MiB max/proc ({each})")
        print(f"peak RSS {name:<13} {'; '.join(parts)}")


def versions() -> dict[str, str]:
    """Versions of the things measured: this project's commit, Docker engine and client, Distribution, Python."""
    distribution = subprocess.run([str(DISTRIBUTION_BIN), "--version"], capture_output=True, text=True).stdout
    git = ["git", "-C", str(PROJECT_DIR)]
    commit = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run([*git, "status", "--porcelain", "--", "registry", "storage"], capture_output=True, text=True)
    return {
        "project_commit": commit + ("-dirty" if dirty.stdout.strip() else ""),
        "docker_server": docker("version", "--format", "{{.Server.Version}}", check=False).stdout.strip(),
        "docker_client": docker("version", "--format", "{{.Client.Version}}", check=False).stdout.strip(),
        "distribution": distribution.strip(),
        "python": sys.version.split()[0],
    }


def tool_versions() -> dict[str, str]:
    """`versions()` and those of wrk, ab and curl."""
    try:
        found = versions()
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
        _, found = read_new_log(server)
        problems += [f"{server.name}: {line}" for line in found]
    return problems


def write_results(bench: Bench, args: argparse.Namespace, rows: list[dict[str, Any]], problems: list[str]) -> Path:
    """Write the JSON document (configuration, versions, summary, every sample, peak RSS, log problems)."""
    path = RESULTS_DIR / ("bench-quick.json" if args.quick else "bench.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "benchmark": "bench/run.py",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": command_line(),
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
        "references": reference_rows(bench),
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
        import matplotlib  # type: ignore[import-not-found, unused-ignore]  # the bench extra

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # type: ignore[import-not-found, unused-ignore]
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
