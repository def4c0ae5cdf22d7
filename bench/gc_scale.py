"""How long online garbage collection takes, and how that grows with the number of blobs.

Builds registries of N manifests and 5N blobs straight into a fresh index and local storage (the
rows and files a push would leave, without the HTTP round trips), untags a fifth of the images,
then times `registry gc --delete-untagged` in-process. Prints a table and writes
bench/results/gc_scale.json.

    .venv/bin/python -m bench.gc_scale                    # 1,250 / 2,500 / 5,000 / 10,000 / 20,000 manifests
    .venv/bin/python -m bench.gc_scale --manifests 10000  # one size
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import random
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import RESULTS_DIR
from registry.gc import Collector
from registry.layout import blob_key
from storage.drivers.local import LocalDriver
from storage.metadata import Connection, Metadata, SQLiteDatabase

LAYERS_PER_IMAGE = 3  # with the config and the manifest's own bytes: five blobs per manifest
IMAGES_PER_REPOSITORY = 100
UNTAGGED_SHARE = 0.2
RESULTS = RESULTS_DIR / "gc_scale.json"
Rows = list[tuple[Any, ...]]


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def generate(manifests: int, seed: int = 1) -> tuple[Rows, Rows, Rows, Rows, dict[str, bytes]]:
    """Rows of manifests, references, tags and blobs for `manifests` images of unique blobs."""
    rng = random.Random(seed)
    now = time.time() - 7200  # older than the grace period
    manifest_rows, reference_rows, tag_rows, blobs = [], [], [], {}
    for n in range(manifests):
        repository = f"team{n // IMAGES_PER_REPOSITORY:04d}/app"
        parts = [rng.randbytes(64) for _ in range(LAYERS_PER_IMAGE + 1)]
        body = json.dumps({"schemaVersion": 2, "layers": [digest(p) for p in parts]}).encode()
        manifest = digest(body)
        for part in [*parts, body]:
            blobs[digest(part)] = part
        manifest_rows.append((repository, manifest, "application/vnd.oci.image.manifest.v1+json", len(body), now))
        reference_rows += [(repository, manifest, digest(p), "blob") for p in parts]
        if rng.random() >= UNTAGGED_SHARE:
            tag_rows.append((repository, f"v{n}", manifest, now))
    return manifest_rows, reference_rows, tag_rows, [(d, len(b), now) for d, b in blobs.items()], blobs


async def build(root: Path, manifests: int) -> tuple[Metadata, LocalDriver]:
    manifest_rows, reference_rows, tag_rows, blob_rows, blobs = generate(manifests)
    metadata = Metadata(SQLiteDatabase(str(root / "index.db")))
    await metadata.open()
    repositories = sorted({row[0] for row in manifest_rows})

    def insert(c: Connection) -> None:
        c.executemany("INSERT INTO repositories (name, created_at) VALUES (?, 0)", [(r,) for r in repositories])
        c.executemany(
            "INSERT INTO blobs (digest, size, state, created_at, last_used_at) VALUES (?, ?, 'present', ?, ?)",
            [(d, s, t, t) for d, s, t in blob_rows],
        )
        c.executemany(
            "INSERT INTO repository_blobs (repository, digest, linked_at) VALUES (?, ?, ?)",
            [(r, child, 0) for r, _, child, _ in reference_rows] + [(r, m, 0) for r, m, *_ in manifest_rows],
        )
        c.executemany(
            "INSERT INTO manifests (repository, digest, media_type, size, created_at) VALUES (?, ?, ?, ?, ?)",
            manifest_rows,
        )
        c.executemany(
            "INSERT INTO manifest_references (repository, manifest, child, kind) VALUES (?, ?, ?, ?)", reference_rows
        )
        c.executemany("INSERT INTO tags (repository, name, digest, updated_at) VALUES (?, ?, ?, ?)", tag_rows)

    await metadata.db.write(insert)
    driver = LocalDriver(str(root / "storage"))
    for d, data in blobs.items():
        path = Path(driver.root) / blob_key(d)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return metadata, driver


async def measure(manifests: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="gc-bench-") as tmp:
        metadata, driver = await build(Path(tmp), manifests)
        try:
            collector = Collector(metadata, driver, grace_s=3600, purge_after_s=86400)
            started = time.perf_counter()
            dry = await collector.run(dry_run=True, delete_untagged=True)
            planned = time.perf_counter() - started
            started = time.perf_counter()
            report = await collector.run(delete_untagged=True)
            collected = time.perf_counter() - started
        finally:
            await metadata.close()
    blobs = report.blobs_kept + report.blobs_removed
    return {
        "manifests": manifests,
        "blobs": blobs,
        "manifests_removed": report.manifests_removed,
        "blobs_removed": report.blobs_removed,
        "dry_run_s": round(planned, 3),
        "gc_s": round(collected, 3),
        "us_per_blob": round(collected / blobs * 1e6, 1),
        "dry_run_matches": (dry.manifests_removed, dry.blobs_removed)
        == (report.manifests_removed, report.blobs_removed),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--manifests", type=int, action="append", help="registry size (repeatable)")
    args = parser.parse_args()
    sizes = args.manifests or [1250, 2500, 5000, 10000, 20000]
    rows = []
    print(f"{'manifests':>9} {'blobs':>7} {'removed':>15} {'dry-run s':>9} {'gc s':>7} {'us/blob':>8}")
    for size in sizes:
        row = asyncio.run(measure(size))
        rows.append(row)
        removed = f"{row['manifests_removed']}m/{row['blobs_removed']}b"
        print(
            f"{row['manifests']:>9} {row['blobs']:>7} {removed:>15} {row['dry_run_s']:>9.3f} "
            f"{row['gc_s']:>7.3f} {row['us_per_blob']:>8.1f}"
        )
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "runs": rows}, indent=2))


if __name__ == "__main__":
    main()
