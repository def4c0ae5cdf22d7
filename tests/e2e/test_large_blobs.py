"""A 2 GiB blob streams through the server in constant memory, both ways."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator

import pytest

from tests.support.server import RegistryServer

pytestmark = pytest.mark.e2e

SIZE = 2 << 30
PIECE = 8 << 20
RSS_LIMIT = 150 << 20


def peak_rss(pid: int) -> int:
    """The peak resident set size of process `pid`, in bytes (VmHWM)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def body(pieces: list[bytes]) -> Iterator[bytes]:
    for i in range(SIZE // PIECE):
        yield pieces[i % len(pieces)]


def test_two_gib_blob_pushes_and_pulls_without_the_server_growing(registry_server: RegistryServer) -> None:
    pieces = [os.urandom(PIECE) for _ in range(3)]
    hasher = hashlib.sha256()
    for piece in body(pieces):
        hasher.update(piece)
    digest = f"sha256:{hasher.hexdigest()}"
    with registry_server.client(timeout=300) as http:
        started = time.monotonic()
        location = http.post("/v2/big/blob/blobs/uploads/").headers["Location"]
        r = http.patch(location, content=body(pieces), headers={"Content-Type": "application/octet-stream"})
        assert r.status_code == 202, r.text
        assert http.put(location, params={"digest": digest}).status_code == 201
        pushed = time.monotonic()
        check = hashlib.sha256()
        received = 0
        with http.stream("GET", f"/v2/big/blob/blobs/{digest}") as response:
            assert response.status_code == 200
            for chunk in response.iter_bytes():
                check.update(chunk)
                received += len(chunk)
        pulled = time.monotonic()
    assert received == SIZE and f"sha256:{check.hexdigest()}" == digest
    rss = max(peak_rss(pid) for pid in registry_server.pids())
    print(f"2 GiB: push {pushed - started:.1f}s, pull {pulled - pushed:.1f}s, peak RSS per process {rss >> 20} MiB")
    assert rss < RSS_LIMIT, f"server peak RSS {rss >> 20} MiB"
