"""The one way the tests and the benchmarks run a server as a subprocess: start, wait until ready, stop, read its log.

    server = ServerProcess(["weed", "mini", ...], log_path=tmp / "weed.log", env={...})
    server.start()
    server.wait_for_url("http://127.0.0.1:8333/", timeout=30)   # or wait_for_port / wait_until
    ...
    server.stop()          # SIGTERM, then SIGKILL after the grace period
    print(server.log_tail())

The process runs in a session (and process group) of its own, so `kill()` and the SIGKILL of `stop()` reach
its worker processes too, and Ctrl-C in the terminal does not. Its stdout and stderr go to the log file, which
is appended to (a restart keeps the earlier lines), each start beginning with a `---- <command>` line.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

HOST = "127.0.0.1"
LOG_TAIL_LINES = 60
POLL_S = 0.05


class ProcessError(RuntimeError):
    """A server process exited before it was ready, or was not ready in time; the message ends with its log
    tail."""


def free_port() -> int:
    """A TCP port nobody listens on right now on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def free_ports(count: int) -> list[int]:
    """`count` distinct free ports (all bound at once, so the kernel cannot hand out one twice)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(s)
            s.bind((HOST, 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def port_is_free(port: int, host: str = "") -> bool:
    """Whether `port` can be bound on `host` (every address by default) right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def wait_for_port_free(port: int, timeout: float = 10.0, host: str = HOST) -> bool:
    """Wait until nothing listens on `port` any more (killed workers take a moment to go); whether it is free."""
    deadline = time.monotonic() + timeout
    while not port_is_free(port, host):
        if time.monotonic() > deadline:
            return False
        time.sleep(POLL_S)
    return True


def port_accepts(port: int, host: str = HOST, timeout: float = 1.0) -> bool:
    """Whether a TCP connection to host:port succeeds right now."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def http_status(url: str, timeout: float = 1.0) -> int | None:
    """The status of `GET url` (plain HTTP), or None when nothing answers."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or HOST, parts.port or 80, timeout=timeout)
    try:
        conn.request("GET", (parts.path or "/") + (f"?{parts.query}" if parts.query else ""))
        return conn.getresponse().status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def log_tail_of(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last `lines` lines of the log file at `path` ("(no log)" when there is none)."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


class ServerProcess:
    """One server subprocess: `command` with `env` (default: this process's environment) in `cwd`, its output
    appended to `log_path`.

    Contract: `start()` spawns it and returns at once; a `wait_*` method then blocks until it is ready, and
    raises ProcessError (after killing it, on a timeout) if it exits first or is not ready in time.
    `stop()` and `kill()` do nothing when it is not running, and reap it; both may be followed by `start()`,
    which runs the same command again. Not thread-safe.
    """

    def __init__(
        self,
        command: Sequence[str],
        *,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        name: str | None = None,
        user: int | None = None,
        group: int | None = None,
    ) -> None:
        """`name` is used in error messages (default: the command's program); `user` and `group` (ids) run it
        as another account, which needs root."""
        self.command = [str(part) for part in command]
        self.log_path, self.env, self.cwd = log_path, None if env is None else dict(env), cwd
        self.name = name or Path(self.command[0]).name
        self.user, self.group = user, group
        self.process: subprocess.Popen[bytes] | None = None

    # -- state

    @property
    def running(self) -> bool:
        """Whether it was started and has not exited."""
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int:
        """The process id of the last start (also the id of its process group)."""
        if self.process is None:
            raise ProcessError(f"{self.name} was never started")
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        """Its exit status once it exited (negative: killed by that signal), else None."""
        return None if self.process is None else self.process.poll()

    def pids(self) -> list[int]:
        """The live processes of its process group: the one started and the workers it spawned."""
        if self.process is None:
            return []
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError, ValueError):
                    if os.getpgid(int(entry.name)) == self.process.pid:
                        found.append(int(entry.name))
        return found

    # -- lifecycle

    def start(self) -> None:
        """Spawn the command (in a new session, stdin from /dev/null); raise ProcessError if it is running."""
        if self.running:
            raise ProcessError(f"{self.name} is already running (pid {self.pid})")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(f"---- {' '.join(self.command)}\n".encode())
            log.flush()
            extra: dict[str, object] = {}
            if self.user is not None:
                extra.update(user=self.user, group=self.group, extra_groups=[])
            self.process = subprocess.Popen(  # type: ignore[call-overload]
                self.command,
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                **extra,
            )

    def wait_until(self, ready: Callable[[], bool], timeout: float, what: str = "ready") -> None:
        """Poll `ready()` until it is true; raise ProcessError if the process exits first, or kill it and raise
        if `timeout` seconds pass."""
        if self.process is None:
            raise ProcessError(f"{self.name} was never started")
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise ProcessError(f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}")
            if ready():
                return
            if time.monotonic() > deadline:
                self.kill()
                raise ProcessError(f"{self.name} was not {what} within {timeout}s:\n{self.log_tail()}")
            time.sleep(POLL_S)

    def wait_for_url(self, url: str, timeout: float, status: int | None = 200) -> None:
        """Wait until `GET url` answers `status` (any status when None); see `wait_until`."""

        def answers() -> bool:
            got = http_status(url, timeout=1.0)
            return got is not None and (status is None or got == status)

        self.wait_until(answers, timeout, f"answering {url}" + ("" if status is None else f" with {status}"))

    def wait_for_port(self, port: int, timeout: float, host: str = HOST) -> None:
        """Wait until host:port accepts TCP connections; see `wait_until`."""
        self.wait_until(lambda: port_accepts(port, host), timeout, f"listening on {host}:{port}")

    def stop(self, grace_s: float = 10.0, sig: signal.Signals = signal.SIGTERM) -> None:
        """Send `sig` (SIGTERM: a graceful stop) to the process; after `grace_s` seconds SIGKILL its whole
        group. Once it exited, SIGKILL any worker of its group still left, and reap it."""
        if self.process is None:
            return
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(sig)
            try:
                self.process.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                self._kill_group()
                self.process.wait(timeout=10)
        self._kill_group()  # workers that outlived it

    def kill(self) -> None:
        """SIGKILL the process and its whole group, as a crash would, and reap it."""
        if self.process is None:
            return
        self._kill_group()
        self.process.wait(timeout=10)

    def _kill_group(self) -> None:
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)

    # -- the log

    def log_text(self) -> str:
        """Everything in the log file so far ("" when there is none)."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last `lines` lines of the log."""
        return log_tail_of(self.log_path, lines)
