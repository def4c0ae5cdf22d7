"""Our registry run as a process (`registry serve`), as the end-to-end tests use it: on a free 127.0.0.1 port
(or another address of this machine) with its own data directory, supervised by a `ServerProcess`."""

from __future__ import annotations

import re
import ssl
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import httpx
import pytest

from tests.support.processes import HOST, ProcessError, ServerProcess, free_port, wait_for_port_free

LOG_TAIL_LINES = 80
READY_TIMEOUT_S = 20.0
STOP_GRACE_S = 10.0


def registry_command() -> list[str]:
    """The `registry` command of this venv (or `python -m registry.cli` when the script is not installed)."""
    script = Path(sys.executable).with_name("registry")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "registry.cli"]


class RegistryServer:
    """A `registry serve` subprocess over `data_dir` (with `config` if given), its output in `log_path`,
    listening on `address` (default 127.0.0.1), with more `flags` of `registry serve` if given; with `ca`
    (the PEM CA file that signed the certificate its config serves), it is reached over HTTPS.

    It keeps its port across `kill9()` and `restart()`. `start()` returns once `/healthz` answers 200, and
    fails the test (showing the log) when it does not. Every started server is in `RegistryServer.live`
    until stopped, so the e2e conftest can show their logs on a failure and kill them at the end.
    """

    live: ClassVar[list[RegistryServer]] = []

    def __init__(
        self,
        data_dir: Path,
        log_path: Path,
        port: int | None = None,
        config: Path | None = None,
        address: str = HOST,
        ca: Path | None = None,
        flags: Sequence[str] = (),
    ):
        self.data_dir, self.log_path, self.config = data_dir, log_path, config
        self.address, self.ca = address, ca
        self.mode = "none"  # the auth mode its config sets, for tests that behave differently per mode
        self.port = port or free_port()
        command = [*registry_command(), "serve", "--host", address, "--port", str(self.port)]
        if config is not None:
            command += ["--config", str(config)]
        command += ["--data-dir", str(data_dir), *flags]
        self.process = ServerProcess(command, log_path=log_path, name=f"the registry on {self.host}")

    @property
    def host(self) -> str:
        """`127.0.0.1:<port>` (its address and port), as docker and skopeo name the registry."""
        return f"{self.address}:{self.port}"

    @property
    def url(self) -> str:
        return f"{'http' if self.ca is None else 'https'}://{self.host}"

    @property
    def storage_dir(self) -> Path:
        return self.data_dir / "storage"

    def client(self, timeout: float = 60.0) -> httpx.Client:
        verify = True if self.ca is None else ssl.create_default_context(cafile=str(self.ca))
        return httpx.Client(base_url=self.url, timeout=timeout, verify=verify)

    def start(self) -> None:
        """Spawn the server and wait until `/healthz` answers 200 (fail the test if it does not)."""
        assert not self.process.running, "already running"
        self.process.start()
        if self not in self.live:
            self.live.append(self)
        try:
            if self.ca is None:
                self.process.wait_for_url(f"{self.url}/healthz", READY_TIMEOUT_S)
            else:
                self.process.wait_until(self._healthy, READY_TIMEOUT_S, f"answering {self.url}/healthz")
        except ProcessError as e:
            pytest.fail(str(e), pytrace=False)

    def _healthy(self) -> bool:
        """Whether `/healthz` answers 200 (over HTTPS, trusting only `ca`)."""
        try:
            with self.client(timeout=1.0) as client:
                return client.get("/healthz").status_code == 200
        except httpx.HTTPError:
            return False

    def kill9(self) -> None:
        """SIGKILL the server and its worker processes, as a crash would, reap it, and wait for its port."""
        self.process.kill()
        wait_for_port_free(self.port, host=self.address)

    def pids(self) -> list[int]:
        """The server's processes: the one started and its workers."""
        return self.process.pids()

    def restart(self) -> None:
        """Start again over the same data directory and port (killing the server first if it runs)."""
        self.kill9()
        self.start()

    def stop(self) -> None:
        """A graceful stop (SIGTERM), then SIGKILL if it lingers."""
        self.process.stop(STOP_GRACE_S)
        if self in self.live:
            self.live.remove(self)

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return self.process.log_tail(lines)

    def log_text(self) -> str:
        return self.process.log_text()

    def wait_for_log(self, pattern: str, start: int = 0, timeout: float = 5.0) -> str:
        """The log from character `start` on, once a line matches `pattern` (access lines are written
        just after the response is sent, so a client may be done before its line is there)."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.log_text()[start:]
            if re.search(pattern, text) or time.monotonic() > deadline:
                return text
            time.sleep(0.05)


def start_server(directory: Path, config: Path | None = None) -> RegistryServer:
    """A started registry with its data and log under `directory`, optionally with a config file."""
    server = RegistryServer(directory / "data", directory / "registry.log", config=config)
    server.start()
    return server
