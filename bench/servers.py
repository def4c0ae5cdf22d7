"""The servers under test: our registry and CNCF Distribution, started on free loopback ports and stopped again.

Each runs as a subprocess with fresh storage under a directory of the caller's temp dir and its output in a log file
there (`bench.logs` reads it).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench import HOST, PROJECT_DIR
from bench.metrics import process_table, tree_pids

OURS_BIN = PROJECT_DIR / ".venv" / "bin" / "registry"
DISTRIBUTION_BIN = Path("/usr/bin/docker-registry")


@dataclass
class Server:
    """One registry process under test and where its log goes."""

    name: str
    port: int
    proc: subprocess.Popen[bytes]
    workdir: Path
    log_path: Path
    log_offset: int = 0
    baseline_rss_kib: int = 0
    peak_rss_kib: dict[str, int] = field(default_factory=dict)

    @property
    def host(self) -> str:
        """The `host:port` Docker uses in image references."""
        return f"{HOST}:{self.port}"

    def url(self, target: str) -> str:
        """The absolute URL of `target`: a path, or an absolute Location as Distribution sends (kept as it is)."""
        return target if target.startswith("http") else f"http://{self.host}{target}"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def env_pair(text: str) -> tuple[str, str]:
    """Parse `KEY=VALUE`: a variable of our server's environment (the --ours-env options)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
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


def settle_workers(server: Server, timeout_s: float = 10.0) -> int:
    """Wait until the server's process count stops changing (workers start after /healthz answers); return it."""
    deadline, count, stable_since = time.monotonic() + timeout_s, 0, time.monotonic()
    while time.monotonic() < deadline:
        now = len(tree_pids(server.proc.pid))
        if now != count:
            count, stable_since = now, time.monotonic()
        elif time.monotonic() - stable_since > 1.0:
            break
        time.sleep(0.1)
    return count


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
