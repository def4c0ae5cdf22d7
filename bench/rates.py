"""Request rates from the external load generators: `wrk` for GETs, `ab -k -i` for HEADs, run and parsed.

Each returns {rate, p50, p99 (ms), requests, ...} and raises BenchError when the tool saw wrong answers.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

from bench import BenchError


def latency_ms(text: str) -> float:
    """Milliseconds in a wrk latency such as `812.00us`, `1.23ms`, `2.00s` or `1.00m`."""
    found = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if found is None:
        raise BenchError(f"cannot parse wrk latency {text!r}")
    return float(found[1]) * {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60000.0}[found[2]]


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
    percentiles = dict(line.split(",", 1) for line in csv_text.splitlines()[1:] if "," in line)
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
