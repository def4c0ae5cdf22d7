"""storage/metadata/figures.py, the figures /metrics shows, on SQLite and PostgreSQL: counts of repositories,
tags, manifests, present blobs (each once) and uploads, the bytes stored, and the newest collection's report."""

from __future__ import annotations

import pytest

from storage.metadata import Figures, ManifestRecord, Metadata

pytestmark = pytest.mark.anyio

IMAGE = "application/vnd.oci.image.manifest.v1+json"
D = ["sha256:" + f"{i:x}" * 64 for i in range(1, 8)]


async def test_an_empty_index(metadata: Metadata) -> None:
    assert await metadata.figures.read() == Figures(0, 0, 0, 0, 0, 0, None, None)


async def test_counts_bytes_and_the_newest_collection(metadata: Metadata) -> None:
    await metadata.link_blob("a", D[0], 10)
    await metadata.link_blob("a", D[1], 20)
    await metadata.link_blob("b", D[0], 10)  # one blob in two repositories: stored once
    await metadata.put_manifest("a", ManifestRecord(D[2], IMAGE, 100), {D[0]: 10, D[1]: 20}, {}, "1")
    await metadata.put_manifest("a", ManifestRecord(D[2], IMAGE, 100), {D[0]: 10, D[1]: 20}, {}, "latest")
    await metadata.put_manifest("b", ManifestRecord(D[3], IMAGE, 100), {D[0]: 10}, {}, None)
    await metadata.create_upload("u1", "a")
    await metadata.garbage.record_run(1000.0, '{"blobs_removed": 1}')
    await metadata.garbage.record_run(2000.0, '{"blobs_removed": 2}')
    figures = await metadata.figures.read()
    assert (figures.repositories, figures.tags, figures.manifests, figures.uploads) == (2, 2, 2, 1)
    # The blobs and the manifests' own bytes, each digest once.
    assert (figures.blobs, figures.blob_bytes) == (4, 10 + 20 + 100 + 100)
    assert (figures.gc_started_at, figures.gc_report) == (2000.0, '{"blobs_removed": 2}')
