"""storage/metadata/events.py and the store's writes that carry events, on SQLite and PostgreSQL: an
event is written in the transaction of its change, and only when the change is made."""

from __future__ import annotations

import pytest

from storage.metadata import ManifestRecord, Metadata, MissingReferences, OutboxEvent

pytestmark = pytest.mark.anyio

A = "sha256:" + "a" * 64
B = "sha256:" + "b" * 64
M = "sha256:" + "c" * 64


def _events(*names: str) -> list[OutboxEvent]:
    return [OutboxEvent(name, f'{{"n":"{name}"}}') for name in names]


async def _bodies(metadata: Metadata, endpoint: str) -> list[str]:
    return [e.body for e in await metadata.events.pending(endpoint, 100)]


async def test_a_change_writes_its_events_and_a_refused_one_none(metadata: Metadata) -> None:
    await metadata.link_blob("team/app", A, 10, _events("hook"))
    manifest = ManifestRecord(M, "application/vnd.oci.image.manifest.v1+json", 100)
    with pytest.raises(MissingReferences):  # B is not in the repository: nothing is stored, no event
        await metadata.put_manifest("team/app", manifest, {A: 10, B: 5}, {}, "1", events=_events("hook"))
    assert len(await _bodies(metadata, "hook")) == 1
    await metadata.put_manifest("team/app", manifest, {A: 10}, {}, "1", events=_events("hook", "other"))
    assert len(await _bodies(metadata, "hook")) == 2 and len(await _bodies(metadata, "other")) == 1


async def test_deletes_of_nothing_write_no_event(metadata: Metadata) -> None:
    assert not await metadata.delete_tag("team/app", "1", _events("hook"))
    assert not await metadata.delete_manifest("team/app", M, _events("hook"))
    assert not await metadata.unlink_blob("team/app", A, _events("hook"))
    assert await metadata.delete_repository("team/app", _events("hook")) is None
    assert not await metadata.finish_upload("nope", "team/app", A, 10, events=_events("hook"))
    assert await _bodies(metadata, "hook") == []
    await metadata.link_blob("team/app", A, 10)
    assert await metadata.unlink_blob("team/app", A, _events("hook"))
    assert await metadata.delete_repository("team/app", _events("hook")) is not None
    assert len(await _bodies(metadata, "hook")) == 2


async def test_pending_in_order_delivered_forgotten_and_counted(metadata: Metadata) -> None:
    for i in range(5):
        await metadata.events.enqueue([OutboxEvent("hook", f'{{"i":{i}}}')])
    pending = await metadata.events.pending("hook", 3)
    assert [e.body for e in pending] == ['{"i":0}', '{"i":1}', '{"i":2}']
    await metadata.events.failed("hook", "HTTP 503: down")
    await metadata.events.delivered("hook", [e.id for e in pending])
    assert [e.body for e in await metadata.events.pending("hook", 10)] == ['{"i":3}', '{"i":4}']
    (status,) = await metadata.events.status(["hook"])
    assert (status.name, status.pending, status.delivered, status.failed) == ("hook", 2, 3, 1)
    assert status.last_error == "HTTP 503: down" and status.last_error_at is not None
    assert status.oldest_pending_at is not None and status.last_delivered_at is not None


async def test_status_lists_configured_endpoints_without_events_too(metadata: Metadata) -> None:
    await metadata.events.enqueue(_events("gone"))
    statuses = await metadata.events.status(["quiet"])
    assert [(s.name, s.pending, s.delivered) for s in statuses] == [("gone", 1, 0), ("quiet", 0, 0)]
