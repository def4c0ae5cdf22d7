"""Hostile headers and methods: Host values that could inject into a challenge or a link, huge and odd
headers, Accept values, Content-Length lies, methods a route does not have. The right answer, never a
5xx, and nothing stored changes."""

from __future__ import annotations

import pytest

from tests.api.hostile import (
    ANY_CODE,
    Case,
    Expect,
    Seeded,
    anyio_backend,  # noqa: F401  (a module-scoped fixture: one loop for the module)
    case,
    check,
    params,
    seeded_fixture,
)
from tests.support.content import DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST, digest_of

pytestmark = pytest.mark.anyio

BAD_HOSTS = {
    "quote-realm-injection": 'x" ,realm="http://evil/',
    "quote": 'registry.test"',
    "space": "registry test",
    "slash": "registry.test/evil",
    "backslash": "registry.test\\evil",
    "empty": "",
    "userinfo": "user@evil.test",
    "query": "registry.test?x=1",
    "fragment": "registry.test#x",
    "unclosed-ipv6": "[::1",
    "bad-port": "registry.test:port",
    "port-too-long": "registry.test:123456",
    "two-ports": "registry.test:80:80",
    "angle-brackets": "<script>",
    "braces": "a{b}",
    "tab": "registry.test\tevil",
    "nul": "registry.test\x00",
    "latin1": "caf\u00e9.test",
    "300-chars": "a" * 300,
    "semicolon-param-injection": 'registry.test;scope="repository:x:push"',
}
# Requests a bad Host must not reach: a read, a listing, and one that would open an upload.
HOST_TARGETS = [
    ("GET", "/v2/", "base"),
    ("GET", "/v2/<repo>/tags/list", "tags"),
    ("HEAD", "/v2/<repo>/manifests/v1", "manifest-head"),
    ("POST", "/v2/<repo>/blobs/uploads/", "upload-start"),
]
GOOD_HOSTS = {
    "port": "registry.test:5000",
    "ipv6": "[::1]:5000",
    "ipv4": "127.0.0.1",
    "uppercase": "REGISTRY.TEST",
}


def _host_cases() -> list[Case]:
    cases = []
    for label, host in BAD_HOSTS.items():
        for method, target, where in HOST_TARGETS:
            code = None if method == "HEAD" else ANY_CODE
            cases.append(case(f"host-{label}-{where}", method, target, 400, code, headers=[("Host", host)]))
    for label, host in GOOD_HOSTS.items():
        cases.append(case(f"host-valid-{label}-base", "GET", "/v2/", 200, headers=[("Host", host)]))
    cases.append(
        case(
            "host-twice",
            "GET",
            "/v2/",
            400,
            ANY_CODE,
            headers=[("Host", "registry.test"), ("Host", 'evil" ,realm="http://evil/')],
            also=[Expect(200)],
        )
    )
    return cases


def _accept_cases() -> list[Case]:
    image, index = "/v2/<repo>/manifests/v1", "/v2/<repo>/manifests/multi"
    refused = {
        "html": "text/html",
        "index-only-for-image": OCI_INDEX,
        "docker-only-for-oci": DOCKER_MANIFEST,
        "latin1-junk": "\u00ff\u00fe",
        "100k-of-other-types": ", ".join(["text/html"] * 10000),
        "parameters-only": ";q=1;q=2;q=3",
        "quoted-junk": '"' * 1000,
    }
    admitted = {
        "any": "*/*",
        "empty": "",
        "commas": ",,,,",
        "oci-among-100k": ", ".join(["text/html"] * 10000) + ", " + OCI_MANIFEST,
        "oci-with-params": OCI_MANIFEST + ";q=0.5;charset=utf-8",
        "oci-padded": "   " + OCI_MANIFEST + "   ",
    }
    cases = []
    for label, accept in refused.items():
        cases.append(case(f"accept-{label}-GET", "GET", image, 404, "MANIFEST_UNKNOWN", headers=[("Accept", accept)]))
        cases.append(case(f"accept-{label}-HEAD", "HEAD", image, 404, headers=[("Accept", accept)]))
    for label, accept in admitted.items():
        cases.append(case(f"accept-{label}-GET", "GET", image, 200, headers=[("Accept", accept)]))
    cases += [
        case("accept-image-for-index", "GET", index, 404, "MANIFEST_UNKNOWN", headers=[("Accept", OCI_MANIFEST)]),
        case("accept-many-headers", "GET", image, 200, headers=[("Accept", "text/html")] * 500 + [("Accept", "*/*")]),
    ]
    return cases


def _size_cases() -> list[Case]:
    blob = "/v2/<repo>/blobs/<layer>"
    wrong = digest_of(b"not these bytes")
    return [
        case("user-agent-100k", "GET", "/v2/", 200, headers=[("User-Agent", "x" * 100_000)]),
        case("thousand-headers", "GET", "/v2/", 200, headers=[(f"X-Junk-{i}", "y") for i in range(1000)]),
        case("header-value-100k-on-blob", "GET", blob, 200, headers=[("X-Junk", "z" * 100_000)]),
        case("authorization-garbage-open-mode", "GET", "/v2/", 200, headers=[("Authorization", "Basic !!!")]),
        case(
            "authorization-100k-open-mode", "GET", "/v2/", 200, headers=[("Authorization", "Bearer " + "a" * 100_000)]
        ),
        case("if-none-match-junk", "GET", blob, 200, also=[Expect(304)], headers=[("If-None-Match", '"' * 5000)]),
        case(
            "content-length-huge-on-post-wrong-digest",
            "POST",
            f"/v2/<repo>/blobs/uploads/?digest={wrong}",
            400,
            "DIGEST_INVALID",
            headers=[("Content-Length", "9" * 30)],
            body=b"abc",
            also=[Expect(400, "SIZE_INVALID"), Expect(413, ANY_CODE)],
        ),
        case(
            "content-length-5000-digits-on-post-wrong-digest",
            "POST",
            f"/v2/<repo>/blobs/uploads/?digest={wrong}",
            400,
            "DIGEST_INVALID",
            headers=[("Content-Length", "9" * 5000)],
            body=b"abc",
            also=[Expect(400, "SIZE_INVALID"), Expect(413, ANY_CODE)],
        ),
        case(
            "content-length-negative-on-post-wrong-digest",
            "POST",
            f"/v2/<repo>/blobs/uploads/?digest={wrong}",
            400,
            "DIGEST_INVALID",
            headers=[("Content-Length", "-3")],
            body=b"abc",
            also=[Expect(400, "SIZE_INVALID")],
        ),
        case(
            "content-length-letters-on-post-wrong-digest",
            "POST",
            f"/v2/<repo>/blobs/uploads/?digest={wrong}",
            400,
            "DIGEST_INVALID",
            headers=[("Content-Length", "abc")],
            body=b"abc",
            also=[Expect(400, "SIZE_INVALID")],
        ),
        case(
            "content-length-superscript-on-manifest",
            "PUT",
            "/v2/<repo>/manifests/bad",
            400,
            "MANIFEST_INVALID",
            headers=[("Content-Length", "\u00b2"), ("Content-Type", OCI_MANIFEST)],
            body=b"{}",
            also=[Expect(400, "SIZE_INVALID")],
        ),
        case(
            "content-type-100k-on-manifest",
            "PUT",
            "/v2/<repo>/manifests/bad",
            400,
            "MANIFEST_INVALID",
            headers=[("Content-Type", "x" * 100_000)],
            body=lambda s: s.image.manifest[:-2],
        ),
    ]


def _method_cases() -> list[Case]:
    unsupported = [
        ("POST", "/v2/<repo>/manifests/v1"),
        ("PATCH", "/v2/<repo>/manifests/v1"),
        ("PUT", "/v2/<repo>/blobs/<layer>"),
        ("POST", "/v2/<repo>/blobs/<layer>"),
        ("PATCH", "/v2/<repo>/tags/list"),
        ("DELETE", "/v2/<repo>/tags/list"),
        ("DELETE", "/v2/_catalog"),
        ("POST", "/v2/"),
        ("DELETE", "/v2/"),
        ("TRACE", "/v2/"),
        ("GET", "/v2/<repo>/blobs/uploads/"),
        ("FOO", "/v2/<repo>/manifests/v1"),
        ("PUT", "/v2/<repo>/referrers/<image>"),
        ("CONNECT", "/v2/<repo>/tags/list"),
    ]
    return [
        case(f"method-{method}-{target.split('/')[-1].strip('<>') or 'base'}-{i}", method, target, 405, "UNSUPPORTED")
        for i, (method, target) in enumerate(unsupported)
    ]


CASES = _host_cases() + _accept_cases() + _size_cases() + _method_cases()


seeded = seeded_fixture()


@pytest.mark.parametrize("hostile", params(CASES))
async def test_hostile_header_or_method_gets_the_right_answer(seeded: Seeded, hostile: Case) -> None:
    await check(seeded, hostile)
