"""Large blob transfers with curl: the large random blob, its push in every upload form, GETs, and their checks.

Every function returns curl's own seconds (which leave out starting the curl process) and raises BenchError on a
wrong answer.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import MIB, BenchError
from bench.client import OCTET, parse_headers, sha256_digest, with_query
from bench.servers import Server

TAIL = 16  # bytes at the end of the large blob rewritten before every push, so each push uploads a new blob


@dataclass
class CurlResult:
    """One curl transfer: status, curl's own time (excludes process start), bytes received, headers."""

    status: int
    seconds: float
    downloaded: int
    headers: dict[str, str]


def curl(url: str, *args: str) -> CurlResult:
    """Run curl once (no `Expect: 100-continue`, body to /dev/null); raise BenchError if curl itself fails."""
    command = ["curl", "-sS", "-o", "/dev/null", "-D", "-", "-H", "Expect:"]
    command += ["-w", "\n%{http_code} %{time_total} %{size_download}", *args, url]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise BenchError(f"curl {' '.join(args)} {url}: exit {done.returncode}: {done.stderr.strip()[-500:]}")
    head, _, stats = done.stdout.rpartition("\n")
    status, seconds, downloaded = stats.split()
    return CurlResult(int(status), float(seconds), int(float(downloaded)), parse_headers(head.splitlines()))


def curl_expect(status: int, what: str, url: str, *args: str) -> CurlResult:
    """curl, then raise BenchError unless the response has `status`."""
    result = curl(url, *args)
    if result.status != status:
        raise BenchError(f"{what}: HTTP {result.status}, expected {status} ({url})")
    return result


def check_blob(server: Server, name: str, digest: str, size: int) -> None:
    """HEAD the blob: 200 with the right Content-Length, else BenchError."""
    result = curl_expect(200, f"HEAD {name}@{digest[:19]}", server.url(f"/v2/{name}/blobs/{digest}"), "-I")
    if int(result.headers.get("content-length", -1)) != size:
        raise BenchError(f"HEAD {name}@{digest}: content-length {result.headers.get('content-length')}, pushed {size}")


def blob_sha256(server: Server, name: str, digest: str, *args: str) -> str:
    """The sha256 digest of the bytes a GET of the blob returns (streamed from curl with `args`, not timed)."""
    command = ["curl", "-sS", "-f", *args, server.url(f"/v2/{name}/blobs/{digest}")]
    hasher = hashlib.sha256()
    with subprocess.Popen(command, stdout=subprocess.PIPE) as proc:
        assert proc.stdout is not None
        while piece := proc.stdout.read(8 * MIB):
            hasher.update(piece)
    if proc.returncode != 0:
        raise BenchError(f"GET {name}@{digest}: curl exit {proc.returncode}")
    return "sha256:" + hasher.hexdigest()


def pull(url: str, status: int, size: int, times: int, *args: str) -> float:
    """GET `url` `times` times with curl, each answer checked for `status` and exactly `size` bytes; return the
    sum of curl's own transfer times."""
    seconds = 0.0
    for _ in range(times):
        result = curl_expect(status, f"GET {url} {' '.join(args)}", url, *args)
        if result.downloaded != size:
            raise BenchError(f"GET {url} {' '.join(args)}: {result.downloaded} bytes, expected {size}")
        seconds += result.seconds
    return seconds


@dataclass
class LargeBlob:
    """A large random file, also split into chunk files. Before each push only its last TAIL bytes change, so every
    push uploads a blob the server has never seen, and the digest comes from a saved hash state of the rest."""

    path: Path
    chunks: list[Path]
    size: int
    chunk_size: int
    prefix_hash: Any
    digest: str = ""

    @property
    def mib(self) -> float:
        """Size in MiB."""
        return self.size / MIB

    def next_variant(self) -> str:
        """Rewrite the tail (in the file and in the last chunk) with new random bytes; return the new digest."""
        tail = secrets.token_bytes(TAIL)
        with open(self.path, "r+b") as f:
            f.seek(self.size - TAIL)
            f.write(tail)
        with open(self.chunks[-1], "r+b") as f:
            f.seek(self.size - TAIL - (len(self.chunks) - 1) * self.chunk_size)
            f.write(tail)
        hasher = self.prefix_hash.copy()
        hasher.update(tail)
        self.digest = "sha256:" + hasher.hexdigest()
        return self.digest


def make_large_blob(directory: Path, size: int, chunk_size: int) -> LargeBlob:
    """Write `size` random bytes to directory/blob.bin and, piece by piece, to chunk files of `chunk_size`."""
    directory.mkdir(parents=True, exist_ok=True)
    path, chunks, prefix_hash = directory / "blob.bin", [], hashlib.sha256()
    with open(path, "wb") as whole:
        for i, start in enumerate(range(0, size, chunk_size)):
            data = os.urandom(min(chunk_size, size - start))
            whole.write(data)
            chunk = directory / f"chunk-{i:05d}.bin"
            chunk.write_bytes(data)
            chunks.append(chunk)
            prefix_hash.update(data[: max(0, size - TAIL - start)])
    blob = LargeBlob(path, chunks, size, chunk_size, prefix_hash)
    blob.next_variant()
    return blob


def upload_start(server: Server, name: str) -> tuple[float, str]:
    """POST an empty upload; return curl's seconds and the Location."""
    result = curl_expect(202, f"POST upload {name}", server.url(f"/v2/{name}/blobs/uploads/"), "-X", "POST")
    return result.seconds, result.headers["location"]


def upload_finish(server: Server, location: str, digest: str, body: Path | None = None) -> float:
    """PUT ?digest= (with the whole body when given) to finish an upload; return curl's seconds."""
    args = ["-X", "PUT", "-H", f"Content-Type: {OCTET}"]
    args += ["-T", str(body)] if body is not None else ["-H", "Content-Length: 0"]
    return curl_expect(201, "PUT upload", server.url(with_query(location, "digest", digest)), *args).seconds


def push_single_post(server: Server, name: str, blob: LargeBlob) -> float:
    """Monolithic push in one request: POST ?digest= with the body. The path has no trailing slash, because curl -T
    appends the file name to a URL ending in `/`."""
    url = server.url(f"/v2/{name}/blobs/uploads?digest={blob.digest}")
    return curl_expect(
        201, f"POST ?digest {name}", url, "-X", "POST", "-H", f"Content-Type: {OCTET}", "-T", str(blob.path)
    ).seconds


def push_post_put(server: Server, name: str, blob: LargeBlob) -> float:
    """Monolithic push in two requests: POST, then PUT ?digest= with the body."""
    seconds, location = upload_start(server, name)
    return seconds + upload_finish(server, location, blob.digest, blob.path)


def push_streamed(server: Server, name: str, blob: LargeBlob) -> float:
    """Streamed push: POST, one PATCH with the whole body, PUT ?digest=."""
    seconds, location = upload_start(server, name)
    patch = ["-X", "PATCH", "-H", f"Content-Type: {OCTET}", "-T", str(blob.path)]
    result = curl_expect(202, f"PATCH {name}", server.url(location), *patch)
    return seconds + result.seconds + upload_finish(server, result.headers["location"], blob.digest)


def push_chunked(server: Server, name: str, blob: LargeBlob) -> float:
    """Chunked push: POST, one PATCH per chunk file with `Content-Range: start-end` (following each new Location,
    as Distribution requires), then PUT ?digest=."""
    seconds, location = upload_start(server, name)
    start = 0
    for chunk in blob.chunks:
        end = start + chunk.stat().st_size - 1
        args = ["-X", "PATCH", "-H", f"Content-Type: {OCTET}", "-H", f"Content-Range: {start}-{end}", "-T", str(chunk)]
        result = curl_expect(202, f"PATCH {name} {start}-{end}", server.url(location), *args)
        seconds, location, start = seconds + result.seconds, result.headers["location"], end + 1
    return seconds + upload_finish(server, location, blob.digest)


def supports_single_post(server: Server) -> bool:
    """Whether POST ?digest= with a body completes an upload (201). Distribution 2.8 answers 202 and ignores it."""
    data = secrets.token_bytes(64)
    url = server.url(f"/v2/bench/probe/blobs/uploads/?digest={sha256_digest(data)}")
    args = ("-X", "POST", "-H", f"Content-Type: {OCTET}", "--data-binary", "@-")
    done = subprocess.run(
        ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", *args, url], input=data, capture_output=True
    )
    return done.stdout.strip() == b"201"
