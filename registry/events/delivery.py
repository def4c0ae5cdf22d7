"""Webhook delivery: each endpoint's events POSTed in order, in envelopes of up to BATCH events, by
whichever process of every worker and replica holds the endpoint's lease in the index.

At least once: an envelope is forgotten only after the endpoint answered 2xx, so a process that dies
between the POST and recording it leaves the envelope to be sent again by the next holder. A failed
POST (an error status, a timeout, no connection) is retried after a backoff that doubles from
`backoff` up to `backoff_max`; events behind it wait, so the endpoint still gets them in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid

import aiohttp

from registry.config import EventEndpointSettings, parse_duration
from registry.events.outbox import Outbox
from registry.events.records import ENVELOPE_MEDIA_TYPE
from storage.metadata import EventQueries, Leases, PendingEvent

log = logging.getLogger("registry.events")

BATCH = 100  # events in one envelope at most
POLL_S = 1.0  # the holder looks for events written by other processes this often
STANDBY_S = 2.0  # a process without the lease looks whether it is free this often
LEASE_TTL_S = 30.0  # a lease not renewed for this long is anyone's (at least 3 POST timeouts)


class DeliveryFailed(Exception):
    """The endpoint did not take an envelope; the message says why."""


def envelope(events: list[PendingEvent]) -> bytes:
    """The JSON envelope of `events` (each already JSON): `{"events": [...]}`."""
    return ('{"events":[' + ",".join(e.body for e in events) + "]}").encode()


class Delivery:
    """The delivery of one endpoint's events from this process, while it holds the endpoint's lease."""

    def __init__(
        self,
        endpoint: EventEndpointSettings,
        queries: EventQueries,
        leases: Leases,
        wakeup: asyncio.Event,
        *,
        poll_s: float = POLL_S,
        standby_s: float = STANDBY_S,
        lease_ttl_s: float = LEASE_TTL_S,
    ):
        self.name, self.url = endpoint.name, endpoint.url
        self.headers = [(key, value) for key, values in endpoint.headers.items() for value in values]
        self.timeout_s = parse_duration(endpoint.timeout)
        self.backoff_s, self.backoff_max_s = parse_duration(endpoint.backoff), parse_duration(endpoint.backoff_max)
        self.queries, self.leases, self.wakeup = queries, leases, wakeup
        self.poll_s, self.standby_s = poll_s, standby_s
        self.lease_ttl_s = max(lease_ttl_s, 3 * self.timeout_s)
        self.lease = f"events:{endpoint.name}"
        self.holder = uuid.uuid4().hex
        self._renewed: float | None = None  # when this process last took or renewed the lease

    async def _hold(self) -> bool:
        """Whether this process holds the lease, renewing it when a third of its time is gone; a
        process without it takes it only once nobody holds it (a read, most of the time)."""
        now = time.monotonic()
        if self._renewed is not None and now - self._renewed < self.lease_ttl_s / 3:
            return True
        if self._renewed is None and await self.leases.held(self.lease):
            return False
        self._renewed = now if await self.leases.take(self.lease, self.holder, self.lease_ttl_s) else None
        return self._renewed is not None

    async def _pause(self, seconds: float) -> None:
        """Sleep `seconds`, renewing the lease meanwhile so that no other process takes over."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            await asyncio.sleep(min(left, self.lease_ttl_s / 4))
            if not await self._hold():
                return

    async def _post(self, session: aiohttp.ClientSession, events: list[PendingEvent]) -> None:
        headers = [*self.headers, ("Content-Type", ENVELOPE_MEDIA_TYPE)]
        try:
            async with session.post(
                self.url, data=envelope(events), headers=headers, timeout=aiohttp.ClientTimeout(total=self.timeout_s)
            ) as response:
                if not 200 <= response.status < 300:
                    text = (await response.content.read(200)).decode("utf-8", "replace")
                    raise DeliveryFailed(f"HTTP {response.status}: {text}".strip())
        except TimeoutError:
            raise DeliveryFailed(f"no answer within {self.timeout_s:g}s") from None
        except aiohttp.ClientError as e:
            raise DeliveryFailed(f"{type(e).__name__}: {e}") from None

    async def step(self, session: aiohttp.ClientSession) -> int:
        """Send the next envelope if this process holds the lease; returns how many events the endpoint
        took (0 when none waited or the lease is another's). Raises DeliveryFailed, counted."""
        if not await self._hold():
            return 0
        events = await self.queries.pending(self.name, BATCH)
        if not events:
            return 0
        try:
            await self._post(session, events)
        except DeliveryFailed as e:
            await self.queries.failed(self.name, str(e))
            raise
        await self.queries.delivered(self.name, [e.id for e in events])
        return len(events)

    async def run(self, session: aiohttp.ClientSession) -> None:
        """Deliver until cancelled; gives the lease up then, so another process takes over at once."""
        backoff = self.backoff_s
        try:
            while True:
                try:
                    sent = await self.step(session)
                except DeliveryFailed as e:
                    log.warning("events: %s (%s) failed: %s; next try in %.1fs", self.name, self.url, e, backoff)
                    await self._pause(backoff)
                    backoff = min(backoff * 2, self.backoff_max_s)
                    continue
                except Exception:  # the index is unavailable, say: try again later
                    log.exception("events: delivery to %s", self.name)
                    await asyncio.sleep(self.standby_s)
                    continue
                backoff = self.backoff_s
                if sent:
                    continue
                if self._renewed is None:
                    await asyncio.sleep(self.standby_s * random.uniform(0.75, 1.25))
                else:
                    # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancellation that
                    # comes as the event is set, and the task then never stops.
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self.poll_s):
                            await self.wakeup.wait()
                    self.wakeup.clear()
        finally:
            if self._renewed is not None:
                with contextlib.suppress(Exception):
                    await self.leases.release(self.lease, self.holder)


class Webhooks:
    """The deliveries of every endpoint of `outbox`, run in this process from `start` to `stop`."""

    def __init__(self, outbox: Outbox, queries: EventQueries, leases: Leases):
        self.deliveries = [Delivery(e, queries, leases, outbox.wakeup(e.name)) for e in outbox.endpoints]
        self._session: aiohttp.ClientSession | None = None
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._session = aiohttp.ClientSession()
        self._tasks = [asyncio.create_task(d.run(self._session)) for d in self.deliveries]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._session is not None:
            await self._session.close()
