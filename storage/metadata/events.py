"""The event outbox's queries: events written with the change they report (`insert_events`, called
inside the store's write transactions), read in order per endpoint, deleted once delivered, and the
per-endpoint counts `registry events status` shows. What an event says is the caller's business
(registry/events/): here it is JSON text."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from storage.metadata.database import Connection, Database, placeholders

ERROR_MAX = 500  # characters of a delivery error kept


@dataclass(frozen=True, slots=True)
class OutboxEvent:
    """An event to write for one endpoint: `body` is the JSON of one event."""

    endpoint: str
    body: str


@dataclass(frozen=True, slots=True)
class PendingEvent:
    """An event waiting for its endpoint; `id` rises in the order events were written."""

    id: int
    body: str


@dataclass(frozen=True, slots=True)
class EndpointStatus:
    """What an endpoint has pending and has taken: `failed` counts failed delivery attempts."""

    name: str
    pending: int
    oldest_pending_at: float | None
    delivered: int
    failed: int
    last_error: str | None
    last_error_at: float | None
    last_delivered_at: float | None


def insert_events(c: Connection, events: Sequence[OutboxEvent], now: float) -> None:
    """Write `events` to the outbox inside the caller's transaction (nothing when empty)."""
    if events:
        c.executemany(
            "INSERT INTO event_outbox (endpoint, body, created_at) VALUES (?, ?, ?)",
            [(e.endpoint, e.body, now) for e in events],
        )


def _count(c: Connection, endpoint: str, column: str, amount: int, now: float) -> None:
    """Add `amount` to counter `column` of `endpoint` (its row created when missing)."""
    c.execute("INSERT INTO event_endpoints (name) VALUES (?) ON CONFLICT (name) DO NOTHING", (endpoint,))
    stamp = "last_delivered_at" if column == "delivered" else "last_error_at"
    c.execute(
        f"UPDATE event_endpoints SET {column} = {column} + ?, {stamp} = ? WHERE name = ?", (amount, now, endpoint)
    )


class EventQueries:
    """The outbox over `db`."""

    def __init__(self, db: Database):
        self.db = db

    async def enqueue(self, events: Sequence[OutboxEvent]) -> None:
        """Write `events` in a transaction of their own (for events that report no change: pulls)."""
        if events:
            now = time.time()
            await self.db.write(lambda c: insert_events(c, events, now))

    async def pending(self, endpoint: str, limit: int) -> list[PendingEvent]:
        """The first `limit` events waiting for `endpoint`, oldest first."""
        rows = await self.db.read(
            lambda c: c.execute(
                "SELECT id, body FROM event_outbox WHERE endpoint = ? ORDER BY id LIMIT ?", (endpoint, limit)
            ).fetchall()
        )
        return [PendingEvent(row[0], row[1]) for row in rows]

    async def delivered(self, endpoint: str, ids: Sequence[int]) -> None:
        """Forget the events `ids` of `endpoint`, which took them, and count them delivered."""
        now = time.time()

        def forget(c: Connection) -> None:
            c.execute(
                f"DELETE FROM event_outbox WHERE endpoint = ? AND id IN ({placeholders(len(ids))})", (endpoint, *ids)
            )
            _count(c, endpoint, "delivered", len(ids), now)

        if ids:
            await self.db.write(forget)

    async def failed(self, endpoint: str, error: str) -> None:
        """Count a failed delivery attempt to `endpoint`, and why."""
        now = time.time()

        def note(c: Connection) -> None:
            _count(c, endpoint, "failed", 1, now)
            c.execute("UPDATE event_endpoints SET last_error = ? WHERE name = ?", (error[:ERROR_MAX], endpoint))

        await self.db.write(note)

    async def status(self, endpoints: Sequence[str] = ()) -> list[EndpointStatus]:
        """Every endpoint of `endpoints`, and every other with events or counts in the index, by name."""

        def read(c: Connection) -> list[EndpointStatus]:
            pending = {
                row[0]: (row[1], row[2])
                for row in c.execute(
                    "SELECT endpoint, COUNT(*), MIN(created_at) FROM event_outbox GROUP BY endpoint"
                ).fetchall()
            }
            counts = {
                row[0]: row[1:]
                for row in c.execute(
                    "SELECT name, delivered, failed, last_error, last_error_at, last_delivered_at FROM event_endpoints"
                ).fetchall()
            }
            found = []
            for name in sorted({*endpoints, *pending, *counts}):
                waiting, oldest = pending.get(name, (0, None))
                delivered, failed, error, error_at, delivered_at = counts.get(name, (0, 0, None, None, None))
                found.append(EndpointStatus(name, waiting, oldest, delivered, failed, error, error_at, delivered_at))
            return found

        return await self.db.scan(read)
