"""Who made a request, as its events report it (registry/events/): built only when the registry has
webhooks, so a registry without them pays nothing."""

from __future__ import annotations

from starlette.requests import Request

from registry.facade import Caller
from registry.handlers.base import registry_of


def caller(request: Request, actor: str | None = None) -> Caller | None:
    """The caller of `request` for events (None when the registry has no webhooks): the request's id
    (registry/edge.py), the client address (through `http.trusted_proxies`), Host, method, User-Agent,
    and `actor`, else the user the gate admitted (request.state.principal). Target URLs are the
    request's scheme (a trusted proxy's `X-Forwarded-Proto`) and Host, as Distribution builds them."""
    events = registry_of(request).events
    if events is None:
        return None
    if actor is None:
        principal = getattr(request.state, "principal", None)
        actor = None if principal is None else principal.user
    host = request.headers.get("host", "")
    scheme = request.url.scheme
    forwarded = request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
    if forwarded in ("http", "https") and events.addresses.via_trusted_proxy(request):
        scheme = forwarded  # TLS ended at the proxy: the URL clients use
    base_url = f"{scheme}://{host}" if host else str(request.base_url).rstrip("/")
    return Caller(
        request_id=getattr(request.state, "request_id", ""),
        addr=events.addresses.of(request),
        host=host,
        method=request.method,
        user_agent=request.headers.get("user-agent", ""),
        actor=actor,
        base_url=base_url,
    )
