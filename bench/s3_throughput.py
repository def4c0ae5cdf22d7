"""Push and pull throughput of one large blob on S3 storage (SeaweedFS), with and without redirects.

Starts SeaweedFS, then for each mode a registry on it (SQLite index), and times with curl: a
monolithic push (POST ?digest= with the body), a streamed push (POST, one PATCH, PUT) and a pull
(GET, following the 307 to S3 when redirects are on). Prints MiB/s medians over --rounds and writes
bench/results/s3_throughput.json.

    .venv/bin/python -m bench.s3_throughput --size-mib 256 --rounds 3     (from the project directory)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import tempfile
from pathlib import Path

import httpx

from bench import RESULTS_DIR
from bench.servers import start_ours_on_s3, stop
from tests.support.services import SeaweedS3

RESULTS = RESULTS_DIR / "s3_throughput.json"


def curl(*args: str) -> float:
    """Run curl; return the seconds it took (curl's own timer)."""
    out = subprocess.run(
        ["curl", "-sS", "-f", "-o", "/dev/null", "-w", "%{time_total}", *args], capture_output=True, text=True
    )
    if out.returncode != 0:
        raise RuntimeError(f"curl {' '.join(args)}: {out.stderr}")
    return float(out.stdout)


def round_trip(url: str, blob: Path, digest: str, repository: str) -> dict[str, float]:
    size_mib = blob.stat().st_size / (1 << 20)
    octet = ["-H", "Content-Type: application/octet-stream"]
    monolithic = curl("-X", "POST", *octet, "-T", str(blob), f"{url}/v2/{repository}/blobs/uploads?digest={digest}")
    location = httpx.post(f"{url}/v2/{repository}-s/blobs/uploads/").headers["Location"]
    streamed = curl("-X", "PATCH", *octet, "-T", str(blob), f"{url}{location}")
    streamed += curl("-X", "PUT", f"{url}{location}?digest={digest}")
    pull = curl("-L", f"{url}/v2/{repository}/blobs/{digest}")
    return {
        "push_monolithic_mib_s": size_mib / monolithic,
        "push_streamed_mib_s": size_mib / streamed,
        "pull_mib_s": size_mib / pull,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    results: dict[str, list[dict[str, float]]] = {"streamed through the registry": [], "redirected to S3": []}
    with tempfile.TemporaryDirectory(prefix="s3-bench-") as tmp, SeaweedS3() as s3:
        s3.create_bucket("bench")
        blob = Path(tmp) / "blob"
        hasher = hashlib.sha256()
        with blob.open("wb") as f:
            for _ in range(args.size_mib):
                chunk = os.urandom(1 << 20)
                hasher.update(chunk)
                f.write(chunk)
        digest = f"sha256:{hasher.hexdigest()}"
        for n in range(args.rounds):
            for mode, redirect in (("streamed through the registry", False), ("redirected to S3", True)):
                kind = "redirect" if redirect else "stream"
                server = start_ours_on_s3(Path(tmp), f"r{n}-{kind}", s3, "bench", redirect)
                try:
                    results[mode].append(round_trip(server.url(""), blob, digest, f"r{n}/{kind}"))
                finally:
                    stop(server)
    summary = {
        mode: {k: round(statistics.median(r[k] for r in rounds), 1) for k in rounds[0]}
        for mode, rounds in results.items()
    }
    print(f"{args.size_mib} MiB blob on SeaweedFS, medians of {args.rounds} rounds (MiB/s):")
    print(f"{'mode':32} {'push monolithic':>16} {'push streamed':>14} {'pull':>8}")
    for mode, values in summary.items():
        pushes = f"{values['push_monolithic_mib_s']:>16} {values['push_streamed_mib_s']:>14}"
        print(f"{mode:32} {pushes} {values['pull_mib_s']:>8}")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({"size_mib": args.size_mib, "rounds": results, "medians": summary}, indent=2))


if __name__ == "__main__":
    main()
