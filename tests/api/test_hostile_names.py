"""Hostile repository names, references and digests on every route: the right 4xx, an OCI error body,
never a 5xx, and nothing stored changes."""

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

UNKNOWN = "sha256:" + "0" * 64

# Written as a client puts them on the request line (percent-escapes decoded by the server).
HOSTILE_NAMES = {
    "uppercase": "Hostile/App",
    "dotdot": "hostile/../app",
    "dotdot-escaped": "hostile/%2e%2e/app",
    "double-slash": "hostile//app",
    "trailing-slash": "hostile/app/",
    "leading-slash": "/hostile/app",
    "256-chars": "a" * 256,
    "300-chars-in-components": "/".join(["abcdefghij"] * 30),
    "unicode": "hostile/%C3%A4pp",
    "nul": "hostile/app%00",
    "control-char": "hostile/%01app",
    "newline": "hostile/app%0A",
    "space": "hostile/a%20pp",
    "empty-component-dot": "hostile/./app",
    "leading-separator": "-hostile/app",
    "trailing-separator": "hostile/app-",
    "double-dot-separator": "hostile/a..pp",
    "triple-underscore": "hostile/a___pp",
    "colon": "hostile/app:v1",
    "at-sign": "hostile/app@sha256",
    "backslash": "hostile%5Capp",
    "percent-literal": "hostile/app%25",
    "underscore-lead": "_hostile/app",
    "only-dots": "..",
    "lone-surrogate-utf8": "hostile/%ED%B3%BFapp",
    "invalid-utf8": "hostile/%FF%FEapp",
}

# (method, path after the name, expected status of a valid name that does not matter here)
ROUTES = [
    ("GET", "/tags/list"),
    ("GET", "/manifests/v1"),
    ("HEAD", "/manifests/v1"),
    ("PUT", "/manifests/v1"),
    ("DELETE", "/manifests/v1"),
    ("GET", "/blobs/<layer>"),
    ("HEAD", "/blobs/<layer>"),
    ("DELETE", "/blobs/<layer>"),
    ("POST", "/blobs/uploads/"),
    ("PATCH", "/blobs/uploads/<upload>"),
    ("PUT", "/blobs/uploads/<upload>?digest=<layer>"),
    ("GET", "/blobs/uploads/<upload>"),
    ("DELETE", "/blobs/uploads/<upload>"),
    ("GET", "/referrers/<image>"),
]


def _name_cases() -> list[Case]:
    cases = []
    for label, name in HOSTILE_NAMES.items():
        for method, rest in ROUTES:
            route = rest.split("?")[0].replace("<", "").replace(">", "").strip("/").replace("/", "-")
            code = None if method == "HEAD" else "NAME_INVALID"
            cases.append(case(f"name-{label}-{method}-{route}", method, f"/v2/{name}{rest}", 400, code))
    return cases


INVALID_TAGS = {
    "129-chars": "a" * 129,
    "leading-dash": "-v1",
    "leading-dot": ".v1",
    "bang": "v1!",
    "space": "v%201",
    "unicode": "v%C3%A9",
    "nul": "v1%00",
    "newline": "v1%0A",
    "dotdot": "..",
    "percent": "v1%25",
    "plus": "v1+x",
    "lone-surrogate-utf8": "v%ED%B3%BF",
    "invalid-utf8": "v%FF",
    "5000-chars": "t" * 5000,
}

# References written as digests that are not valid ones (each contains a colon).
BAD_DIGESTS = {
    "empty-hex": "sha256:",
    "short-hex": "sha256:abc",
    "long-hex": "sha256:" + "a" * 65,
    "uppercase-hex": "sha256:" + "A" * 64,
    "uppercase-algorithm": "SHA256:" + "a" * 64,
    "unknown-algorithm": "md5:" + "a" * 32,
    "unknown-algorithm-valid-grammar": "sha384:" + "a" * 96,
    "sha512-short": "sha512:" + "a" * 64,
    "non-hex": "sha256:" + "g" * 64,
    "empty-algorithm": ":" + "a" * 64,
    "double-colon": "sha256::" + "a" * 64,
    "two-colons": "sha256:" + "a" * 32 + ":" + "a" * 31,
    "huge-hex": "sha256:" + "a" * 5000,
    "nul": "sha256:" + "a" * 63 + "%00",
    "unicode-hex": "sha256:" + "a" * 63 + "%C3%A9",
    "only-colon": ":",
    "separator-lead": "+sha256:" + "a" * 64,
}


def _reference_cases() -> list[Case]:
    """A reference that cannot name a manifest names none: GET, HEAD and DELETE answer 404; a PUT under
    it is refused as an invalid tag or digest."""
    cases = []
    body = b'{"schemaVersion": 2}'
    for label, tag in INVALID_TAGS.items():
        target = f"/v2/<repo>/manifests/{tag}"
        cases += [
            case(f"tag-{label}-GET", "GET", target, 404, "MANIFEST_UNKNOWN"),
            case(f"tag-{label}-HEAD", "HEAD", target, 404),
            case(f"tag-{label}-PUT", "PUT", target, 400, "TAG_INVALID", body=body),
            case(f"tag-{label}-DELETE", "DELETE", target, 404, "MANIFEST_UNKNOWN"),
        ]
    for label, digest in BAD_DIGESTS.items():
        target = f"/v2/<repo>/manifests/{digest}"
        cases += [
            case(f"ref-digest-{label}-GET", "GET", target, 404, "MANIFEST_UNKNOWN"),
            case(f"ref-digest-{label}-HEAD", "HEAD", target, 404),
            case(f"ref-digest-{label}-PUT", "PUT", target, 400, "DIGEST_INVALID", body=body),
            case(f"ref-digest-{label}-DELETE", "DELETE", target, 404, "MANIFEST_UNKNOWN"),
        ]
    cases += [
        case("ref-unknown-digest-GET", "GET", f"/v2/<repo>/manifests/{UNKNOWN}", 404, "MANIFEST_UNKNOWN"),
        case("ref-unknown-digest-DELETE", "DELETE", f"/v2/<repo>/manifests/{UNKNOWN}", 404, "MANIFEST_UNKNOWN"),
        case("ref-unknown-tag-GET", "GET", "/v2/<repo>/manifests/nosuchtag", 404, "MANIFEST_UNKNOWN"),
        case("ref-unknown-tag-DELETE", "DELETE", "/v2/<repo>/manifests/nosuchtag", 404, "MANIFEST_UNKNOWN"),
        case(
            "ref-tag-of-unknown-repo-GET",
            "GET",
            "/v2/hostile/nothing/manifests/v1",
            404,
            "MANIFEST_UNKNOWN",
            also=[Expect(404, "NAME_UNKNOWN")],
        ),
        case("ref-image-of-other-repo-GET", "GET", "/v2/<other>/manifests/<image>", 404, "MANIFEST_UNKNOWN"),
        case("ref-layer-as-manifest-GET", "GET", "/v2/<repo>/manifests/<layer>", 404, "MANIFEST_UNKNOWN"),
    ]
    return cases


def _blob_digest_cases() -> list[Case]:
    cases = []
    for label, digest in BAD_DIGESTS.items():
        for method in ("GET", "HEAD", "DELETE"):
            code = None if method == "HEAD" else "DIGEST_INVALID"
            cases.append(case(f"blob-{label}-{method}", method, f"/v2/<repo>/blobs/{digest}", 400, code))
        cases.append(case(f"referrers-{label}", "GET", f"/v2/<repo>/referrers/{digest}", 400, "DIGEST_INVALID"))
        cases.append(
            case(
                f"post-digest-{label}",
                "POST",
                f"/v2/<repo>/blobs/uploads/?digest={digest}",
                400,
                "DIGEST_INVALID",
                body=b"data",
            )
        )
        cases.append(
            case(
                f"post-mount-{label}",
                "POST",
                f"/v2/<repo>/blobs/uploads/?mount={digest}&from=<other>",
                400,
                "DIGEST_INVALID",
            )
        )
        cases.append(
            case(
                f"put-upload-digest-{label}",
                "PUT",
                f"/v2/<repo>/blobs/uploads/<upload>?digest={digest}",
                400,
                "DIGEST_INVALID",
            )
        )
    for label, name in HOSTILE_NAMES.items():
        cases.append(
            case(
                f"post-mount-from-{label}",
                "POST",
                f"/v2/<repo>/blobs/uploads/?mount=<layer>&from={name}",
                400,
                "NAME_INVALID",
            )
        )
    cases += [
        case("blob-unknown-GET", "GET", f"/v2/<repo>/blobs/{UNKNOWN}", 404, "BLOB_UNKNOWN"),
        case("blob-unknown-HEAD", "HEAD", f"/v2/<repo>/blobs/{UNKNOWN}", 404),
        case("blob-unknown-DELETE", "DELETE", f"/v2/<repo>/blobs/{UNKNOWN}", 404, "BLOB_UNKNOWN"),
        case("blob-of-other-repo-GET", "GET", "/v2/<other>/blobs/<layer>", 404, "BLOB_UNKNOWN"),
        case(
            "blob-in-unknown-repo-GET",
            "GET",
            "/v2/hostile/nothing/blobs/<layer>",
            404,
            "BLOB_UNKNOWN",
            also=[Expect(404, "NAME_UNKNOWN")],
        ),
        case("blob-sha512-unknown-GET", "GET", "/v2/<repo>/blobs/sha512:" + "0" * 128, 404, "BLOB_UNKNOWN"),
        case("post-digest-empty", "POST", "/v2/<repo>/blobs/uploads/?digest=", 400, "DIGEST_INVALID", body=b"x"),
        case("put-upload-digest-missing", "PUT", "/v2/<repo>/blobs/uploads/<upload>", 400, "DIGEST_INVALID"),
        case("put-upload-digest-empty", "PUT", "/v2/<repo>/blobs/uploads/<upload>?digest=", 400, "DIGEST_INVALID"),
        case("tags-of-unknown-repo", "GET", "/v2/hostile/nothing/tags/list", 404, "NAME_UNKNOWN"),
    ]
    return cases


CASES = _name_cases() + _reference_cases() + _blob_digest_cases()


seeded = seeded_fixture()


@pytest.mark.parametrize("hostile", params(CASES))
async def test_hostile_name_reference_or_digest_gets_a_clean_4xx(seeded: Seeded, hostile: Case) -> None:
    await check(seeded, hostile)
