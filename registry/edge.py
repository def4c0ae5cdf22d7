"""The edge of every request: the Host check, the request id, the API version header on each answer,
and one access-log line whose fields the client cannot forge."""

from __future__ import annotations

import ipaddress
import logging
import re
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from registry.errors import HostInvalid
from registry.handlers.base import error_response
from registry.logs import REQUEST_ID

log = logging.getLogger("registry.access")

_VERSION_HEADER = (b"docker-distribution-api-version", b"registry/2.0")

HOST_MAX_LENGTH = 262  # a 253-character DNS name and a port
# RFC 3986 host (reg-name, IPv4address, or IP-literal) and optional port. IPv4 is a reg-name too.
_HOST = re.compile(r"(?:(?:[A-Za-z0-9\-._~!$&'()*+,;=]|%[0-9A-Fa-f]{2})+|\[([0-9A-Fa-f:.]+)\])(?::[0-9]{0,5})?")
_NAMED_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
LOG_FIELD_MAX = 2048
# An X-Request-Id a proxy in front may set: kept when it is this plain, else replaced by our own.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def valid_host(value: str | None) -> str | None:
    """`value` if it is an RFC 3986 host with an optional port, at most HOST_MAX_LENGTH long;
    else None. Such a host holds no quote, space, slash or control character, so it is safe to
    put in a URL or a quoted header parameter."""
    if not value or len(value) > HOST_MAX_LENGTH:
        return None
    match = _HOST.fullmatch(value)
    if match is None:
        return None
    if match.group(1) is not None:
        try:
            ipaddress.IPv6Address(match.group(1))
        except ValueError:
            return None
    return value


def _escape(char: str) -> str:
    if char in _NAMED_ESCAPES:
        return _NAMED_ESCAPES[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def printable(text: str, limit: int = LOG_FIELD_MAX) -> str:
    """`text` made safe as one field of a log line: backslash, space, control characters and every
    other character that is not printable (line and paragraph separators, format characters, lone
    surrogates) written as escapes (`\\\\`, `\\n`, `\\x20`, `\\u2028`...), and cut after `limit`
    characters with a note of how many more there were. Every log line that carries client input
    passes it through here."""
    rest = len(text) - limit
    if rest > 0:
        text = text[:limit]
    if not (text.isprintable() and " " not in text and "\\" not in text):
        text = "".join(c if c.isprintable() and c not in " \\" else _escape(c) for c in text)
    return f"{text}...({rest} more)" if rest > 0 else text


def _host_problem(scope: Scope) -> HostInvalid | None:
    """Why the request's Host header is unacceptable (more than one, or not an RFC 3986 host), or None.
    A request without one (HTTP/1.0) is let through: URLs are then built from the server's address."""
    hosts = [value for name, value in scope["headers"] if name == b"host"]
    if not hosts:
        return None
    if len(hosts) > 1:
        return HostInvalid({"reason": "more than one Host header"})
    if valid_host(hosts[0].decode("latin-1")) is None:
        return HostInvalid({"host": printable(hosts[0].decode("latin-1"), 300)})
    return None


def request_id(scope: Scope) -> str:
    """The request's id: the `X-Request-Id` a proxy in front sent when it is 1-128 characters of
    letters, digits and `._:-`, else a new UUID."""
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            text: str = value.decode("latin-1")
            if _REQUEST_ID.fullmatch(text):
                return text
            break
    return str(uuid.uuid4())


class Edge:
    """ASGI middleware: refuses a malformed `Host` with 400 HOST_INVALID before routing (the host goes
    into redirects and token challenges), gives the request its id (`request_id`; kept in the scope's
    state, so handlers read `request.state.request_id`; in `registry.logs.REQUEST_ID` while the request
    is served, so every line logged for it carries it; and returned as `X-Request-Id`), stamps
    `Docker-Distribution-API-Version`, and logs
    `CLIENT METHOD PATH STATUS BYTES DURATIONms` per request with each field escaped by `printable`
    (no query string: it may hold secrets), with the same fields unescaped, the user agent included, as
    the record's extra fields (JSON lines escape them)."""

    def __init__(self, app: ASGIApp, access_log: bool = True):
        self.app, self.access_log = app, access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status, sent = 0, 0
        rid = request_id(scope)
        scope.setdefault("state", {})["request_id"] = rid
        rid_token = REQUEST_ID.set(rid)
        id_header = (b"x-request-id", rid.encode("latin-1"))

        async def edge_send(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), _VERSION_HEADER, id_header]
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        problem = _host_problem(scope)
        app = self.app if problem is None else error_response(problem)
        try:
            await app(scope, receive, edge_send)
        finally:
            if self.access_log:
                _log_access(scope, status or 500, sent, (time.perf_counter() - started) * 1000, rid)
        # Reset only when the request ended well: an exception goes on to Starlette's outermost error
        # handler and to the server, which log it in this request's task, after the edge; the task (one
        # per request under granian and uvicorn) ends with them.
        REQUEST_ID.reset(rid_token)


def _log_access(scope: Scope, status: int, sent: int, duration_ms: float, rid: str) -> None:
    client = str((scope.get("client") or ("-", 0))[0])
    method, path = scope["method"], scope["path"]
    agent = next((value for name, value in scope["headers"] if name == b"user-agent"), b"").decode("latin-1")
    fields = {
        "client": client,
        "method": method[:LOG_FIELD_MAX],
        "path": path[:LOG_FIELD_MAX],
        "status": status,
        "bytes": sent,
        "duration_ms": round(duration_ms, 1),
        "request_id": rid,
        "user_agent": agent[:LOG_FIELD_MAX],
    }
    log.info(
        "%s %s %s %d %d %.1fms",
        printable(client),
        printable(method),
        printable(path),
        status,
        sent,
        duration_ms,
        extra=fields,
    )
