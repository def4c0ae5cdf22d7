"""The contract of ServerProcess, the one way the tests and the benchmarks run a server: ready when its URL or
port answers, an error with the log tail when it dies or is late, and a stop that always ends it."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from tests.support.processes import ProcessError, ServerProcess, free_port, port_accepts

# A server that ignores SIGTERM, so that only the SIGKILL of stop() ends it.
STUBBORN = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); time.sleep(60)"


def http_server(tmp_path: Path, port: int) -> ServerProcess:
    command = [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port), "--directory", str(tmp_path)]
    return ServerProcess(command, log_path=tmp_path / "server.log", name="http.server")


def test_waits_for_the_url_and_stops_with_sigterm(tmp_path: Path) -> None:
    port = free_port()
    server = http_server(tmp_path, port)
    server.start()
    server.wait_for_url(f"http://127.0.0.1:{port}/", timeout=20)
    assert server.running and server.pids() == [server.pid]
    server.stop(grace_s=10)
    assert not server.running and server.returncode is not None
    assert not port_accepts(port)
    assert server.log_text().startswith(f"---- {sys.executable} -m http.server")
    assert '"GET / HTTP/1.1" 200' in server.log_tail()


def test_a_restart_runs_the_same_command_and_appends_to_the_log(tmp_path: Path) -> None:
    port = free_port()
    server = http_server(tmp_path, port)
    for _ in range(2):
        server.start()
        server.wait_for_port(port, timeout=20)
        server.kill()
        assert server.returncode == -9
    assert server.log_text().count("---- ") == 2


def test_a_process_that_exits_before_it_is_ready_is_an_error_with_its_log(tmp_path: Path) -> None:
    command = [sys.executable, "-c", "import sys; print('no config file'); sys.exit(3)"]
    server = ServerProcess(command, log_path=tmp_path / "log", name="broken")
    server.start()
    with pytest.raises(ProcessError, match=r"(?s)broken exited with 3:.*no config file"):
        server.wait_for_port(free_port(), timeout=20)


def test_a_late_process_is_killed_and_is_an_error(tmp_path: Path) -> None:
    server = ServerProcess([sys.executable, "-c", STUBBORN], log_path=tmp_path / "log", name="late")
    server.start()
    began = time.monotonic()
    with pytest.raises(ProcessError, match=r"(?s)late was not listening on .* within 0.5s:.*\nup"):
        server.wait_for_port(free_port(), timeout=0.5)
    assert time.monotonic() - began < 10
    assert not server.running


def test_stop_kills_what_ignores_sigterm_after_the_grace(tmp_path: Path) -> None:
    server = ServerProcess([sys.executable, "-c", STUBBORN], log_path=tmp_path / "log")
    server.start()
    server.wait_until(lambda: "up" in server.log_text().splitlines()[1:], timeout=20)  # after the command line
    began = time.monotonic()
    server.stop(grace_s=0.5)
    assert 0.5 <= time.monotonic() - began < 10
    assert server.returncode == -9


def test_starting_twice_is_an_error_and_stopping_a_stopped_one_is_not(tmp_path: Path) -> None:
    server = ServerProcess([sys.executable, "-c", STUBBORN], log_path=tmp_path / "log", name="once")
    server.stop()  # never started: nothing to do
    server.start()
    with pytest.raises(ProcessError, match="once is already running"):
        server.start()
    server.kill()
    server.stop()
    server.kill()
