"""Hostile upload requests and sequences: unknown, malformed or foreign upload ids, missing or wrong
digests, chunks out of place, chunks after the finish, double finishes. Each gets the right 4xx with an
OCI error body, never a 5xx; a refused request changes nothing stored, and an upload refused for its
digest leaves nothing behind."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest

from tests.api.hostile import (
    ANY_CODE,
    Case,
    Expect,
    Scenario,
    Seeded,
    anyio_backend,  # noqa: F401  (a module-scoped fixture: one loop for the module)
    case,
    check,
    check_scenario,
    module_settings,
    params,
    seeded_registry,
    step,
)
from tests.support.content import digest_of

pytestmark = pytest.mark.anyio

UPLOAD_UNKNOWN = "BLOB_UPLOAD_UNKNOWN"
UNKNOWN_ID = "00000000-0000-4000-8000-000000000000"

HOSTILE_IDS = {
    "letters": "x",
    "zero": "0",
    "unknown-uuid": UNKNOWN_ID,
    "uppercase-of-open": "<UPLOAD>",
    "braces-of-open": "{<upload>}",
    "urn-of-open": "urn:uuid:<upload>",
    "no-dashes-of-open": "<nodash>",
    "1000-chars": "a" * 1000,
    "nul": "%00",
    "dotdot": "..",
    "dotdot-escaped": "%2e%2e",
    "unicode": "%C3%A4",
    "sql-ish": "'%20OR%20'1'='1",
    "other-repositorys": "<other_upload>",
    "open-plus-suffix": "<upload>x",
    "invalid-utf8": "%FF",
}


def _id_cases() -> list[Case]:
    cases = []
    for label, upload_id in HOSTILE_IDS.items():
        base = f"/v2/<repo>/blobs/uploads/{upload_id}"
        cases += [
            case(f"id-{label}-PATCH", "PATCH", base, 404, UPLOAD_UNKNOWN, body=b"chunk"),
            case(f"id-{label}-PATCH-empty", "PATCH", base, 404, UPLOAD_UNKNOWN),
            case(f"id-{label}-PUT", "PUT", f"{base}?digest=<layer>", 404, UPLOAD_UNKNOWN),
            case(
                f"id-{label}-PUT-with-body",
                "PUT",
                f"{base}?digest={digest_of(b'chunk')}",
                404,
                UPLOAD_UNKNOWN,
                body=b"chunk",
            ),
            case(f"id-{label}-GET", "GET", base, 404, UPLOAD_UNKNOWN),
            case(f"id-{label}-DELETE", "DELETE", base, 404, UPLOAD_UNKNOWN),
        ]
    cases += [
        case(
            "other-upload-via-unknown-repo-GET",
            "GET",
            "/v2/hostile/nothing/blobs/uploads/<other_upload>",
            404,
            UPLOAD_UNKNOWN,
        ),
        case(
            "upload-path-without-id-PATCH",
            "PATCH",
            "/v2/<repo>/blobs/uploads/",
            405,
            "UNSUPPORTED",
            also=[Expect(404, UPLOAD_UNKNOWN)],
        ),
        case(
            "upload-path-without-id-PUT",
            "PUT",
            "/v2/<repo>/blobs/uploads/?digest=<layer>",
            405,
            "UNSUPPORTED",
            also=[Expect(404, UPLOAD_UNKNOWN)],
        ),
        case("put-digest-missing", "PUT", "/v2/<repo>/blobs/uploads/<upload>", 400, "DIGEST_INVALID"),
        case(
            "post-digest-and-mount-both-bad",
            "POST",
            "/v2/<repo>/blobs/uploads/?digest=x&mount=y",
            400,
            "DIGEST_INVALID",
        ),
    ]
    return cases


def _data() -> tuple[bytes, str]:
    data = os.urandom(16)
    return data, digest_of(data)


def _sequences() -> list[Scenario]:
    up = "/v2/<repo>/blobs/uploads/"
    new = up + "<new>"
    sequences = []

    data, digest = _data()
    wrong = digest_of(b"something else")
    sequences.append(
        Scenario(
            "wrong-digest-after-chunks-cancels-the-upload",
            (
                step("POST", up, 202),
                step("PATCH", new, 202, body=data),
                step("PUT", f"{new}?digest={wrong}", 400, "DIGEST_INVALID", hostile=True),
                step("GET", new, 404, UPLOAD_UNKNOWN, hostile=True),
                step("GET", f"/v2/<repo>/blobs/{wrong}", 404, "BLOB_UNKNOWN", hostile=True),
                step("GET", f"/v2/<repo>/blobs/{digest}", 404, "BLOB_UNKNOWN", hostile=True),
            ),
            undone=True,
        )
    )

    data, digest = _data()
    sequences.append(
        Scenario(
            "wrong-digest-monolithic-put-cancels-the-upload",
            (
                step("POST", up, 202),
                step("PUT", f"{new}?digest={wrong}", 400, "DIGEST_INVALID", body=data, hostile=True),
                step("PATCH", new, 404, UPLOAD_UNKNOWN, body=data, hostile=True),
            ),
            undone=True,
        )
    )

    data, digest = _data()
    sequences.append(
        Scenario(
            "wrong-digest-post-stores-nothing",
            (
                step("POST", f"{up}?digest={wrong}", 400, "DIGEST_INVALID", body=data, hostile=True),
                step("GET", f"/v2/<repo>/blobs/{wrong}", 404, "BLOB_UNKNOWN", hostile=True),
            ),
            undone=True,
        )
    )

    data, digest = _data()
    sequences.append(
        Scenario(
            "wrong-sha512-digest-cancels-the-upload",
            (
                step("POST", up, 202),
                step("PATCH", new, 202, body=data),
                step("PUT", f"{new}?digest=sha512:{'a' * 128}", 400, "DIGEST_INVALID", hostile=True),
            ),
            undone=True,
        )
    )

    data, digest = _data()
    sequences.append(
        Scenario(
            "wrong-digest-of-an-existing-blob-cancels-the-upload",
            (
                step("POST", up, 202),
                step("PATCH", new, 202, body=data),
                step("PUT", f"{new}?digest=<layer>", 400, "DIGEST_INVALID", hostile=True),
                step("GET", "/v2/<repo>/blobs/<layer>", 200, hostile=True),
            ),
            undone=True,
        )
    )

    data, digest = _data()
    sequences.append(
        Scenario(
            "content-range-that-does-not-start-at-the-end",
            (
                step("POST", up, 202),
                step("PATCH", new, 202, headers=[("Content-Range", "0-15")], body=data),
                step("PATCH", new, 416, "RANGE_INVALID", headers=[("Content-Range", "0-15")], body=data, hostile=True),
                step("PATCH", new, 416, "RANGE_INVALID", headers=[("Content-Range", "20-35")], body=data, hostile=True),
                step("PATCH", new, 416, "RANGE_INVALID", headers=[("Content-Range", "15-30")], body=data, hostile=True),
                step(
                    "PUT",
                    f"{new}?digest={digest}",
                    416,
                    "RANGE_INVALID",
                    headers=[("Content-Range", "8-23")],
                    body=data,
                    hostile=True,
                ),
                step("GET", new, 204, hostile=True),
                step("PUT", f"{new}?digest={digest}", 201),
            ),
        )
    )

    data, digest = _data()
    sequences.append(
        Scenario(
            "chunk-after-finish",
            (
                step("POST", up, 202),
                step("PUT", f"{new}?digest={digest}", 201, body=data),
                step("PATCH", new, 404, UPLOAD_UNKNOWN, body=data, hostile=True),
                step(
                    "PATCH",
                    new,
                    404,
                    UPLOAD_UNKNOWN,
                    headers=[("Content-Range", "16-31")],
                    body=data,
                    hostile=True,
                    also=[Expect(416, "RANGE_INVALID")],
                ),
                step("GET", new, 404, UPLOAD_UNKNOWN, hostile=True),
                step("DELETE", new, 404, UPLOAD_UNKNOWN, hostile=True),
            ),
        )
    )

    data, digest = _data()
    sequences.append(
        Scenario(
            "double-finish",
            (
                step("POST", up, 202),
                step("PATCH", new, 202, body=data),
                step("PUT", f"{new}?digest={digest}", 201),
                step("PUT", f"{new}?digest={digest}", 404, UPLOAD_UNKNOWN, hostile=True),
                step("PUT", f"{new}?digest={digest}", 404, UPLOAD_UNKNOWN, body=data, hostile=True),
            ),
        )
    )

    data, digest = _data()
    sequences.append(
        Scenario(
            "use-after-cancel",
            (
                step("POST", up, 202),
                step("PATCH", new, 202, body=data),
                step("DELETE", new, 204),
                step("PATCH", new, 404, UPLOAD_UNKNOWN, body=data, hostile=True),
                step("PUT", f"{new}?digest={digest}", 404, UPLOAD_UNKNOWN, hostile=True),
                step("DELETE", new, 404, UPLOAD_UNKNOWN, hostile=True),
                step("GET", new, 404, UPLOAD_UNKNOWN, hostile=True),
            ),
        )
    )

    data, digest = _data()
    foreign = "/v2/<repo>/blobs/uploads/<new>"
    sequences.append(
        Scenario(
            "an-upload-of-another-repository",
            (
                step("POST", "/v2/<other>/blobs/uploads/", 202),
                step("PATCH", "/v2/<other>/blobs/uploads/<new>", 202, body=data),
                step("PATCH", foreign, 404, UPLOAD_UNKNOWN, body=data, hostile=True),
                step("PUT", f"{foreign}?digest={digest}", 404, UPLOAD_UNKNOWN, hostile=True),
                step("GET", foreign, 404, UPLOAD_UNKNOWN, hostile=True),
                step("DELETE", foreign, 404, UPLOAD_UNKNOWN, hostile=True),
                step("PUT", f"/v2/<other>/blobs/uploads/<new>?digest={digest}", 201),
                step("GET", f"/v2/<repo>/blobs/{digest}", 404, "BLOB_UNKNOWN"),
            ),
        )
    )

    data, digest = _data()
    sequences.append(
        Scenario(
            "put-without-digest-keeps-the-upload",
            (
                step("POST", up, 202),
                step("PATCH", new, 202, body=data),
                step("PUT", new, 400, "DIGEST_INVALID", hostile=True),
                step("PUT", f"{new}?digest=", 400, "DIGEST_INVALID", hostile=True),
                step("PUT", f"{new}?digest=sha256:", 400, "DIGEST_INVALID", hostile=True),
                step("PUT", new, 400, "DIGEST_INVALID", body=data, hostile=True),
                step("GET", new, 204, hostile=True),
                step("PUT", f"{new}?digest={digest}", 201),
            ),
        )
    )

    data, digest = _data()
    sequences.append(
        Scenario(
            "chunk-longer-than-its-content-range",
            (
                step("POST", up, 202),
                step(
                    "PATCH",
                    new,
                    400,
                    "SIZE_INVALID",
                    headers=[("Content-Range", "0-99")],
                    body=data,
                    hostile=True,
                    also=[Expect(416, "RANGE_INVALID")],
                ),
                step("GET", new, 204, hostile=True),
            ),
        )
    )

    data, digest = _data()
    sequences.append(
        Scenario(
            "chunk-shorter-than-its-content-range-after-a-chunk",
            (
                step("POST", up, 202),
                step("PATCH", new, 202, body=data),
                step(
                    "PATCH",
                    new,
                    400,
                    "SIZE_INVALID",
                    headers=[("Content-Range", "16-17")],
                    body=data,
                    hostile=True,
                    also=[Expect(416, "RANGE_INVALID")],
                ),
                step("PUT", f"{new}?digest={digest}", 201),
            ),
        )
    )

    data, digest = _data()
    sequences.append(
        Scenario(
            "last-chunk-longer-than-its-content-range",
            (
                step("POST", up, 202),
                step(
                    "PUT",
                    f"{new}?digest={digest}",
                    400,
                    "SIZE_INVALID",
                    headers=[("Content-Range", "0-99")],
                    body=data,
                    hostile=True,
                    also=[Expect(416, "RANGE_INVALID"), Expect(400, "DIGEST_INVALID")],
                ),
            ),
        )
    )

    data, digest = _data()
    sequences.append(
        Scenario(
            "upload-id-of-a-finished-upload-in-another-repository",
            (
                step("POST", "/v2/<other>/blobs/uploads/", 202),
                step("PUT", f"/v2/<other>/blobs/uploads/<new>?digest={digest}", 201, body=data),
                step("PUT", f"{foreign}?digest={digest}", 404, UPLOAD_UNKNOWN, hostile=True),
                step("GET", f"/v2/<repo>/blobs/{digest}", 404, "BLOB_UNKNOWN", hostile=True),
            ),
        )
    )

    # The client goes away halfway through a body: the chunk is dropped, the upload goes on.
    data, digest = _data()
    gone = [Expect(400, "BLOB_UPLOAD_INVALID")]
    sequences.append(
        Scenario(
            "client-gone-halfway-through-the-first-chunk",
            (
                step("POST", up, 202),
                step("PATCH", new, 400, ANY_CODE, body=data, cut=True, hostile=True, also=gone),
                step("GET", new, 204, hostile=True),
                step("PATCH", new, 202, body=data),
                step("PUT", f"{new}?digest={digest}", 201),
            ),
        )
    )
    data, digest = _data()
    sequences.append(
        Scenario(
            "client-gone-halfway-through-a-later-chunk",
            (
                step("POST", up, 202),
                step("PATCH", new, 202, body=data[:8]),
                step("PATCH", new, 400, ANY_CODE, body=data[8:], cut=True, hostile=True, also=gone),
                step(
                    "PATCH",
                    new,
                    400,
                    ANY_CODE,
                    headers=[("Content-Range", "8-15")],
                    body=data[8:],
                    cut=True,
                    hostile=True,
                    also=gone,
                ),
                step("GET", new, 204, hostile=True),
                step("PATCH", new, 202, headers=[("Content-Range", "8-15")], body=data[8:]),
                step("PUT", f"{new}?digest={digest}", 201),
            ),
        )
    )
    data, digest = _data()
    sequences.append(
        Scenario(
            "client-gone-halfway-through-the-last-chunk",
            (
                step("POST", up, 202),
                step("PATCH", new, 202, body=data[:8]),
                step("PUT", f"{new}?digest={digest}", 400, ANY_CODE, body=data[8:], cut=True, hostile=True, also=gone),
                step("GET", f"/v2/<repo>/blobs/{digest}", 404, "BLOB_UNKNOWN", hostile=True),
            ),
        )
    )
    data, digest = _data()
    sequences.append(
        Scenario(
            "client-gone-halfway-through-a-monolithic-upload",
            (
                step("POST", f"{up}?digest={digest}", 400, ANY_CODE, body=data, cut=True, hostile=True, also=gone),
                step("GET", f"/v2/<repo>/blobs/{digest}", 404, "BLOB_UNKNOWN", hostile=True),
            ),
            undone=True,
        )
    )
    return sequences


CASES = _id_cases()
SEQUENCES = _sequences()


@pytest.fixture(scope="module")
async def seeded(request, tmp_path_factory) -> AsyncIterator[Seeded]:
    async with seeded_registry(module_settings(request, tmp_path_factory, "disk+sqlite")) as registry:
        registry.extra["<UPLOAD>"] = registry.upload.upper()
        registry.extra["<nodash>"] = registry.upload.replace("-", "")
        yield registry


@pytest.mark.parametrize("hostile", params(CASES))
async def test_hostile_upload_request_gets_a_clean_4xx(seeded: Seeded, hostile: Case) -> None:
    await check(seeded, hostile)


@pytest.mark.parametrize("sequence", params(SEQUENCES))
async def test_hostile_upload_sequence_gets_clean_answers_and_leaves_nothing(
    seeded: Seeded, sequence: Scenario
) -> None:
    await check_scenario(seeded, sequence)
