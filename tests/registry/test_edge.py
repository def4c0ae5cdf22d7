"""The edge's helpers: log fields that cannot forge a line, and the Host header grammar."""

from __future__ import annotations

import uuid

import pytest

from registry.edge import printable, request_id, valid_host


@pytest.mark.parametrize(
    ("text", "logged"),
    [
        ("/v2/team/app/tags/list", "/v2/team/app/tags/list"),
        ("/a\n1.2.3.4 GET /forged 200", "/a\\n1.2.3.4\\x20GET\\x20/forged\\x20200"),
        ("/a\r\t\x00\x1b[31m", "/a\\r\\t\\x00\\x1b[31m"),
        ("back\\slash", "back\\\\slash"),
        ("\u2028\u200b\x85\ud800", "\\u2028\\u200b\\x85\\ud800"),
        ("caf\u00e9/\u65e5\u672c", "caf\u00e9/\u65e5\u672c"),
    ],
)
def test_printable_escapes_every_character_that_could_end_or_fake_a_field(text: str, logged: str) -> None:
    assert printable(text) == logged


def test_printable_output_is_one_line_of_printable_characters_whatever_the_input() -> None:
    every_code_point = "".join(map(chr, range(0x110000)))
    logged = printable(every_code_point, limit=0x110000)
    assert logged.isprintable() and " " not in logged


def test_printable_cuts_long_text_and_says_how_much_was_left_out() -> None:
    assert printable("a" * 5000, limit=100) == "a" * 100 + "...(4900 more)"


@pytest.mark.parametrize(
    "host",
    [
        "registry.test",
        "registry.test:5000",
        "127.0.0.1:80",
        "[::1]",
        "[2001:db8::1]:5000",
        "my_host-1.example~x",
        "xn--bcher-kva.example",
        "a%41b",
        "localhost:",
    ],
)
def test_hosts_of_rfc_3986_are_valid(host: str) -> None:
    assert valid_host(host) == host


@pytest.mark.parametrize(
    "host",
    [
        "",
        'x" ,realm="http://evil/',
        "a b",
        "a\nb",
        "a\x00",
        "a/b",
        "a@b",
        "a?b",
        "a#b",
        "[::1",
        "[not-ipv6]",
        "[::1]x",
        "h:123456",
        "h:-1",
        "h:80:80",
        "a%4",
        "caf\u00e9",
        "a" * 300,
    ],
)
def test_anything_else_is_not_a_host(host: str) -> None:
    assert valid_host(host) is None


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        ("abc-123", True),
        ("4bf92f3577b34da6a3ce929d0e0e4736", True),
        ("host:1._-x", True),
        ("a b", False),
        ("x" * 129, False),
        ("a\nb", False),
        ('"quoted"', False),
        ("", False),
    ],
)
def test_a_plain_x_request_id_from_a_proxy_is_kept_anything_else_replaced(sent: str, kept: bool) -> None:
    scope = {"headers": [(b"x-request-id", sent.encode("latin-1"))]}
    found = request_id(scope)
    assert (found == sent) is kept
    if not kept:
        assert uuid.UUID(found)


def test_without_x_request_id_each_request_gets_a_new_uuid() -> None:
    first, second = request_id({"headers": []}), request_id({"headers": []})
    assert first != second and uuid.UUID(first) and uuid.UUID(second)
