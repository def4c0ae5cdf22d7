"""storage/metadata/database.py's opt-in record of write transactions (METADATA_WRITE_TIMINGS, for benchmarks),
on SQLite and PostgreSQL: a line per transaction with how long it held the database and what ran in it; nothing
when unset."""

from __future__ import annotations

from pathlib import Path

import pytest

from storage.metadata import Metadata, open_metadata
from storage.metadata.database import WRITE_TIMINGS_ENV
from tests.support.backends import fresh_schema

pytestmark = pytest.mark.anyio


def index_url(request: pytest.FixtureRequest, backend: str, tmp_path: Path) -> str:
    if backend == "sqlite":
        return f"sqlite:///{tmp_path}/index.db"
    return fresh_schema(request.getfixturevalue("postgres"))[1]


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_each_write_transaction_is_recorded(
    request: pytest.FixtureRequest, backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = tmp_path / "writes"
    monkeypatch.setenv(WRITE_TIMINGS_ENV, str(record))
    metadata: Metadata = open_metadata(index_url(request, backend, tmp_path))
    await metadata.open()
    try:
        before = len(record.read_text().splitlines()) if record.exists() else 0  # SQLite's migration is a write
        await metadata.link_blob("a", "sha256:" + "1" * 64, 10)
        assert await metadata.delete_tag("a", "missing") is False
    finally:
        await metadata.close()
    lines = record.read_text().splitlines()[before:]
    assert len(lines) == 2
    seconds = [float(line.split(" ", 1)[0]) for line in lines]
    assert all(0 <= s < 5 for s in seconds)
    assert "delete_tag" in lines[1].split(" ", 1)[1]


async def test_nothing_is_recorded_by_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(WRITE_TIMINGS_ENV, raising=False)
    metadata = open_metadata(f"sqlite:///{tmp_path}/index.db")
    await metadata.open()
    try:
        await metadata.link_blob("a", "sha256:" + "1" * 64, 10)
    finally:
        await metadata.close()
    assert all(p.name.startswith("index.db") for p in tmp_path.iterdir())  # the database's files only
