"""What incremental collection costs: time until the review queues are empty, the longest write
transaction, the collector's peak RSS, and the latency of pushes while it runs.

Seeds a SQLite index straight (no HTTP): repositories of 5 tagged images, each image a manifest, a
config and 3 layers of its own plus 1 of 20 base layers every image shares (5 blob rows an image);
stores on disk the bytes of the images it untags. Then, in a fresh process (so the peak RSS is the
collector's, not the seeding's), deletes a share of the tags (each queueing a review, due at once)
and runs the collector (`registry gc`'s, untagged manifests collected, grace 10 min) until nothing is
due, while a pusher records a layer and a tagged manifest (the writes of a push) in a loop. Writes
bench/results/gc_reviews.json.

    .venv/bin/python -m bench.gc_reviews --blobs 100000 --share 0.01
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from bench import RESULTS_DIR
from registry.layout import blob_key
from registry.reviews import ReviewCollector
from storage.drivers.local import LocalDriver
from storage.metadata import Connection, Database, ManifestRecord, Metadata, SQLiteDatabase
from tests.support.counting import DelegatingDatabase

T = TypeVar("T")
TAGS_PER_REPOSITORY = 5
BASE_LAYERS = 20
GRACE_S = 600.0
RESULTS = RESULTS_DIR / "gc_reviews.json"


def fake_digest(*parts: object) -> str:
    return "sha256:" + hashlib.sha256(repr(parts).encode()).hexdigest()


def seed(root: Path, blobs: int, share: float) -> dict[str, int]:
    """Rows of `blobs / 5` images straight into `root/index.db` (its schema made by Metadata.open);
    the bytes of the images whose tags `collect` deletes (every 1/share-th) stored under `root/data`."""
    asyncio.run(_create_schema(root))
    images = blobs // 5
    every = round(1 / share)
    old = time.time() - 7200
    conn = sqlite3.connect(root / "index.db", isolation_level=None)
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("BEGIN")
    base = [fake_digest("base", n) for n in range(BASE_LAYERS)]
    conn.executemany("INSERT INTO blobs VALUES (?, 100, 'present', ?, ?)", [(d, old, old) for d in base])
    stored = 0
    for n in range(images):
        repository = f"team{n // TAGS_PER_REPOSITORY:06d}/app"
        own = [fake_digest(n, part) for part in range(4)]  # a config and 3 layers
        manifest = fake_digest(n, "manifest")
        if n % TAGS_PER_REPOSITORY == 0:
            conn.execute("INSERT INTO repositories (name, created_at) VALUES (?, ?)", (repository, old))
        conn.executemany(
            "INSERT INTO blobs VALUES (?, 1000, 'present', ?, ?)", [(d, old, old) for d in [*own, manifest]]
        )
        children = [*own, base[n % BASE_LAYERS]]
        conn.executemany(
            "INSERT INTO repository_blobs VALUES (?, ?, ?)", [(repository, d, old) for d in [*children, manifest]]
        )
        conn.execute(
            "INSERT INTO manifests (repository, digest, media_type, size, created_at) VALUES (?, ?, ?, 1000, ?)",
            (repository, manifest, "application/vnd.oci.image.manifest.v1+json", old),
        )
        conn.executemany(
            "INSERT INTO manifest_references VALUES (?, ?, ?, 'blob')", [(repository, manifest, d) for d in children]
        )
        conn.execute(
            "INSERT INTO tags (repository, name, digest, updated_at) VALUES (?, ?, ?, ?)",
            (repository, f"v{n % TAGS_PER_REPOSITORY}", manifest, old),
        )
        if n % every == 0:
            for d in [*own, manifest]:
                path = root / "data" / blob_key(d)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(b"x" * 1000)
                stored += 1
    conn.execute("COMMIT")
    conn.close()
    return {"images": images, "blob_rows": images * 5 + BASE_LAYERS, "stored_files": stored}


async def _create_schema(root: Path) -> None:
    metadata = Metadata(SQLiteDatabase(str(root / "index.db")))
    await metadata.open()
    await metadata.close()


class TimedDatabase(DelegatingDatabase):
    """A `Database` that times each write: its statements inside the transaction (`statements`), and
    from the call until it is committed (`writes`: with the wait for the writer and the group commit
    it joins)."""

    def __init__(self, db: Database):
        super().__init__(db)
        self.writes: list[float] = []
        self.statements: list[float] = []

    async def write(self, fn: Callable[[Connection], T]) -> T:
        return await self._timed(self.db.write, fn)

    async def write_locking(self, fn: Callable[[Connection], T]) -> T:
        return await self._timed(self.db.write_locking, fn)

    async def _timed(
        self, write: Callable[[Callable[[Connection], T]], Awaitable[T]], fn: Callable[[Connection], T]
    ) -> T:
        def timed(c: Connection) -> T:
            began = time.perf_counter()
            try:
                return fn(c)
            finally:
                self.statements.append(time.perf_counter() - began)

        started = time.perf_counter()
        try:
            return await write(timed)
        finally:
            self.writes.append(time.perf_counter() - started)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))] if ordered else 0.0


async def pushes(metadata: Metadata, until: asyncio.Event, latencies: list[float]) -> None:
    """What a push writes (a layer linked, then a tagged manifest referring to it), again and again."""
    n = 0
    while not until.is_set():
        started = time.perf_counter()
        layer, manifest = fake_digest("push", n, "layer"), fake_digest("push", n)
        await metadata.link_blob("pushes/app", layer, 10)
        await metadata.link_blob("pushes/app", manifest, 10)
        record = ManifestRecord(manifest, "application/vnd.oci.image.manifest.v1+json", 10)
        await metadata.put_manifest("pushes/app", record, {layer: 10}, {}, f"t{n % 50}")
        latencies.append(time.perf_counter() - started)
        n += 1
        await asyncio.sleep(0.005)


async def collect(root: Path, share: float, rest: float) -> dict[str, Any]:
    """Delete every 1/share-th tag, then collect until nothing is due, with pushes going on."""
    timed = TimedDatabase(SQLiteDatabase(str(root / "index.db")))
    metadata = Metadata(timed, GRACE_S)  # the pusher's: its reviews are due a grace later, as a server's
    await metadata.open()
    deleter = Metadata(SQLiteDatabase(str(root / "index.db")), 0.0)  # the tag deletes': due at once
    await deleter.open()
    every = round(1 / share)
    # Every 1/share-th tag (rowid n+1 is image n's, whose bytes were stored), picked in SQL: the bench
    # holds no list of the index in memory either.
    tags = await metadata.db.scan(
        lambda c: c.execute("SELECT repository, name FROM tags WHERE (rowid - 1) % ? = 0", (every,)).fetchall()
    )
    idle: list[float] = []
    stop = asyncio.Event()
    pusher = asyncio.create_task(pushes(metadata, stop, idle))
    await asyncio.sleep(10)
    stop.set()
    await pusher
    deleted = 0
    for repository, name in tags:
        deleted += await deleter.delete_tag(repository, name)
    await deleter.close()
    timed.writes.clear()
    timed.statements.clear()
    # The seeded content is two hours old; what the pusher stores stays young for the grace.
    collector = ReviewCollector(metadata, LocalDriver(str(root / "data")), GRACE_S, delete_untagged=True, rest=rest)
    busy: list[float] = []
    stop = asyncio.Event()
    pusher = asyncio.create_task(pushes(metadata, stop, busy))
    started = time.perf_counter()
    report = await collector.run_due()
    seconds = time.perf_counter() - started
    stop.set()
    await pusher
    left = len([p for p in (root / "data").rglob("*") if p.is_file()])
    totals = await metadata.reviews.totals()
    await metadata.close()
    return {
        "rest": rest,
        "tags_deleted": deleted,
        "manifests_removed": report.manifests_removed,
        "blobs_removed": report.blobs_removed,
        "reviews_decided": report.reviews,
        "seconds_until_nothing_due": round(seconds, 2),
        "reviews_left_due": totals.blobs_due + totals.manifests_due,
        "garbage_files_left": left,
        "write_transactions": len(timed.writes),
        "longest_write_ms": round(max(timed.writes) * 1000, 2),
        "write_p99_ms": round(percentile(timed.writes, 0.99) * 1000, 2),
        "longest_statements_in_a_write_ms": round(max(timed.statements) * 1000, 2),
        "push_p99_idle_ms": round(percentile(idle, 0.99) * 1000, 2),
        "push_p99_collecting_ms": round(percentile(busy, 0.99) * 1000, 2),
        "collector_peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--blobs", type=int, default=100_000, help="blob rows to seed (5 per image)")
    parser.add_argument("--share", type=float, default=0.01, help="share of the tags deleted")
    parser.add_argument("--rest", type=float, default=0.5, help="the collector's rest after each decision (x its time)")
    parser.add_argument("--collect", help=argparse.SUPPRESS)  # the fresh process's phase: a seeded root
    args = parser.parse_args()
    if args.collect:
        print(json.dumps(asyncio.run(collect(Path(args.collect), args.share, args.rest))))
        return
    with tempfile.TemporaryDirectory(prefix="gc-reviews-") as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        seeded = seed(root, args.blobs, args.share)
        seeded["seed_seconds"] = round(time.perf_counter() - started, 1)
        command = [sys.executable, "-m", "bench.gc_reviews", "--collect", tmp, "--share", str(args.share)]
        command += ["--rest", str(args.rest)]
        done = subprocess.run(command, capture_output=True, text=True, env=os.environ)
        if done.returncode != 0:
            sys.exit(done.stderr)
        out = done.stdout
        result = {**seeded, **json.loads(out.strip().splitlines()[-1])}
    print(json.dumps(result, indent=2))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
