"""The one parser of numbers that clients send (headers and query parameters): ASCII digits, bounded."""

from __future__ import annotations

INT64_MAX = 2**63 - 1  # the largest size or offset the metadata store can hold


class NumberInvalid(ValueError):
    """The text is not a plain decimal number, or its value is over the allowed maximum."""


def parse_number(text: str, maximum: int = INT64_MAX, *, saturate: bool = False) -> int:
    """The value of `text`: one or more ASCII digits (no sign, space, underscore, or digits of other
    scripts such as `²`), leading zeros allowed.

    A value over `maximum` raises NumberInvalid, or reads as `maximum` when `saturate` is set (for a
    field where any larger number means the same as the largest). Never converts more digits than
    `maximum` has, so no input reaches Python's int() length limit.
    """
    if not text or not text.isascii() or not text.isdigit():
        raise NumberInvalid(text[:50])
    digits = text.lstrip("0") or "0"
    if len(digits) > len(str(maximum)) or int(digits) > maximum:
        if saturate:
            return maximum
        raise NumberInvalid(text[:50])
    return int(digits)
