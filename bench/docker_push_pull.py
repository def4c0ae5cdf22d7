"""Benchmark: wall-clock `docker push` and `docker pull` against our registry and CNCF Distribution.

Both servers run on free loopback ports with fresh temporary storage. For every round a fresh image
is built (new random bytes, so every push really uploads) on a tiny busybox base imported with
`docker import`; it is tagged for one server under a fresh repository, pushed (timed), removed from
the local Docker store by image id (all tags, so its layers are gone), then pulled back (timed) and
checked to have the same image id. Servers alternate A, B, A, B within each workload.

Run:  /work/main/.venv/bin/python bench/docker_push_pull.py --rounds 3 --size-mib 200
Writes bench/results/docker_push_pull.json and prints a table of medians.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

BENCH_DIR = Path(__file__).resolve().parent
PROJECT_DIR = BENCH_DIR.parent
RESULTS_PATH = BENCH_DIR / "results" / "docker_push_pull.json"
OURS_BIN = PROJECT_DIR / ".venv" / "bin" / "registry"
DISTRIBUTION_BIN = Path("/usr/bin/docker-registry")
HOST = "127.0.0.1"
BUSYBOX = Path("/bin/busybox")
BUSYBOX_APPLETS = ("sh", "ls", "cat", "echo", "true", "sleep", "sha256sum")
MIB = 1 << 20
WRITE_PIECE = 8 * MIB

# Access-log shapes: ours (`registry.access CLIENT METHOD PATH STATUS BYTES DURms`) and
# Distribution's logrus "response completed" lines at level info.
OURS_ACCESS = re.compile(r"registry\.access \S+ (?P<method>[A-Z]+) (?P<path>\S+) (?P<status>\d+) \d+ (?P<ms>[\d.]+)ms")
DIST_FIELD = re.compile(r'([\w.]+)=("(?:[^"\\]|\\.)*"|\S+)')
GO_DURATION_PART = re.compile(r"([\d.]+)(h|m(?!s)|s|ms|us|µs|ns)")
# Docker tries TLS first on every push/pull to a plain-HTTP registry; uvicorn logs that probe as a warning.
TLS_PROBE_LINE = "Invalid HTTP request received."
GO_UNIT_MS = {"h": 3_600_000.0, "m": 60_000.0, "s": 1000.0, "ms": 1.0, "us": 1e-3, "µs": 1e-3, "ns": 1e-6}


@dataclass
class Server:
    """One registry process under test and where its log goes."""

    name: str
    port: int
    proc: subprocess.Popen
    workdir: Path
    log_path: Path
    log_offset: int = 0
    baseline_rss_kib: int = 0
    peak_rss_kib: dict[str, int] = field(default_factory=dict)

    @property
    def host(self) -> str:
        """The `host:port` Docker uses in image references."""
        return f"127.0.0.1:{self.port}"


@dataclass(frozen=True)
class Workload:
    """An image shape: one layer per entry in `layer_mib`, on top of the busybox base."""

    layer_mib: tuple[int, ...]

    @property
    def name(self) -> str:
        """A label such as `1x200MiB` or `3x100MiB`."""
        sizes = set(self.layer_mib)
        each = f"{self.layer_mib[0]}MiB" if len(sizes) == 1 else "+".join(f"{s}MiB" for s in self.layer_mib)
        return f"{len(self.layer_mib)}x{each}"


@dataclass
class Run:
    """Resources created by this run, so cleanup removes exactly those and nothing else."""

    suffix: str
    tmp: Path
    image_ids: set[str] = field(default_factory=set)
    tags: set[str] = field(default_factory=set)
    servers: list[Server] = field(default_factory=list)


# --------------------------------------------------------------------------------------------- processes


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def docker(*args: str, check: bool = True, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run a docker CLI command, capturing its output; raise with its stderr when `check` and it fails."""
    done = subprocess.run(["docker", *args], capture_output=True, text=True, env=env)
    if check and done.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return done


def timed_docker(pid: int, *args: str) -> tuple[float, float]:
    """Wall-clock seconds one docker CLI command takes (it must succeed) and the CPU seconds process `pid`
    used meanwhile."""
    cpu_before, started = cpu_seconds(pid), time.perf_counter()
    docker(*args)
    return time.perf_counter() - started, cpu_seconds(pid) - cpu_before


def wait_ready(url: str, proc: subprocess.Popen, timeout_s: float = 30.0) -> None:
    """Poll `url` until it answers 200; fail early if the server process exits."""
    deadline = time.monotonic() + timeout_s
    with httpx.Client(timeout=2.0) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode} before it was ready ({url})")
            with contextlib.suppress(httpx.HTTPError):
                if client.get(url).status_code == 200:
                    return
            time.sleep(0.1)
    raise RuntimeError(f"server not ready after {timeout_s}s: {url}")


def start_ours(
    tmp: Path, env: dict[str, str] | None = None, directory: str = "ours", access_log: bool = True
) -> Server:
    """Start our registry on a free port with a fresh data dir (`tmp/directory`), its output in a file: the access
    log unless `access_log` is off, plus `env` (e.g. workers, or S3 storage). This process's REGISTRY_* variables
    are not passed on."""
    workdir = tmp / directory
    workdir.mkdir()
    port = free_port()
    log_path = workdir / "server.log"
    variables = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
    variables.update({"REGISTRY_LOG_ACCESS": str(access_log).lower(), **(env or {})})
    command = [str(OURS_BIN), "serve", "--host", HOST, "--port", str(port), "--data-dir", str(workdir / "data")]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=variables)
    wait_ready(f"http://{HOST}:{port}/healthz", proc, timeout_s=60.0)
    return Server("ours", port, proc, workdir, log_path)


def start_distribution(
    tmp: Path,
    *,
    log_level: str = "info",
    cache: bool = False,
    storage: str | None = None,
    directory: str = "distribution",
) -> Server:
    """Start CNCF Distribution on a free port, deletes on, logging at `log_level`: with fresh filesystem storage
    under `tmp/directory`, or with `storage` (the YAML lines of another driver, indented under `storage:`); with
    `cache`, its in-memory blob descriptor cache (on in Distribution's sample config, off by default)."""
    workdir = tmp / directory
    workdir.mkdir()
    port = free_port()
    config = workdir / "config.yml"
    storage = storage or f"  filesystem:\n    rootdirectory: {workdir / 'data'}\n"
    config.write_text(
        "version: 0.1\n"
        f"log:\n  level: {log_level}\n  formatter: text\n  accesslog:\n    disabled: true\n"
        f"storage:\n{storage}  delete:\n    enabled: true\n"
        + ("  cache:\n    blobdescriptor: inmemory\n" if cache else "")
        + f"http:\n  addr: {HOST}:{port}\n  secret: {secrets.token_hex(16)}\n"
    )
    log_path = workdir / "server.log"
    # Its AWS SDK refuses to start with a custom CA bundle set (it cannot apply one to its own transport).
    variables = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
    with open(log_path, "wb") as log:
        command = [str(DISTRIBUTION_BIN), "serve", str(config)]
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=variables)
    wait_ready(f"http://{HOST}:{port}/v2/", proc)
    return Server("distribution", port, proc, workdir, log_path)


def process_table() -> dict[int, tuple[int, str]]:
    """Every process on the machine as pid -> (parent pid, command name), from /proc/PID/stat."""
    table = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            with open(f"/proc/{entry.name}/stat") as f:
                text = f.read()
            name = text[text.index("(") + 1 : text.rindex(")")]
            table[int(entry.name)] = (int(text.rsplit(")", 1)[1].split()[1]), name)
    return table


def tree_pids(pid: int) -> list[int]:
    """`pid` and all its descendants (our server may fork worker processes)."""
    children: dict[int, list[int]] = {}
    for child, (parent, _) in process_table().items():
        children.setdefault(parent, []).append(child)
    pids, todo = [], [pid]
    while todo:
        current = todo.pop()
        pids.append(current)
        todo.extend(children.get(current, []))
    return pids


def stop(server: Server) -> None:
    """SIGTERM the server (SIGKILL if it has not exited after 10 s), then SIGKILL any of its worker processes
    left behind."""
    if server.proc.poll() is not None:
        return
    workers = tree_pids(server.proc.pid)[1:]
    server.proc.send_signal(signal.SIGTERM)
    try:
        server.proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.proc.kill()
        server.proc.wait()
    time.sleep(0.2)
    alive = process_table()
    for pid in workers:
        if pid in alive:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


def proc_status_kib(pid: int, key: str) -> int:
    """A `kB` field of /proc/PID/status (VmRSS, VmHWM), 0 when unreadable."""
    with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds the process (all its threads) has used so far, from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load_average() -> float:
    """The machine's 1-minute load average (other users of this machine make timings noisy)."""
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def reset_peak_rss(pid: int) -> bool:
    """Reset the process's VmHWM to its current RSS (Linux clear_refs 5); False when not permitted."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


# --------------------------------------------------------------------------------------------- images


def docker_build_env() -> dict[str, str]:
    """The environment for `docker build`: the classic builder when the buildx plugin is missing."""
    env = dict(os.environ)
    if subprocess.run(["docker", "buildx", "version"], capture_output=True).returncode != 0:
        env["DOCKER_BUILDKIT"] = "0"
    return env


def rootfs_tar(path: Path) -> None:
    """Write a minimal root filesystem tar: static busybox plus a few applet symlinks and /tmp."""
    with tarfile.open(path, "w") as tar:
        for directory in ("bin", "tmp"):
            info = tarfile.TarInfo(directory)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if directory == "tmp" else 0o755
            tar.addfile(info)
        tar.add(BUSYBOX, arcname="bin/busybox")
        for applet in BUSYBOX_APPLETS:
            info = tarfile.TarInfo(f"bin/{applet}")
            info.type, info.linkname, info.mode = tarfile.SYMTYPE, "busybox", 0o777
            tar.addfile(info)


def import_base(run: Run) -> str:
    """`docker import` the busybox rootfs as this run's base image; returns its tag."""
    tag = f"bench-pushpull-base-{run.suffix}:latest"
    tar_path = run.tmp / "rootfs.tar"
    rootfs_tar(tar_path)
    docker("import", "--change", 'CMD ["/bin/sh"]', str(tar_path), tag)
    run.tags.add(tag)
    tar_path.unlink()
    return tag


def write_random(path: Path, size: int) -> None:
    """Fill `path` with `size` random bytes (incompressible, unique per call)."""
    with open(path, "wb") as f:
        left = size
        while left > 0:
            piece = min(WRITE_PIECE, left)
            f.write(os.urandom(piece))
            left -= piece


def build_image(run: Run, base: str, workload: Workload, tag: str, env: dict[str, str]) -> str:
    """Build `tag` FROM `base` with one COPY layer of fresh random bytes per workload layer; returns its id."""
    context = run.tmp / "context"
    shutil.rmtree(context, ignore_errors=True)
    context.mkdir()
    lines = [f"FROM {base}"]
    for i, mib in enumerate(workload.layer_mib):
        write_random(context / f"payload-{i}.bin", mib * MIB)
        lines.append(f"COPY payload-{i}.bin /payload-{i}.bin")
    (context / "Dockerfile").write_text("\n".join(lines) + "\n")
    done = subprocess.run(["docker", "build", "-q", "-t", tag, str(context)], capture_output=True, text=True, env=env)
    shutil.rmtree(context, ignore_errors=True)
    if done.returncode != 0:
        raise RuntimeError(f"docker build failed: {done.stderr.strip()[-2000:]}")
    image_id = image_id_of(tag)
    run.tags.add(tag)
    run.image_ids.add(image_id)
    return image_id


def image_id_of(ref: str) -> str:
    """The local image id of `ref`, or '' when Docker does not have it."""
    done = docker("image", "inspect", "--format", "{{.Id}}", ref, check=False)
    return done.stdout.strip() if done.returncode == 0 else ""


def remove_image(image_id: str) -> None:
    """Remove an image by id with all its tags, so its layers leave the local store; verify it is gone."""
    docker("rmi", "-f", image_id)
    if image_id_of(image_id):
        raise RuntimeError(f"image {image_id} still present after docker rmi -f")


# --------------------------------------------------------------------------------------------- logs


def go_duration_ms(text: str) -> float:
    """Milliseconds in a Go duration string such as `1.97ms`, `2.5s` or `1m3.2s`."""
    return sum(float(n) * GO_UNIT_MS[unit] for n, unit in GO_DURATION_PART.findall(text))


def parse_request(server: str, line: str) -> dict[str, Any] | None:
    """(method, path, status, duration ms) of one access-log line, or None for other lines."""
    if server == "ours":
        m = OURS_ACCESS.search(line)
        if m is None:
            return None
        return {"method": m["method"], "path": m["path"], "status": int(m["status"]), "ms": float(m["ms"])}
    if "response completed" not in line:
        return None
    fields = {k: v.strip('"') for k, v in DIST_FIELD.findall(line)}
    return {
        "method": fields.get("http.request.method", "?"),
        "path": fields.get("http.request.uri", "?").split("?")[0],
        "status": int(fields.get("http.response.status", "0")),
        "ms": go_duration_ms(fields.get("http.response.duration", "0s")),
    }


def route_kind(path: str) -> str:
    """A coarse route name for grouping requests: upload, blob, manifest, base or other."""
    if "/blobs/uploads/" in path or path.endswith("/blobs/uploads"):
        return "upload"
    if "/blobs/" in path:
        return "blob"
    if "/manifests/" in path:
        return "manifest"
    return "base" if path == "/v2/" else "other"


def is_problem(server: str, line: str, request: dict[str, Any] | None) -> bool:
    """Whether a log line signals trouble: a 5xx, a traceback or an error/warning not from a normal 404 probe."""
    if request is not None:
        return request["status"] >= 500
    if TLS_PROBE_LINE in line:
        return False
    if server == "ours":
        return any(word in line for word in (" ERROR ", " WARNING ", " CRITICAL ", "Traceback"))
    return bool(re.search(r"level=(error|fatal|panic)", line))


def read_new_log(server: Server) -> tuple[list[dict[str, Any]], list[str]]:
    """The requests and problem lines the server logged since the last call (TLS probes are not problems)."""
    with open(server.log_path, "rb") as f:
        f.seek(server.log_offset)
        data = f.read()
    server.log_offset += len(data)
    requests, problems = [], []
    for line in data.decode(errors="replace").splitlines():
        request = parse_request(server.name, line)
        if request is not None:
            requests.append(request)
        if is_problem(server.name, line, request):
            problems.append(line[:500])
    return requests, problems


def summarize_requests(requests: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per `METHOD route` group: count, total and max server-side milliseconds, and non-2xx/3xx count."""
    groups: dict[str, dict[str, float]] = {}
    for r in requests:
        g = groups.setdefault(f"{r['method']} {route_kind(r['path'])}", {"n": 0, "total_ms": 0.0, "max_ms": 0.0})
        g["n"] += 1
        g["total_ms"] = round(g["total_ms"] + r["ms"], 1)
        g["max_ms"] = round(max(g["max_ms"], r["ms"]), 1)
        if r["status"] >= 400:
            g["errors"] = g.get("errors", 0) + 1
    return groups


# --------------------------------------------------------------------------------------------- rounds


def one_round(run: Run, server: Server, workload: Workload, rnd: int, base: str, env: dict[str, str]) -> dict:
    """Build a fresh image, push it to `server` (timed), drop it locally, pull it back (timed), drop it again."""
    local_tag = f"bench-pushpull-{run.suffix}:{server.name}-{workload.name.lower()}-r{rnd}"
    image_id = build_image(run, base, workload, local_tag, env)
    ref = f"{server.host}/bench-{run.suffix}/{workload.name.lower()}-r{rnd}:latest"
    docker("tag", local_tag, ref)
    run.tags.add(ref)
    read_new_log(server)  # skip anything logged before the push
    load = load_average()
    push_s, push_cpu_s = timed_docker(server.proc.pid, "push", ref)
    push_requests, push_problems = read_new_log(server)
    remove_image(image_id)
    pull_s, pull_cpu_s = timed_docker(server.proc.pid, "pull", ref)
    pull_requests, pull_problems = read_new_log(server)
    pulled_id = image_id_of(ref)
    if pulled_id != image_id:
        raise RuntimeError(f"pulled {ref} as {pulled_id}, pushed {image_id}")
    remove_image(image_id)
    return {
        "workload": workload.name,
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


def run_workload(run: Run, workload: Workload, rounds: int, base: str, env: dict[str, str]) -> list[dict]:
    """All rounds of one workload, alternating servers (A, B, A, B), with per-workload peak RSS."""
    for server in run.servers:
        reset_peak_rss(server.proc.pid)
    results = []
    for rnd in range(rounds):
        for server in run.servers:
            result = one_round(run, server, workload, rnd, base, env)
            print(
                f"  {workload.name} round {rnd} {server.name:>12}: push {result['push_s']:7.2f}s"
                f"  pull {result['pull_s']:7.2f}s   server CPU push {result['push_server_cpu_s']:5.2f}s"
                f" pull {result['pull_server_cpu_s']:5.2f}s   load {result['load_average_1m']:.1f}",
                flush=True,
            )
            results.append(result)
    for server in run.servers:
        server.peak_rss_kib[workload.name] = proc_status_kib(server.proc.pid, "VmHWM")
    return results


# --------------------------------------------------------------------------------------------- report


def values_of(results: list[dict], workload: str, server: str, key: str) -> list[float]:
    """`key` of every round of one workload on one server."""
    return [r[key] for r in results if r["workload"] == workload and r["server"] == server]


def median_of(results: list[dict], workload: str, server: str, key: str) -> float:
    """Median of `key` over the rounds of one workload on one server."""
    return statistics.median(values_of(results, workload, server, key))


def median_server_ms(results: list[dict], workload: str, server: str, phase: str, group: str) -> float:
    """Median over rounds of the total server-side ms of one request group (e.g. `PATCH upload`) in a phase."""
    values = [
        r[f"{phase}_requests"].get(group, {}).get("total_ms", 0.0)
        for r in results
        if r["workload"] == workload and r["server"] == server
    ]
    return statistics.median(values)


def summary_rows(results: list[dict], workloads: list[Workload]) -> list[dict[str, Any]]:
    """One row per (workload, push|pull): both servers' median seconds and the ratio ours/theirs."""
    rows = []
    for workload in workloads:
        for phase in ("push", "pull"):
            ours = median_of(results, workload.name, "ours", f"{phase}_s")
            theirs = median_of(results, workload.name, "distribution", f"{phase}_s")
            rows.append(
                {
                    "workload": f"{phase} {workload.name}",
                    "ours_median_s": round(ours, 3),
                    "distribution_median_s": round(theirs, 3),
                    "ratio": round(ours / theirs, 3),
                    "ours_min_s": min(values_of(results, workload.name, "ours", f"{phase}_s")),
                    "distribution_min_s": min(values_of(results, workload.name, "distribution", f"{phase}_s")),
                    "ours_mib_s": round(sum(workload.layer_mib) / ours, 1),
                    "distribution_mib_s": round(sum(workload.layer_mib) / theirs, 1),
                    "ours_server_cpu_median_s": median_of(results, workload.name, "ours", f"{phase}_server_cpu_s"),
                    "distribution_server_cpu_median_s": median_of(
                        results, workload.name, "distribution", f"{phase}_server_cpu_s"
                    ),
                }
            )
    return rows


def server_side_rows(results: list[dict], workloads: list[Workload]) -> list[tuple[str, str, float, float]]:
    """Median total server-side ms of the requests that carry the bytes, per workload and server."""
    groups = (("push", "PATCH upload"), ("push", "PUT upload"), ("pull", "GET blob"), ("push", "PUT manifest"))
    rows = []
    for workload in workloads:
        for phase, group in groups:
            ours = median_server_ms(results, workload.name, "ours", phase, group)
            theirs = median_server_ms(results, workload.name, "distribution", phase, group)
            rows.append((f"{phase} {workload.name}", group, ours, theirs))
    return rows


def print_report(rows: list[dict[str, Any]], side: list[tuple[str, str, float, float]], servers: list[Server]) -> None:
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
    for workload, group, ours, theirs in side:
        print(f"{workload:<20} {group:<14} {ours:>10.1f} {theirs:>16.1f}")
    print()
    for server in servers:
        peaks = ", ".join(f"{w} {kib / 1024:.1f} MiB" for w, kib in server.peak_rss_kib.items())
        print(f"peak RSS {server.name:>12}: idle {server.baseline_rss_kib / 1024:.1f} MiB; {peaks}")


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


def write_json(args: argparse.Namespace, workloads: list[Workload], run: Run, results: list[dict], rows: list) -> None:
    """Write the configuration, per-round results, medians and peak RSS to RESULTS_PATH."""
    RESULTS_PATH.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "benchmark": "docker_push_pull",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "config": {"rounds": args.rounds, "workloads": [w.name for w in workloads], "cpus": os.cpu_count()},
        "versions": versions(),
        "summary": rows,
        "peak_rss_kib": {s.name: {"idle": s.baseline_rss_kib, **s.peak_rss_kib} for s in run.servers},
        "rounds": results,
    }
    RESULTS_PATH.write_text(json.dumps(document, indent=2) + "\n")
    print(f"\nwrote {RESULTS_PATH}")


# --------------------------------------------------------------------------------------------- main


def cleanup(run: Run) -> None:
    """Stop the servers, remove exactly the images and tags this run created, delete temp dirs."""
    for server in run.servers:
        stop(server)
    for image_id in run.image_ids:
        docker("rmi", "-f", image_id, check=False)
    for tag in run.tags:
        if image_id_of(tag):
            docker("rmi", tag, check=False)
    shutil.rmtree(run.tmp, ignore_errors=True)


@contextlib.contextmanager
def bench_run(keep_logs: Path | None) -> Iterator[Run]:
    """A Run with a temp dir and both servers started; always cleaned up afterwards."""
    run = Run(suffix=secrets.token_hex(4), tmp=Path(tempfile.mkdtemp(prefix="bench-pushpull-")))
    try:
        run.servers = [start_ours(run.tmp), start_distribution(run.tmp)]
        for server in run.servers:
            server.baseline_rss_kib = proc_status_kib(server.proc.pid, "VmRSS")
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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds per server and workload (default 3)")
    parser.add_argument("--size-mib", type=int, default=200, help="size of the single-layer image (default 200)")
    parser.add_argument("--layers", type=int, default=3, help="layers of the multi-layer variant; <2 skips it")
    parser.add_argument("--multi-size-mib", type=int, default=300, help="total MiB of the multi-layer variant")
    parser.add_argument("--keep-logs", action="store_true", help="copy both servers' logs to bench/results/")
    return parser.parse_args(argv)


def workloads_from(args: argparse.Namespace) -> list[Workload]:
    """The single-layer workload, plus the multi-layer one unless --layers < 2."""
    workloads = [Workload((args.size_mib,))]
    if args.layers >= 2:
        workloads.append(Workload((args.multi_size_mib // args.layers,) * args.layers))
    return workloads


def main(argv: list[str] | None = None) -> None:
    """Run every workload against both servers and report."""
    args = parse_args(argv)
    workloads = workloads_from(args)
    env = docker_build_env()
    with bench_run(RESULTS_PATH.parent if args.keep_logs else None) as run:
        for server in run.servers:
            print(f"{server.name} on {server.host} (pid {server.proc.pid})", flush=True)
        base = import_base(run)
        results: list[dict] = []
        for workload in workloads:
            results += run_workload(run, workload, args.rounds, base, env)
        rows = summary_rows(results, workloads)
        print_report(rows, server_side_rows(results, workloads), run.servers)
        problems = [(r["server"], p) for r in results for p in r["problems"]]
        for server_name, line in problems[:20]:
            print(f"log problem ({server_name}): {line}")
        write_json(args, workloads, run, results, rows)


if __name__ == "__main__":
    main()
