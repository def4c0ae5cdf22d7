"""The strict number parser every header and query number goes through."""

from __future__ import annotations

import pytest

from registry.numbers import INT64_MAX, NumberInvalid, parse_number


@pytest.mark.parametrize("text, value", [("0", 0), ("7", 7), ("0007", 7), ("9223372036854775807", INT64_MAX)])
def test_plain_ascii_digits_parse_to_their_value(text: str, value: int) -> None:
    assert parse_number(text) == value


@pytest.mark.parametrize(
    "text",
    [
        "",
        " 1",
        "1 ",
        "+1",
        "-1",
        "1_000",
        "1.0",
        "0x10",
        "\u00b2",
        "\u0661\u0662",
        "\uff11\uff12",
        "1\n",
        "9" * 5000,
        "9223372036854775808",
    ],
)
def test_anything_but_bounded_ascii_digits_is_refused(text: str) -> None:
    with pytest.raises(NumberInvalid):
        parse_number(text)


def test_the_maximum_is_inclusive_and_one_more_is_refused() -> None:
    assert parse_number("1000", 1000) == 1000
    with pytest.raises(NumberInvalid):
        parse_number("1001", 1000)


def test_saturate_reads_any_larger_value_as_the_maximum_without_converting_it() -> None:
    assert parse_number("9" * 100_000, 10, saturate=True) == 10
    assert parse_number("0" * 5000 + "5", 10, saturate=True) == 5
    with pytest.raises(NumberInvalid):
        parse_number("9²", 10, saturate=True)
