"""A real `registry serve` under hostile connections: half-open sockets, huge or slow headers, broken bodies."""

from __future__ import annotations

import contextlib
import json
import re
import resource
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.server import RegistryServer, start_server

HALF_OPEN = 1500  # more than granian's default per-server connection cap (backlog 1024 / workers, per worker)
ANSWER_WITHIN_S = 5.0


@contextlib.contextmanager
def open_files(soft: int) -> Iterator[None]:
    """This process's open-file soft limit set to `soft` (capped at the hard limit) for the block."""
    before = resource.getrlimit(resource.RLIMIT_NOFILE)
    hard = before[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft if hard == resource.RLIM_INFINITY else min(soft, hard), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, before)


def connect(server: RegistryServer, timeout: float = 5.0) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=timeout)


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Status, headers (lower-case names) and body of one response with a Content-Length (or up to EOF)."""
    data = b""
    while b"\r\n\r\n" not in data:
        piece = sock.recv(65536)
        if not piece:
            break
        data += piece
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", -1))
    while length < 0 or len(body) < length:
        piece = sock.recv(65536)
        if not piece:
            break
        body += piece
    return status, headers, body


def request(server: RegistryServer, head: str, body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    """Send `head` (request line and headers, without the blank line) and `body` on a new connection."""
    with connect(server) as sock:
        sock.sendall(head.encode("latin-1") + b"\r\n\r\n" + body)
        return read_response(sock)


def start_upload(server: RegistryServer, name: str) -> str:
    status, headers, _ = request(server, f"POST /v2/{name}/blobs/uploads/ HTTP/1.1\r\nHost: x\r\nContent-Length: 0")
    assert status == 202
    return headers["location"]


def half_open(server: RegistryServer, count: int) -> list[socket.socket]:
    """`count` connections that each sent part of a request head and never finish it."""
    sockets = []
    try:
        for _ in range(count):
            sock = connect(server)
            sockets.append(sock)
            sock.sendall(b"GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Waiting: ")
    except BaseException:
        close_all(sockets)
        raise
    return sockets


def close_all(sockets: list[socket.socket]) -> None:
    for sock in sockets:
        sock.close()


def worker_rss_kib(server: RegistryServer) -> int:
    """The summed resident memory of the server's processes."""
    total = 0
    for pid in server.pids():
        with contextlib.suppress(OSError):
            match = re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
            total += int(match.group(1)) if match else 0
    return total


def errors_logged(text: str) -> list[str]:
    """The lines of a server log that report an error or a traceback."""
    return [line for line in text.splitlines() if "Traceback" in line or " ERROR " in line or "[ERROR]" in line]


def write_config(directory: Path, http: dict[str, object]) -> Path:
    path = directory / "config.yaml"
    path.write_text(json.dumps({"http": http}))  # JSON is YAML
    return path


def served_by(server: RegistryServer) -> str:
    """The ASGI server (granian or uvicorn) that the server's config names."""
    assert server.config is not None
    return json.loads(server.config.read_text())["http"]["server"]


@pytest.fixture(scope="module", params=["granian", "uvicorn"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    """A registry with the default limits, served by each ASGI server in turn."""
    directory = tmp_path_factory.mktemp(request.param)
    started = start_server(directory, write_config(directory, {"server": request.param}))
    yield started
    started.stop()


def test_thousands_of_half_open_connections_leave_room_for_other_clients(server: RegistryServer) -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard < HALF_OPEN + 1024:
        pytest.skip(f"the hard open-file limit {hard} leaves no room for {HALF_OPEN} client sockets")
    with open_files(HALF_OPEN + 1024):
        sockets = half_open(server, HALF_OPEN)
        try:
            started = time.monotonic()
            with connect(server, timeout=ANSWER_WITHIN_S) as sock:
                sock.sendall(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n")
                status, _, _ = read_response(sock)
            assert status == 200
            assert time.monotonic() - started < ANSWER_WITHIN_S
        finally:
            close_all(sockets)


def test_request_heads_far_above_64_kib_are_refused_not_buffered(server: RegistryServer) -> None:
    # hyper (granian) refuses a head once its read buffer holds max_header_bytes without a complete head, so a
    # head of up to twice that may pass; h11 (uvicorn) refuses one still incomplete above it, so a head of up to
    # one socket read (256 KiB) more may pass there.
    size, refusal = (128 << 10, 431) if served_by(server) == "granian" else (1 << 20, 400)
    with connect(server) as sock:
        try:
            sock.sendall(b"GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * size + b"\r\n\r\n")
            status: int | None = read_response(sock)[0]
        except ConnectionResetError:  # refused and closed while the head was still coming
            status = None
    assert status in (refusal, None)


def test_request_headers_of_a_large_token_are_still_accepted(server: RegistryServer) -> None:
    status, _, _ = request(server, "GET /v2/ HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + "a" * (16 << 10))
    assert status == 200


def test_many_connections_sending_huge_headers_do_not_grow_the_workers(server: RegistryServer) -> None:
    before = worker_rss_kib(server)
    sockets = []
    try:
        for _ in range(200):
            sock = connect(server)
            sockets.append(sock)
            with contextlib.suppress(OSError):  # the server may refuse and close before we are done
                sock.sendall(b"GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (512 << 10))
        time.sleep(0.5)
        grown_mib = (worker_rss_kib(server) - before) / 1024
    finally:
        close_all(sockets)
    assert grown_mib < 50, f"the server grew by {grown_mib:.0f} MiB holding 200 unfinished request heads"


def test_a_malformed_chunked_body_is_a_400_with_an_oci_error_and_no_traceback(server: RegistryServer) -> None:
    location = start_upload(server, "limits/chunked")
    log_start = len(server.log_text())
    head = (
        f"PATCH {location} HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked"
    )
    status, _, body = request(server, head, b"ZZ\r\nabc\r\n0\r\n\r\n")
    assert status == 400
    if served_by(server) == "granian":  # uvicorn (h11) answers a malformed body itself, in plain text
        assert json.loads(body)["errors"][0]["code"] == "BLOB_UPLOAD_INVALID"
    log = server.wait_for_log(r"PATCH \S+ 400 ", log_start)
    assert errors_logged(log) == []


def test_a_client_leaving_mid_push_is_one_info_line_not_an_error(server: RegistryServer) -> None:
    location = start_upload(server, "limits/aborted")
    log_start = len(server.log_text())
    with connect(server) as sock:
        head = f"PATCH {location} HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
        sock.sendall(head.encode() + b"Content-Length: 10000000\r\n\r\n" + b"x" * 100_000)
        time.sleep(0.3)  # the server is reading the body when we go
    log = server.wait_for_log(r"the client went away", log_start)
    assert re.search(r" INFO .*PATCH \S+: the client went away", log), log
    assert errors_logged(log) == []


def test_a_client_that_never_finishes_its_headers_is_dropped_after_the_header_timeout(tmp_path: Path) -> None:
    server = start_server(tmp_path, write_config(tmp_path, {"header_timeout_s": 2}))
    try:
        with connect(server, timeout=0.25) as sock:
            started = time.monotonic()
            sock.sendall(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n")
            dropped_after = None
            while dropped_after is None and time.monotonic() - started < 10:
                try:
                    sock.sendall(b"X")  # dribbling does not extend the deadline
                    sock.recv(65536)  # a refusal or the end of the connection
                    dropped_after = time.monotonic() - started
                except TimeoutError:
                    continue
                except OSError:
                    dropped_after = time.monotonic() - started
        assert dropped_after is not None and dropped_after < 5, f"still connected after {dropped_after}s"
    finally:
        server.stop()


def test_a_client_that_connects_and_sends_nothing_is_dropped_after_the_header_timeout(tmp_path: Path) -> None:
    server = start_server(tmp_path, write_config(tmp_path, {"header_timeout_s": 2}))
    try:
        with connect(server, timeout=10) as sock:
            started = time.monotonic()
            with contextlib.suppress(TimeoutError, ConnectionResetError):
                sock.recv(65536)  # b"" (or a refusal) once the server closes it
            dropped_after = time.monotonic() - started
        assert dropped_after < 5, f"still connected after {dropped_after:.1f}s"
    finally:
        server.stop()


@pytest.mark.parametrize("kind", ["granian", "uvicorn"])
def test_the_server_raises_its_open_file_limit_to_the_hard_limit(tmp_path: Path, kind: str) -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard <= 1024:
        pytest.skip(f"the hard open-file limit is {hard}: there is nothing to raise")
    with open_files(1024):
        server = start_server(tmp_path, write_config(tmp_path, {"server": kind}))
    try:
        for pid in server.pids():
            limits = Path(f"/proc/{pid}/limits").read_text()
            soft, hard_seen = re.search(r"Max open files\s+(\S+)\s+(\S+)", limits).groups()
            assert soft == hard_seen, f"process {pid}: open files {soft} (hard {hard_seen})"
    finally:
        server.stop()
