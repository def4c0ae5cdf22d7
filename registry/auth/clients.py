"""The address a request comes from, through trusted proxies' `X-Forwarded-For` when configured."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from starlette.requests import Request

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _address(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(value.strip().removeprefix("[").split("]")[0])
    except ValueError:
        return None


class ClientAddresses:
    """Finds a request's client: the peer, or, when the peer is a trusted proxy, the right-most
    `X-Forwarded-For` entry that is not a trusted proxy (entries left of it could be forged)."""

    def __init__(self, trusted_proxies: Sequence[str] = ()):
        self.trusted: list[IPNetwork] = [ipaddress.ip_network(p, strict=False) for p in trusted_proxies]

    def _is_trusted(self, address: str) -> bool:
        ip = _address(address)
        return ip is not None and any(ip in network for network in self.trusted)

    def via_trusted_proxy(self, request: Request) -> bool:
        """Whether `request` came through a trusted proxy (so its `X-Forwarded-*` headers count)."""
        return bool(self.trusted) and request.client is not None and self._is_trusted(request.client.host)

    def of(self, request: Request) -> str:
        """The client address of `request` ("-" when unknown)."""
        peer = request.client.host if request.client else "-"
        if not self.trusted or not self._is_trusted(peer):
            return peer
        hops = [h.strip() for v in request.headers.getlist("x-forwarded-for") for h in v.split(",")]
        for hop in reversed(hops):
            if not self._is_trusted(hop):
                ip = _address(hop)
                return str(ip) if ip is not None else hop[:64]
        return peer
