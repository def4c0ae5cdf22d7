"""One event as CNCF Distribution's notifications write it (notifications/event.go), so receivers
written for Distribution (and Harbor-style hooks) read ours unchanged: the same keys, nesting, value
types and timestamp format, and the same targets per action."""

from __future__ import annotations

import getpass
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

ENVELOPE_MEDIA_TYPE = "application/vnd.docker.distribution.events.v1+json"
BLOB_MEDIA_TYPE = "application/octet-stream"  # what Distribution names every blob in its events


@dataclass(frozen=True, slots=True)
class Caller:
    """Who made a change, and by which request: what an event's `request` and `actor` say.
    `base_url` (scheme://host) is where the target URLs point."""

    request_id: str
    addr: str
    host: str
    method: str
    user_agent: str
    actor: str | None
    base_url: str


@dataclass(frozen=True, slots=True)
class Target:
    """What an event is about. A manifest or blob target (`kind`) gets a URL; a delete of a tag or a
    repository names only those."""

    repository: str
    kind: str | None = None  # "manifests" or "blobs": the URL's path segment; None: no URL
    digest: str | None = None
    media_type: str | None = None
    size: int | None = None
    tag: str | None = None
    from_repository: str | None = None


def timestamp(at: datetime) -> str:
    """`at` as Go writes a time.Time in JSON (RFC 3339, fraction without trailing zeros), in UTC."""
    at = at.astimezone(UTC)
    fraction = f"{at.microsecond:06d}".rstrip("0")
    return at.strftime("%Y-%m-%dT%H:%M:%S") + (f".{fraction}" if fraction else "") + "Z"


def _target(target: Target, base_url: str) -> dict[str, Any]:
    # The order of Distribution's JSON: the embedded descriptor first, then its own fields; empty ones left out.
    fields: dict[str, Any] = {
        "mediaType": target.media_type,
        "size": target.size or None,
        "digest": target.digest,
        "length": target.size or None,
        "repository": target.repository,
        "fromRepository": target.from_repository,
        "url": None,
        "tag": target.tag,
    }
    if target.kind is not None and target.digest is not None:
        fields["url"] = f"{base_url}/v2/{target.repository}/{target.kind}/{target.digest}"
    return {key: value for key, value in fields.items() if value is not None and value != ""}


def event(action: str, target: Target, caller: Caller, source: dict[str, str], at: datetime | None = None) -> str:
    """The JSON of one event of `action` (push, pull, mount, delete) on `target` by `caller`, generated
    by the registry node `source` (addr, instanceID)."""
    request: dict[str, str] = {"id": caller.request_id}
    if caller.addr:
        request["addr"] = caller.addr
    if caller.host:
        request["host"] = caller.host
    request |= {"method": caller.method, "useragent": caller.user_agent}
    record = {
        "id": str(uuid.uuid4()),
        "timestamp": timestamp(at or datetime.now(UTC)),
        "action": action,
        "target": _target(target, caller.base_url),
        "request": request,
        "actor": {"name": caller.actor} if caller.actor else {},
        "source": source,
    }
    return json.dumps(record, separators=(",", ":"))


def command_caller(command: str) -> Caller:
    """The caller of a change made on the command line (`registry repo rm`): a new request id, the
    command as user agent and the local user as actor."""
    try:
        user: str | None = getpass.getuser()
    except (KeyError, OSError):
        user = None
    return Caller(str(uuid.uuid4()), "", "", "DELETE", command, user, "")
