"""registry/events/delivery.py with real receivers (aiohttp.web over loopback): retries and order
through an outage, nothing lost over a restart, one delivery per event with two apps on one index,
and a lease holder that dies."""

from __future__ import annotations

import asyncio
import time
from contextlib import AsyncExitStack

import aiohttp
import pytest

from registry.config import EventEndpointSettings, Settings
from registry.events import Delivery
from storage.metadata import OutboxEvent, open_metadata
from tests.support.app import running_app
from tests.support.backends import disk_and_sqlite, fresh_schema
from tests.support.content import push_blob
from tests.support.receiver import Receiver, hooked

pytestmark = pytest.mark.anyio


async def _push_layers(client, repository: str, count: int) -> list[str]:
    return [await push_blob(client, repository, f"layer {i} of {repository}".encode()) for i in range(count)]


async def test_a_receiver_down_then_up_gets_everything_in_order(tmp_path) -> None:
    receiver = Receiver()  # not started: its port refuses connections
    async with running_app(hooked(disk_and_sqlite(tmp_path), receiver)) as (app, client):
        digests = await _push_layers(client, "team/app", 5)
        await asyncio.sleep(0.3)
        receiver.status = 503
        await receiver.start()  # up, but refusing
        await asyncio.sleep(0.3)
        assert receiver.attempts > 0 and receiver.events == []
        digests += await _push_layers(client, "team/app", 3)
        receiver.status = 200
        events = await receiver.wait_for(8)
        (status,) = await app.state.registry.metadata.events.status()
    await receiver.stop()
    assert [e["target"]["digest"] for e in events] == digests
    assert len(events) == 8  # once each
    assert status.pending == 0 and status.delivered == 8 and status.failed >= 2
    assert status.last_error is not None


async def test_a_restart_loses_nothing(tmp_path) -> None:
    receiver = Receiver()
    settings = hooked(disk_and_sqlite(tmp_path), receiver)
    async with running_app(settings) as (app, client):
        digests = await _push_layers(client, "team/app", 4)
        await asyncio.sleep(0.2)
        assert (await app.state.registry.metadata.events.status())[0].pending == 4
    async with receiver, running_app(settings) as (_, client):  # a new app over the same index
        digests += await _push_layers(client, "team/app", 1)
        events = await receiver.wait_for(5)
    assert [e["target"]["digest"] for e in events] == digests


async def _two_apps_deliver_each_event_once(settings: Settings, receiver: Receiver) -> None:
    async with receiver, AsyncExitStack() as stack:
        clients = [(await stack.enter_async_context(running_app(settings)))[1] for _ in range(2)]
        pushes = [_push_layers(client, f"team/app{i}", 10) for i, client in enumerate(clients)]
        digests = [d for batch in await asyncio.gather(*pushes) for d in batch]
        events = await receiver.wait_for(20)
        await asyncio.sleep(1.5)  # more than the holder's poll: a second delivery would have come
    assert len(receiver.events) == 20
    assert sorted(e["target"]["digest"] for e in events) == sorted(digests)
    assert len({e["id"] for e in events}) == 20
    assert len({e["source"]["instanceID"] for e in events}) == 2  # written by both apps


async def test_two_apps_on_one_sqlite_file_deliver_each_event_once(tmp_path) -> None:
    receiver = Receiver()
    await _two_apps_deliver_each_event_once(hooked(disk_and_sqlite(tmp_path), receiver), receiver)


async def test_two_apps_on_one_postgresql_deliver_each_event_once(tmp_path, postgres) -> None:
    receiver = Receiver()
    settings = hooked(disk_and_sqlite(tmp_path), receiver)
    _, settings.index.url = fresh_schema(postgres)
    await _two_apps_deliver_each_event_once(settings, receiver)


async def test_a_lease_holder_that_dies_is_taken_over(tmp_path) -> None:
    metadata = open_metadata(f"sqlite:///{tmp_path}/index.db")
    await metadata.open()
    endpoint = EventEndpointSettings(name="hook", url="", timeout="0.2s", backoff="0.05s", backoff_max="0.1s")
    async with Receiver() as receiver, aiohttp.ClientSession() as session:
        endpoint.url = receiver.url

        def delivery() -> Delivery:
            return Delivery(
                endpoint, metadata.events, metadata.leases, asyncio.Event(), poll_s=0.05, standby_s=0.1, lease_ttl_s=1.0
            )

        dying, heir = delivery(), delivery()
        await metadata.events.enqueue([OutboxEvent("hook", '{"n":1}')])
        assert await dying.step(session) == 1  # holds the lease now, then dies without giving it up
        await metadata.events.enqueue([OutboxEvent("hook", '{"n":2}')])
        started = time.monotonic()
        task = asyncio.create_task(heir.run(session))
        await receiver.wait_for(2)
        took = time.monotonic() - started
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    await metadata.close()
    assert [e["n"] for e in receiver.events] == [1, 2]
    assert 0.5 < took < 3.0  # after the lease expired (1 s), not before


async def test_a_slow_receiver_times_out_and_the_event_is_sent_again(tmp_path) -> None:
    metadata = open_metadata(f"sqlite:///{tmp_path}/index.db")
    await metadata.open()
    endpoint = EventEndpointSettings(name="hook", url="", timeout="0.2s", backoff="0.05s", backoff_max="0.1s")
    async with Receiver() as receiver, aiohttp.ClientSession() as session:
        endpoint.url = receiver.url
        receiver.delay_s = 0.5
        delivery = Delivery(endpoint, metadata.events, metadata.leases, asyncio.Event(), poll_s=0.05)
        await metadata.events.enqueue([OutboxEvent("hook", '{"n":1}')])
        task = asyncio.create_task(delivery.run(session))
        while receiver.attempts < 2:
            await asyncio.sleep(0.02)
        receiver.delay_s = 0
        await receiver.wait_for(1)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        (status,) = await metadata.events.status()
    await metadata.close()
    assert status.failed >= 1 and "no answer within 0.2s" in (status.last_error or "")
    assert status.pending == 0
