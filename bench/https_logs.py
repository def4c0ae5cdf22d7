"""What HTTPS and JSON logs cost: the same registry served over HTTP and HTTPS (a certificate of a private CA),
with `log.format` text and json, by granian and uvicorn (2 workers each), on loopback.

For each of the eight set-ups, in turn per round: manifest GETs by tag with wrk (2 threads, 64 keep-alive
connections, 8 s) and a 256 MiB blob GET with curl (median of three). Prints medians over --rounds with their
ranges and writes bench/results/https_logs.json. Also times the formatting of one access line in process.

    .venv/bin/python -m bench.https_logs --rounds 3     (from the project directory)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import re
import statistics
import subprocess
import tempfile
import timeit
from pathlib import Path

from bench import RESULTS_DIR
from registry.logs import JsonFormatter, TextFormatter
from tests.support.content import OCI_CONFIG, OCI_MANIFEST
from tests.support.server import RegistryServer
from tests.support.tls import ServerCertificate, make_server_certificate

RESULTS = RESULTS_DIR / "https_logs.json"
BLOB_MIB = 256


def seed(server: RegistryServer, blob: bytes) -> str:
    """Push an image of one layer, `blob`, as team/app:1; returns the layer's digest."""
    config = json.dumps({"architecture": "amd64", "os": "linux"}).encode()
    layer, config_digest = (f"sha256:{hashlib.sha256(b).hexdigest()}" for b in (blob, config))
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer, "size": len(blob)}],
    }
    with server.client(timeout=300) as client:
        for digest, data in ((layer, blob), (config_digest, config)):
            client.post("/v2/team/app/blobs/uploads/", params={"digest": digest}, content=data).raise_for_status()
        put = client.put("/v2/team/app/manifests/1", json=manifest, headers={"Content-Type": OCI_MANIFEST})
        put.raise_for_status()
    return layer


def measure(directory: Path, pair: ServerCertificate, blob: bytes, kind: str, tls: bool, log_format: str) -> dict:
    """Serve one set-up over fresh storage under `directory`; its request rate and blob GET rate."""
    http: dict[str, object] = {"server": kind, "workers": 2}
    if tls:
        http |= {"tls_certificate": str(pair.certificate), "tls_key": str(pair.key)}
    directory.mkdir(parents=True)
    config = directory / "config.yaml"
    config.write_text(json.dumps({"http": http, "log": {"format": log_format}}))
    server = RegistryServer(directory / "data", directory / "registry.log", config=config, ca=pair.ca if tls else None)
    server.start()
    try:
        layer = seed(server, blob)
        wrk = subprocess.run(
            ["wrk", "-t2", "-c64", "-d8s", "-H", f"Accept: {OCI_MANIFEST}", f"{server.url}/v2/team/app/manifests/1"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        found = re.search(r"Requests/sec:\s+([\d.]+)", wrk)
        assert found, wrk
        seconds = []
        curl = ["curl", "-sS", "-f", "-o", "/dev/null", "-w", "%{time_total}", "--cacert", str(pair.ca)]
        for _ in range(3):
            timed = subprocess.run(
                [*curl, f"{server.url}/v2/team/app/blobs/{layer}"],
                capture_output=True,
                text=True,
                check=True,
            )
            seconds.append(float(timed.stdout))
    finally:
        server.stop()
    return {"requests_per_s": float(found.group(1)), "blob_mib_per_s": BLOB_MIB / statistics.median(seconds)}


def format_cost_us() -> dict[str, float]:
    """Microseconds to format one access line, text and JSON (best of seven runs of 50,000)."""
    line = logging.LogRecord(
        "registry.access",
        logging.INFO,
        __file__,
        1,
        "%s %s %s %d %d %.1fms",
        ("127.0.0.1", "GET", "/v2/a", 200, 9, 0.4),
        None,
    )
    line.__dict__.update(
        client="127.0.0.1", method="GET", path="/v2/a", status=200, bytes=9, duration_ms=0.4,
        request_id="9d8c984f-23d7-4fa1-9dce-e0d836c3b642", user_agent="docker/20.10.24 go/go1.19.8 os/linux",
    )  # fmt: skip
    costs = {}
    for name, formatter in (("text", TextFormatter()), ("json", JsonFormatter())):
        best = min(timeit.repeat(lambda f=formatter: f.format(line), number=50_000, repeat=7))
        costs[name] = best / 50_000 * 1e6
    return costs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    blob = os.urandom(BLOB_MIB << 20)
    found: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-https-") as tmp:
        pair = make_server_certificate(Path(tmp) / "certs", "127.0.0.1")
        for round_number in range(args.rounds):
            for kind in ("granian", "uvicorn"):
                for tls in (False, True):
                    for log_format in ("text", "json"):
                        name = f"{kind} {'https' if tls else 'http'} {log_format}"
                        directory = Path(tmp) / f"{round_number}-{name.replace(' ', '-')}"
                        found.setdefault(name, []).append(measure(directory, pair, blob, kind, tls, log_format))
    summary = {}
    for name, runs in found.items():
        rates, pulls = [r["requests_per_s"] for r in runs], [r["blob_mib_per_s"] for r in runs]
        summary[name] = {"requests_per_s": statistics.median(rates), "blob_mib_per_s": statistics.median(pulls)}
        print(
            f"{name:22} manifest GET {statistics.median(rates):7.0f} req/s ({min(rates):.0f}-{max(rates):.0f})   "
            f"blob GET {statistics.median(pulls):5.0f} MiB/s ({min(pulls):.0f}-{max(pulls):.0f})"
        )
    costs = format_cost_us()
    print(f"formatting one access line: text {costs['text']:.1f} us, json {costs['json']:.1f} us")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"rounds": found, "medians": summary, "format_us": costs}, indent=2) + "\n")


if __name__ == "__main__":
    main()
