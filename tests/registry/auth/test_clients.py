"""The client address of a request, directly or through trusted proxies' X-Forwarded-For."""

from __future__ import annotations

from starlette.requests import Request

from registry.auth.clients import ClientAddresses


def request_from(peer: str, *forwarded_for: str) -> Request:
    headers = [(b"x-forwarded-for", value.encode()) for value in forwarded_for]
    return Request({"type": "http", "client": (peer, 1234), "headers": headers})


def test_without_trusted_proxies_the_peer_is_the_client() -> None:
    assert ClientAddresses().of(request_from("203.0.113.9", "198.51.100.1")) == "203.0.113.9"


def test_forwarded_for_counts_only_from_a_trusted_proxy() -> None:
    addresses = ClientAddresses(["10.0.0.0/8", "fd00::/8"])
    assert addresses.of(request_from("203.0.113.9", "198.51.100.1")) == "203.0.113.9"
    assert addresses.of(request_from("10.1.2.3", "198.51.100.1")) == "198.51.100.1"
    assert addresses.of(request_from("fd00::1", "2001:db8::5")) == "2001:db8::5"


def test_the_right_most_untrusted_hop_counts_not_what_the_client_wrote() -> None:
    addresses = ClientAddresses(["10.0.0.0/8"])
    assert addresses.of(request_from("10.0.0.1", "1.1.1.1, 198.51.100.1, 10.0.0.7")) == "198.51.100.1"
    assert addresses.of(request_from("10.0.0.1", "1.1.1.1", "198.51.100.1")) == "198.51.100.1"
    assert addresses.of(request_from("10.0.0.1", "10.0.0.5")) == "10.0.0.1"  # only proxies: the peer
    assert addresses.of(request_from("10.0.0.1")) == "10.0.0.1"
