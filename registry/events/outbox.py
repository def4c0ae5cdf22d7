"""Which endpoints get an event: the rows to write to the outbox with a change, filtered per endpoint
by its ignored actions and media types, so an ignored event never enters that endpoint's queue."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import Sequence

from registry.auth.clients import ClientAddresses
from registry.config import EventEndpointSettings, EventsSettings
from registry.events.records import Caller, Target, event
from storage.metadata import OutboxEvent


class Outbox:
    """The events of one registry process, for the endpoints of `settings` (at least one). `source` is
    this node as events name it (`addr`: host name and port, and an `instanceID` new at each start);
    `addresses` finds a request's client address through `trusted_proxies`."""

    def __init__(self, settings: EventsSettings, port: int, trusted_proxies: Sequence[str] = ()):
        self.endpoints: list[EventEndpointSettings] = list(settings.endpoints)
        self.pulls = settings.pulls
        self.source = {"addr": f"{socket.gethostname()}:{port}", "instanceID": str(uuid.uuid4())}
        self.addresses = ClientAddresses(trusted_proxies)
        self._wakeups = {endpoint.name: asyncio.Event() for endpoint in self.endpoints}

    def rows(self, action: str, target: Target, caller: Caller | None) -> list[OutboxEvent]:
        """The outbox rows of one event, one per endpoint that does not ignore it; none without a
        caller (a change no request made, such as a pull-through cache filling itself)."""
        if caller is None:
            return []
        body: str | None = None
        rows = []
        for endpoint in self.endpoints:
            ignored = endpoint.ignore
            if action in ignored.actions or (
                target.media_type is not None and target.media_type in ignored.media_types
            ):
                continue
            body = body or event(action, target, caller, self.source)
            rows.append(OutboxEvent(endpoint.name, body))
        return rows

    def written(self, rows: Sequence[OutboxEvent]) -> None:
        """Wake this process's deliveries of the endpoints of `rows`, which were just committed."""
        for row in rows:
            self._wakeups[row.endpoint].set()

    def wakeup(self, endpoint: str) -> asyncio.Event:
        """Set when an event for `endpoint` was written by this process."""
        return self._wakeups[endpoint]
