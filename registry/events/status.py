"""What `registry events status` shows: per endpoint, what waits, what was delivered, what failed."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence

from storage.metadata import EndpointStatus


def _ago(at: float | None, now: float) -> str:
    return "-" if at is None else f"{now - at:.0f}s ago"


def as_json(statuses: Sequence[EndpointStatus], configured: Sequence[str], now: float | None = None) -> str:
    """The statuses as a JSON list (times as Unix seconds, `oldest_pending_age_s` in seconds)."""
    now = time.time() if now is None else now
    return json.dumps(
        [
            {
                "name": s.name,
                "configured": s.name in configured,
                "pending": s.pending,
                "oldest_pending_age_s": None if s.oldest_pending_at is None else round(now - s.oldest_pending_at, 3),
                "delivered": s.delivered,
                "failed": s.failed,
                "last_error": s.last_error,
                "last_error_at": s.last_error_at,
                "last_delivered_at": s.last_delivered_at,
            }
            for s in statuses
        ],
        indent=2,
    )


def as_text(statuses: Sequence[EndpointStatus], configured: Sequence[str], now: float | None = None) -> str:
    """One paragraph per endpoint, for people."""
    now = time.time() if now is None else now
    if not statuses:
        return "no event endpoints are configured (events.endpoints)"
    lines = []
    for s in statuses:
        note = "" if s.name in configured else " (no longer configured: its events are never delivered)"
        lines.append(f"{s.name}{note}")
        oldest = "" if s.oldest_pending_at is None else f", the oldest {_ago(s.oldest_pending_at, now)}"
        lines.append(f"  pending: {s.pending}{oldest}")
        lines.append(f"  delivered: {s.delivered}, the last {_ago(s.last_delivered_at, now)}")
        lines.append(f"  failed attempts: {s.failed}")
        if s.last_error is not None:
            lines.append(f"  last error ({_ago(s.last_error_at, now)}): {s.last_error}")
    return "\n".join(lines)
