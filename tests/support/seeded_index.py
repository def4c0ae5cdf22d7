"""An index seeded straight with rows (no HTTP round trips, no bytes in storage), in the shape of a
large registry, for the collector's tests and measurements at sizes pushes would take hours to reach.

Each repository holds `tags` tagged images and `untagged` untagged ones (garbage for
`--delete-untagged`), plus `orphans` blobs nothing refers to (garbage for every collection). An image
is a manifest (its bytes a blob), a config and two layers of its own, and one of BASE_LAYERS layers
every repository shares: 4 blobs of its own per image. Everything is two days old (older than any
grace period).

    .venv/bin/python -m tests.support.seeded_index sqlite:///data/index.db --repositories 5000
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import time
from dataclasses import dataclass
from typing import Any

from storage.metadata import Connection, Metadata, open_metadata

BASE_LAYERS = 20
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
CHUNK = 1000  # repositories per write transaction while seeding


@dataclass(frozen=True)
class Shape:
    """How many repositories, and what each holds."""

    repositories: int
    tags: int = 5
    untagged: int = 0
    orphans: int = 0

    @property
    def blobs(self) -> int:
        return BASE_LAYERS + self.repositories * (4 * (self.tags + self.untagged) + self.orphans)

    @property
    def manifests(self) -> int:
        return self.repositories * (self.tags + self.untagged)


def _digest(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def _rows(shape: Shape, first: int, last: int, at: float) -> dict[str, list[tuple[Any, ...]]]:
    rows: dict[str, list[tuple[Any, ...]]] = {
        name: [] for name in ("repositories", "blobs", "links", "manifests", "references", "tags")
    }
    for r in range(first, last):
        repository = f"team{r // 1000:04d}/app{r % 1000:03d}"
        rows["repositories"].append((repository, at))
        for n in range(shape.tags + shape.untagged):
            own = [_digest(f"{repository}/{n}/{part}") for part in ("config", "layer0", "layer1")]
            manifest = _digest(f"{repository}/{n}/manifest")
            children = [*own, _digest(f"base/{(r + n) % BASE_LAYERS}")]
            rows["blobs"] += [(d, 1000, at, at) for d in [manifest, *own]]
            rows["links"] += [(repository, d, at) for d in [manifest, *children]]
            rows["manifests"].append((repository, manifest, MANIFEST, 500, at))
            rows["references"] += [(repository, manifest, d, "blob") for d in children]
            if n < shape.tags:
                rows["tags"].append((repository, f"v{n}", manifest, at))
        for n in range(shape.orphans):
            rows["blobs"].append((_digest(f"{repository}/orphan{n}"), 1000, at, at))
    return rows


def _insert(c: Connection, rows: dict[str, list[tuple[Any, ...]]]) -> None:
    c.executemany("INSERT INTO repositories (name, created_at) VALUES (?, ?)", rows["repositories"])
    c.executemany(
        "INSERT INTO blobs (digest, size, state, created_at, last_used_at) VALUES (?, ?, 'present', ?, ?)",
        rows["blobs"],
    )
    c.executemany(
        "INSERT INTO repository_blobs (repository, digest, linked_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
        rows["links"],
    )
    c.executemany(
        "INSERT INTO manifests (repository, digest, media_type, size, created_at) VALUES (?, ?, ?, ?, ?)",
        rows["manifests"],
    )
    c.executemany(
        "INSERT INTO manifest_references (repository, manifest, child, kind) VALUES (?, ?, ?, ?)", rows["references"]
    )
    c.executemany("INSERT INTO tags (repository, name, digest, updated_at) VALUES (?, ?, ?, ?)", rows["tags"])


async def seed(metadata: Metadata, shape: Shape) -> None:
    """Fill the (empty, open) index of `metadata` in the shape `shape` describes."""
    at = time.time() - 2 * 86400
    base = [(_digest(f"base/{n}"), 1000, at, at) for n in range(BASE_LAYERS)]
    await metadata.db.write(
        lambda c: c.executemany(
            "INSERT INTO blobs (digest, size, state, created_at, last_used_at) VALUES (?, ?, 'present', ?, ?)", base
        )
    )
    for first in range(0, shape.repositories, CHUNK):
        rows = _rows(shape, first, min(first + CHUNK, shape.repositories), at)
        await metadata.db.write(lambda c, rows=rows: _insert(c, rows))


async def _main(url: str, shape: Shape) -> None:
    metadata = open_metadata(url)
    await metadata.open()
    try:
        await seed(metadata, shape)
    finally:
        await metadata.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url", help="index url (sqlite:///PATH or postgresql://...), empty")
    parser.add_argument("--repositories", type=int, required=True)
    parser.add_argument("--tags", type=int, default=5)
    parser.add_argument("--untagged", type=int, default=0)
    parser.add_argument("--orphans", type=int, default=0)
    args = parser.parse_args()
    shape = Shape(args.repositories, args.tags, args.untagged, args.orphans)
    started = time.perf_counter()
    asyncio.run(_main(args.url, shape))
    print(f"seeded {shape.manifests} manifests, {shape.blobs} blobs in {time.perf_counter() - started:.1f}s")


if __name__ == "__main__":
    main()
