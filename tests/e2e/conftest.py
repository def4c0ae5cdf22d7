"""Fixtures of the end-to-end tests: a real registry process, the Docker engine and skopeo.

The registry runs as `registry serve` on a free 127.0.0.1 port with its own data directory; docker treats
127.0.0.0/8 as an insecure (plain HTTP) registry by default, so no daemon configuration is needed. Images
are built from a local busybox base image (no network, no Docker Hub).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.processes import free_port, log_tail_of, port_is_free
from tests.support.services import require_service

BUSYBOX = Path("/bin/busybox")
BUSYBOX_APPLETS = ("sh", "ls", "cat", "echo", "sha256sum", "wc", "head", "stat", "test", "true", "du", "env")
READY_TIMEOUT_S = 20.0
LOG_TAIL_LINES = 80

# Every registry started in this session, so a failing test can show their logs.
_servers: list[RegistryServer] = []


def wait_for_port_free(port: int, timeout: float = 10.0) -> None:
    """Wait until nothing listens on `port` any more (killed workers take a moment to go)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not port_is_free(port, "127.0.0.1"):
        time.sleep(0.05)


def registry_command() -> list[str]:
    script = Path(sys.executable).with_name("registry")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "registry.cli"]


class RegistryServer:
    """A `registry serve` subprocess over `data_dir`; it keeps its port across `kill9()` and `restart()`."""

    def __init__(self, data_dir: Path, log_path: Path, port: int | None = None, config: Path | None = None):
        self.data_dir, self.log_path, self.config = data_dir, log_path, config
        self.mode = "none"  # the auth mode its config sets, for tests that behave differently per mode
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        """`127.0.0.1:<port>`, as docker and skopeo name the registry."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    @property
    def storage_dir(self) -> Path:
        return self.data_dir / "storage"

    def client(self, timeout: float = 60.0) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=timeout)

    def start(self) -> None:
        """Spawn the server and wait until `/healthz` answers 200."""
        assert self.process is None or self.process.poll() is not None, "already running"
        with self.log_path.open("ab") as log:
            log.write(f"---- starting registry on {self.host} ----\n".encode())
            log.flush()
            command = [*registry_command(), "serve", "--host", "127.0.0.1", "--port", str(self.port)]
            if self.config is not None:
                command += ["--config", str(self.config)]
            self.process = subprocess.Popen(
                [*command, "--data-dir", str(self.data_dir)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._wait_ready()
        if self not in _servers:
            _servers.append(self)

    def _wait_ready(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + READY_TIMEOUT_S
        with httpx.Client(timeout=1.0) as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    pytest.fail(f"the registry exited with {self.process.returncode}:\n{self.log_tail()}")
                try:
                    if client.get(f"{self.url}/healthz").status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                time.sleep(0.05)
        self.kill9()
        pytest.fail(f"the registry did not answer /healthz within {READY_TIMEOUT_S}s:\n{self.log_tail()}")

    def kill9(self) -> None:
        """SIGKILL the server and its worker processes, as a crash would, and reap it."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
            wait_for_port_free(self.port)

    def pids(self) -> list[int]:
        """The server's processes: the one started and its workers."""
        assert self.process is not None
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError, ValueError):
                    if os.getpgid(int(entry.name)) == self.process.pid:
                        found.append(int(entry.name))
        return found

    def restart(self) -> None:
        """Start again over the same data directory and port (killing the server first if it runs)."""
        self.kill9()
        self.start()

    def stop(self) -> None:
        """A graceful stop (SIGTERM), then SIGKILL if it lingers."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill9()
        if self in _servers:
            _servers.remove(self)

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return log_tail_of(self.log_path, lines)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, pattern: str, start: int = 0, timeout: float = 5.0) -> str:
        """The log from character `start` on, once a line matches `pattern` (access lines are written
        just after the response is sent, so a client may be done before its line is there)."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.log_text()[start:]
            if re.search(pattern, text) or time.monotonic() > deadline:
                return text
            time.sleep(0.05)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Attach the log tail of every live registry to a failing test's report."""
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for server in _servers:
            report.sections.append((f"registry log {server.host} (tail)", server.log_tail()))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Leave no registry process behind, even when a fixture's teardown did not run."""
    for server in list(_servers):
        server.kill9()


def start_server(directory: Path, config: Path | None = None) -> RegistryServer:
    """A started registry with its data and log under `directory`, optionally with a config file."""
    server = RegistryServer(directory / "data", directory / "registry.log", config=config)
    server.start()
    return server


@pytest.fixture
def registry_server(tmp_path: Path) -> Iterator[RegistryServer]:
    """A registry of its own for one test (the crash tests kill and restart it)."""
    server = start_server(tmp_path)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def module_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    """A registry shared by the tests of one module."""
    server = start_server(tmp_path_factory.mktemp("registry"))
    yield server
    server.stop()


# -- docker -----------------------------------------------------------------------------------------


class Docker:
    """The docker CLI, and every image and tag it created in this session (removed at the end)."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.created: list[str] = []
        self.env = dict(os.environ)
        if subprocess.run(["docker", "buildx", "version"], capture_output=True).returncode != 0:
            self.env["DOCKER_BUILDKIT"] = "0"  # no buildx plugin: the legacy builder

    def run(
        self, *args: str, check: bool = True, timeout: float = 300, input: str | None = None, config: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run `docker args...` (with client config folder `config`, for logins, if given); with `check`,
        fail the test showing its output when it fails."""
        env = self.env if config is None else {**self.env, "DOCKER_CONFIG": str(config)}
        result = subprocess.run(
            ["docker", *args], capture_output=True, text=True, env=env, timeout=timeout, check=False, input=input
        )
        if check and result.returncode != 0:
            pytest.fail(f"docker {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
        return result

    def track(self, reference: str) -> str:
        """Remember an image reference or ID to remove at the end of the session."""
        self.created.append(reference)
        return reference

    def image_id(self, reference: str) -> str:
        return self.run("image", "inspect", "-f", "{{.Id}}", reference).stdout.strip()

    def has_image(self, reference: str) -> bool:
        return self.run("image", "inspect", reference, check=False).returncode == 0

    def build(self, tag: str, base: str, files: dict[str, bytes], cmd: list[str] | None = None) -> str:
        """Build `tag` FROM `base` with one COPY layer holding `files` (path in the image -> bytes).

        Returns the image ID.
        """
        context = self.workdir / f"context-{uuid.uuid4().hex[:12]}"
        (context / "files").mkdir(parents=True)
        for path, data in files.items():
            target = context / "files" / path.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        lines = [f"FROM {base}", "COPY files/ /"]
        if cmd is not None:
            lines.append(f"CMD {json.dumps(cmd)}")
        (context / "Dockerfile").write_text("\n".join(lines) + "\n")
        self.track(tag)
        self.run("build", "--rm", "-q", "-t", tag, str(context), timeout=600)
        shutil.rmtree(context, ignore_errors=True)
        return self.track(self.image_id(tag))

    def build_large(self, tag: str, base: str, path: str, size: int, piece: int = 8 << 20) -> tuple[str, str]:
        """Build `tag` FROM `base` with one layer holding `size` random bytes at `path`, written in pieces.

        Returns the image ID and the sha256 of the file.
        """
        context = self.workdir / f"context-{uuid.uuid4().hex[:12]}"
        context.mkdir(parents=True)
        hasher = hashlib.sha256()
        with (context / "blob.bin").open("wb") as f:
            for offset in range(0, size, piece):
                data = os.urandom(min(piece, size - offset))
                hasher.update(data)
                f.write(data)
        (context / "Dockerfile").write_text(f"FROM {base}\nCOPY blob.bin {path}\n")
        self.track(tag)
        self.run("build", "--rm", "-q", "-t", tag, str(context), timeout=600)
        shutil.rmtree(context, ignore_errors=True)
        return self.track(self.image_id(tag)), hasher.hexdigest()

    def cleanup(self) -> None:
        """Best effort: remove every tag and image this session created, newest first."""
        for reference in reversed(self.created):
            self.run("rmi", "-f", reference, check=False)


def _docker_available() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode == 0
    except subprocess.TimeoutExpired:
        return False


@pytest.fixture(scope="session")
def docker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Docker]:
    """The docker CLI with a reachable daemon: skips the tests without one, fails them under CI=true.

    Removes every image it created at the end of the session.
    """
    require_service(_docker_available(), "the Docker engine (`docker info`)")
    helper = Docker(tmp_path_factory.mktemp("docker"))
    yield helper
    helper.cleanup()


def _rootfs_tar(directory: Path) -> Path:
    """A tarball of a root filesystem with a static busybox and its applets as symlinks."""
    rootfs = directory / "rootfs"
    for folder in ("bin", "etc", "tmp", "data"):
        (rootfs / folder).mkdir(parents=True, exist_ok=True)
    shutil.copy2(BUSYBOX, rootfs / "bin" / "busybox")
    for applet in BUSYBOX_APPLETS:
        (rootfs / "bin" / applet).symlink_to("busybox")
    tarball = directory / "rootfs.tar"
    with tarfile.open(tarball, "w") as tar:
        tar.add(rootfs, arcname=".")
    return tarball


@pytest.fixture(scope="session")
def base_image(docker: Docker, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A local busybox base image, imported from a tarball under a unique tag."""
    require_service(BUSYBOX.exists(), f"{BUSYBOX} (busybox-static)")
    tarball = _rootfs_tar(tmp_path_factory.mktemp("base"))
    tag = docker.track(f"registry-e2e/base:{uuid.uuid4().hex[:12]}")
    docker.run("import", "--change", 'CMD ["/bin/sh"]', str(tarball), tag)
    return tag


# -- skopeo -----------------------------------------------------------------------------------------


class Skopeo:
    """The skopeo CLI, with a permissive signature policy of our own (no /etc/containers needed)."""

    def __init__(self, workdir: Path):
        self.policy = workdir / "policy.json"
        self.policy.write_text(json.dumps({"default": [{"type": "insecureAcceptAnything"}]}))

    def run(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """Run `skopeo --policy <ours> args...`; with `check`, fail the test showing its output on failure."""
        command = ["skopeo", "--policy", str(self.policy), *args]
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
        if check and result.returncode != 0:
            pytest.fail(f"skopeo {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
        return result


@pytest.fixture(scope="session")
def skopeo(tmp_path_factory: pytest.TempPathFactory) -> Skopeo:
    """The skopeo CLI: skips the test without it, fails it under CI=true."""
    require_service(shutil.which("skopeo") is not None, "skopeo")
    return Skopeo(tmp_path_factory.mktemp("skopeo"))
