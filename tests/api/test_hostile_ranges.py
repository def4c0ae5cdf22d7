"""Hostile `Range` and `Content-Range` headers, pagination and listing parameters: the right answer (a
full or partial body, a listing, or a clean 4xx), never a 5xx, and nothing stored changes."""

from __future__ import annotations

import pytest

from tests.api.hostile import (
    Case,
    Expect,
    Seeded,
    anyio_backend,  # noqa: F401  (a module-scoped fixture: one loop for the module)
    case,
    check,
    params,
    seeded_fixture,
)

pytestmark = pytest.mark.anyio

NINES = "9" * 5000
LAYER_SIZE = 64  # make_image's layers

# Range headers a server must ignore (send the whole blob, 200): malformed, multi-range, other units.
IGNORED_RANGES = {
    "multi-range": "bytes=0-1,2-3",
    "many-ranges": "bytes=" + ",".join(f"{i}-{i}" for i in range(2000)),
    "negative-start": "bytes=-5-10",
    "reversed": "bytes=10-5",
    "superscript-digits": "bytes=\u00b2-\u00b3",
    "superscript-start": "bytes=\u00b2-",
    "no-dash": "bytes=5",
    "unit-only": "bytes=",
    "no-unit": "0-5",
    "other-unit": "items=0-5",
    "letters": "bytes=a-b",
    "hex": "bytes=0x10-",
    "plus-sign": "bytes=+5-",
    "spaces-inside": "bytes=5 - 6",
    "double-dash": "bytes=--5",
    "float": "bytes=1.5-3",
    "empty": "",
    "latin1-junk": "bytes=\u00ff\u00fe-",
}

# Ranges that cannot be satisfied: 416 RANGE_INVALID.
UNSATISFIABLE_RANGES = {
    "start-5000-nines": f"bytes={NINES}-",
    "start-5000-nines-end-5000-nines": f"bytes={NINES}-{NINES}",
    "suffix-zero": "bytes=-0",
    "start-at-size": f"bytes={LAYER_SIZE}-",
    "start-past-size": f"bytes={LAYER_SIZE + 1}-{LAYER_SIZE + 10}",
    "start-int64-max": "bytes=9223372036854775807-",
    "start-past-int64": "bytes=9223372036854775808-",
    "start-2-pow-70": f"bytes={2**70}-",
}

# Satisfiable ranges with odd numbers: 206 with what they ask for, clamped to the blob.
PARTIAL_RANGES = {
    "end-5000-nines": f"bytes=0-{NINES}",
    "suffix-5000-nines": f"bytes=-{NINES}",
    "end-int64-max": "bytes=10-9223372036854775807",
    "suffix-past-size": "bytes=-1000",
    "leading-zeros": "bytes=" + "0" * 5000 + "1-" + "0" * 3000 + "2",
    "single-byte": "bytes=0-0",
    "last-byte": f"bytes={LAYER_SIZE - 1}-",
}


def _range_cases() -> list[Case]:
    cases = []
    target = "/v2/<repo>/blobs/<layer>"
    for label, value in IGNORED_RANGES.items():
        for method in ("GET", "HEAD"):
            cases.append(case(f"range-ignored-{label}-{method}", method, target, 200, headers=[("Range", value)]))
    for label, value in UNSATISFIABLE_RANGES.items():
        cases.append(
            case(f"range-unsatisfiable-{label}-GET", "GET", target, 416, "RANGE_INVALID", headers=[("Range", value)])
        )
        cases.append(case(f"range-unsatisfiable-{label}-HEAD", "HEAD", target, 416, headers=[("Range", value)]))
    for label, value in PARTIAL_RANGES.items():
        for method in ("GET", "HEAD"):
            cases.append(case(f"range-partial-{label}-{method}", method, target, 206, headers=[("Range", value)]))
    unknown = "/v2/<repo>/blobs/sha256:" + "0" * 64
    cases += [
        case("range-on-unknown-blob-GET", "GET", unknown, 404, "BLOB_UNKNOWN", headers=[("Range", "bytes=0-1")]),
        case(
            "range-5000-nines-on-unknown-blob",
            "GET",
            unknown,
            404,
            "BLOB_UNKNOWN",
            headers=[("Range", f"bytes={NINES}-")],
        ),
        case("range-on-manifest-GET", "GET", "/v2/<repo>/manifests/v1", 200, headers=[("Range", f"bytes={NINES}-")]),
        case(
            "two-range-headers",
            "GET",
            target,
            200,
            also=[Expect(206), Expect(416, "RANGE_INVALID")],
            headers=[("Range", "bytes=0-1"), ("Range", f"bytes={NINES}-")],
        ),
    ]
    return cases


# Content-Range values on PATCH (and PUT with a body) that cannot be parsed: 416 RANGE_INVALID.
UNPARSABLE_CONTENT_RANGES = {
    "star": "bytes */10",
    "words": "abc",
    "open-end": "bytes=0-",
    "open-end-bare": "0-",
    "negative": "-1-5",
    "reversed": "5-0",
    "start-5000-nines": f"{NINES}-{NINES}",
    "end-5000-nines": f"0-{NINES}",
    "superscript": "\u00b2-\u00b3",
    "empty": "",
    "spaces": "0 - 3",
    "hex": "0x0-0x3",
    "latin1-junk": "\u00ff-\u00fe",
}


def _content_range_cases() -> list[Case]:
    cases = []
    for label, value in UNPARSABLE_CONTENT_RANGES.items():
        cases.append(
            case(
                f"content-range-{label}-PATCH",
                "PATCH",
                "/v2/<repo>/blobs/uploads/<upload>",
                416,
                "RANGE_INVALID",
                headers=[("Content-Range", value)],
                body=b"abcd",
            )
        )
        cases.append(
            case(
                f"content-range-{label}-PUT",
                "PUT",
                "/v2/<repo>/blobs/uploads/<upload>?digest=<layer>",
                416,
                "RANGE_INVALID",
                headers=[("Content-Range", value)],
                body=b"abcd",
            )
        )
    # Well formed, but not where the upload ends (it is empty): 416.
    for label, value in {
        "not-at-start": "5-8",
        "far": "9223372036854775800-9223372036854775803",
        "past-int64": "9223372036854775808-9223372036854775811",
    }.items():
        cases.append(
            case(
                f"content-range-{label}-PATCH",
                "PATCH",
                "/v2/<repo>/blobs/uploads/<upload>",
                416,
                "RANGE_INVALID",
                headers=[("Content-Range", value)],
                body=b"abcd",
            )
        )
    cases += [
        case(
            "content-range-longer-than-body",
            "PATCH",
            "/v2/<repo>/blobs/uploads/<upload>",
            400,
            "SIZE_INVALID",
            headers=[("Content-Range", "0-99")],
            body=b"abcd",
            also=[Expect(416, "RANGE_INVALID")],
        ),
        case(
            "content-range-shorter-than-body",
            "PATCH",
            "/v2/<repo>/blobs/uploads/<upload>",
            400,
            "SIZE_INVALID",
            headers=[("Content-Range", "0-1")],
            body=b"abcd",
            also=[Expect(416, "RANGE_INVALID")],
        ),
        case(
            "content-range-on-unknown-upload",
            "PATCH",
            "/v2/<repo>/blobs/uploads/" + "0" * 8 + "-0000-4000-8000-" + "0" * 12,
            404,
            "BLOB_UPLOAD_UNKNOWN",
            headers=[("Content-Range", "0-3")],
            body=b"abcd",
            also=[Expect(416, "RANGE_INVALID")],
        ),
    ]
    return cases


HOSTILE_NUMBERS = {
    "negative": "-1",
    "superscript-two": "\u00b2",
    "superscript-escaped": "%C2%B2",
    "arabic-indic-digit": "%D9%A3",
    "fullwidth-digit": "%EF%BC%95",
    "5000-digits": "1" * 5000,
    "4301-digits": "1" * 4301,
    "letters": "ten",
    "float": "1.5",
    "exponent": "1e3",
    "hex": "0x10",
    "plus": "%2B5",
    "space": "%205",
    "nul": "5%00",
    "negative-zero": "-0",
}


def _pagination_cases() -> list[Case]:
    cases = []
    for label, n in HOSTILE_NUMBERS.items():
        for where, target in (("tags", "/v2/<repo>/tags/list"), ("catalog", "/v2/_catalog")):
            cases.append(case(f"n-{label}-{where}", "GET", f"{target}?n={n}", 400, "PAGINATION_NUMBER_INVALID"))
    # The largest number a count can be is served (clamped to what exists); past it, refused.
    for where, target in (("tags", "/v2/<repo>/tags/list"), ("catalog", "/v2/_catalog")):
        cases.append(case(f"n-int64-max-{where}", "GET", f"{target}?n=9223372036854775807", 200))
        for label, n in {
            "past-int64": "9223372036854775808",
            "2-pow-70": str(2**70),
            "1000-digits": "1" * 1000,
        }.items():
            cases.append(case(f"n-{label}-{where}", "GET", f"{target}?n={n}", 400, "PAGINATION_NUMBER_INVALID"))
    odd_last = {
        "huge": "z" * 10000,
        "nul": "a%00",
        "unicode": "%C3%A4",
        "lone-surrogate-utf8": "%ED%B3%BF",
        "invalid-utf8": "%FF",
        "control": "%01",
        "percent": "%25",
        "sql-ish": "'%20OR%201=1--",
        "like-wildcards": "%25_",
    }
    for label, last in odd_last.items():
        for where, target in (("tags", "/v2/<repo>/tags/list"), ("catalog", "/v2/_catalog")):
            cases.append(case(f"last-{label}-{where}", "GET", f"{target}?last={last}&n=5", 200))
    odd_artifact_types = {
        "nul": "%00",
        "nul-inside": "a%00b",
        "huge": "z" * 10000,
        "lone-surrogate-utf8": "%ED%B3%BF",
        "invalid-utf8": "%FF",
        "unicode": "%C3%A4",
        "percent": "%25",
        "sql-ish": "'%20OR%201=1--",
        "like-wildcards": "%25_",
    }
    for label, artifact_type in odd_artifact_types.items():
        target = f"/v2/<repo>/referrers/<image>?artifactType={artifact_type}"
        cases.append(case(f"referrers-artifact-type-{label}", "GET", target, 200))
    cases += [
        case(
            "n-and-last-hostile-together",
            "GET",
            f"/v2/<repo>/tags/list?n={NINES}&last=%00",
            400,
            "PAGINATION_NUMBER_INVALID",
        ),
        case(
            "n-repeated", "GET", "/v2/<repo>/tags/list?n=1&n=-1", 200, also=[Expect(400, "PAGINATION_NUMBER_INVALID")]
        ),
        case("n-zero", "GET", "/v2/<repo>/tags/list?n=0", 200),
        case(
            "tags-of-unknown-repo-paged",
            "GET",
            "/v2/hostile/nothing/tags/list?n=-1",
            400,
            "PAGINATION_NUMBER_INVALID",
            also=[Expect(404, "NAME_UNKNOWN")],
        ),
    ]
    return cases


CASES = _range_cases() + _content_range_cases() + _pagination_cases()


seeded = seeded_fixture()


@pytest.mark.parametrize("hostile", params(CASES))
async def test_hostile_range_or_page_gets_the_right_answer(seeded: Seeded, hostile: Case) -> None:
    await check(seeded, hostile)
