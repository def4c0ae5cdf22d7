"""The servers under test: our registry and CNCF Distribution, started on free loopback ports and stopped again.

Each runs as a `tests.support.processes.ServerProcess` (the one way the tests run a server too: its own process
group, output appended to a log file, readiness polled, SIGTERM then SIGKILL of the group), with fresh storage in a
directory of the caller's temp dir and its log there (`bench.logs` reads it).
"""

from __future__ import annotations

import argparse
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from bench import HOST, PROJECT_DIR
from bench.metrics import tree_pids
from tests.support.processes import ServerProcess, free_port

if TYPE_CHECKING:
    from tests.support.services import SeaweedS3  # imports pytest

OURS_BIN = PROJECT_DIR / ".venv" / "bin" / "registry"
DISTRIBUTION_BIN = Path("/usr/bin/docker-registry")


@dataclass
class Server:
    """One registry under test: its name (ours or distribution), port, process and log."""

    name: str
    port: int
    process: ServerProcess
    log_offset: int = 0
    baseline_rss_kib: int = 0
    peak_rss_kib: dict[str, int] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        """The server's main process (its workers are its children)."""
        return self.process.pid

    @property
    def log_path(self) -> Path:
        """The file its output goes to."""
        return self.process.log_path

    @property
    def host(self) -> str:
        """The `host:port` Docker uses in image references."""
        return f"{HOST}:{self.port}"

    def url(self, target: str) -> str:
        """The absolute URL of `target`: a path, or an absolute Location as Distribution sends (kept as it is)."""
        return target if target.startswith("http") else f"http://{self.host}{target}"


def env_pair(text: str) -> tuple[str, str]:
    """Parse `KEY=VALUE`: a variable of our server's environment (the --ours-env options)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def start_ours(
    tmp: Path, env: dict[str, str] | None = None, directory: str = "ours", access_log: bool = True
) -> Server:
    """Start our registry on a free port with a fresh data dir (`tmp/directory`), its output in a file: the access
    log unless `access_log` is off, plus `env` (e.g. workers, or S3 storage). This process's REGISTRY_* variables
    are not passed on."""
    workdir = tmp / directory
    workdir.mkdir()
    port = free_port()
    variables = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
    variables.update({"REGISTRY_LOG_ACCESS": str(access_log).lower(), **(env or {})})
    command = [str(OURS_BIN), "serve", "--host", HOST, "--port", str(port), "--data-dir", str(workdir / "data")]
    process = ServerProcess(command, log_path=workdir / "server.log", env=variables, name="registry")
    return started(Server("ours", port, process), "/healthz", timeout_s=60.0)


def start_ours_on_s3(tmp: Path, directory: str, s3: SeaweedS3, bucket: str, redirect: bool) -> Server:
    """`start_ours` with its blobs in `bucket` on `s3` (the index stays SQLite under `tmp/directory`), redirecting
    blob GETs to presigned S3 URLs or proxying them; no access log."""
    env = {
        **s3.env(),
        "REGISTRY_STORAGE_S3_BUCKET": bucket,
        "REGISTRY_STORAGE_S3_ENDPOINT": s3.endpoint,
        "REGISTRY_STORAGE_S3_REGION": s3.region,
        "REGISTRY_STORAGE_S3_REDIRECT": str(redirect).lower(),
    }
    return start_ours(tmp, env, directory, access_log=False)


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
    # Its AWS SDK refuses to start with a custom CA bundle set (it cannot apply one to its own transport).
    variables = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
    command = [str(DISTRIBUTION_BIN), "serve", str(config)]
    process = ServerProcess(command, log_path=workdir / "server.log", env=variables, name="distribution")
    return started(Server("distribution", port, process), "/v2/", timeout_s=30.0)


def started(server: Server, ready_path: str, timeout_s: float) -> Server:
    """`server` started and answering 200 on `ready_path`; stopped again, and ProcessError raised (with its log
    tail), when it exits first or is not ready within `timeout_s`."""
    server.process.start()
    try:
        server.process.wait_for_url(server.url(ready_path), timeout=timeout_s)
    except BaseException:
        server.process.stop()
        raise
    return server


def settle_workers(server: Server, timeout_s: float = 10.0) -> int:
    """Wait until the server's process count stops changing (workers start after /healthz answers); return it."""
    deadline, count, stable_since = time.monotonic() + timeout_s, 0, time.monotonic()
    while time.monotonic() < deadline:
        now = len(tree_pids(server.pid))
        if now != count:
            count, stable_since = now, time.monotonic()
        elif time.monotonic() - stable_since > 1.0:
            break
        time.sleep(0.1)
    return count


def stop(server: Server) -> None:
    """SIGTERM the server, SIGKILL its process group if it has not exited after 10 s, then SIGKILL any of its
    workers left behind."""
    server.process.stop(grace_s=10.0)
