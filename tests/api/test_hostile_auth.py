"""Hostile credentials: malformed Basic headers (htpasswd mode), forged, expired, oversized or malformed
Bearer tokens and token requests that break the scope grammar or its limits (token mode). Each gets 400,
401 or 403 with an OCI error body, never a 5xx, and nothing stored changes."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from tests.api.hostile import (
    USERS,
    Case,
    Expect,
    Seeded,
    anyio_backend,  # noqa: F401  (a module-scoped fixture: one loop for the module)
    basic,
    case,
    check,
    module_settings,
    params,
    seeded_registry,
    with_auth,
)

pytestmark = pytest.mark.anyio

UNAUTHORIZED, DENIED, UNSUPPORTED = "UNAUTHORIZED", "DENIED", "UNSUPPORTED"
PUBLIC = "/v2/public/x/tags/list"  # anonymous pull is allowed there (the repository does not exist: 404)
PRIVATE = "/v2/<repo>/tags/list"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _raw_basic(credentials: bytes) -> str:
    return "Basic " + base64.b64encode(credentials).decode()


MALFORMED_BASIC = {
    "not-base64": "Basic !!!",
    "scheme-only": "Basic",
    "scheme-and-space": "Basic ",
    "no-colon": _raw_basic(b"no-colon"),
    "not-utf8": _raw_basic(b"\xff\xfe:\xfd"),
    "latin1-in-header": "Basic \u00ff\u00fe",
    "100k-of-base64": "Basic " + "A" * 100_000,
    "padding-only": "Basic ====",
    "nul-in-user": _raw_basic(b"ali\x00ce:alice-pw"),
}
WRONG_BASIC = {
    "wrong-password": basic("alice", "wrong"),
    "unknown-user": basic("nobody", "x"),
    "empty-user-and-password": basic("", ""),
    "password-1000-chars": basic("root", "x" * 1000),
    "user-10000-chars": basic("u" * 10_000, "x"),
    "password-with-nul": basic("root", "root-pw\x00"),
    "right-password-prefix": basic("root", "root-p"),
}


# X-Forwarded-For values from a trusted proxy (the matrix's peer is one): the client address they
# give is where failed logins are counted.
HOSTILE_FORWARDED_FOR = {  # what an HTTP server lets through: no NUL or control characters but tab
    "junk": "not-an-address",
    "10000-chars": "a" * 10_000,
    "5000-hops": ", ".join(["198.51.100.1"] * 5000),
    "latin1": "\u00ff\u00fe",
    "empty": "",
    "commas-only": ",,,,",
    "unclosed-ipv6": "[::1",
    "ipv6-zone": "fe80::1%eth0",
    "tab-inside": "192.0.2.1\t198.51.100.1",
    "quoted": '"192.0.2.1"',
    "with-port": "192.0.2.1:4711",
}


def _forwarded_cases(prefix: str, target: str) -> list[Case]:
    """A wrong password sent through a trusted proxy that forwards a hostile client address."""
    return [
        case(
            f"{prefix}-xff-{label}",
            "GET",
            target,
            401,
            UNAUTHORIZED,
            headers=[("Authorization", basic("root", "wrong")), ("X-Forwarded-For", value)],
        )
        for label, value in HOSTILE_FORWARDED_FOR.items()
    ]


def _basic_cases() -> list[Case]:
    cases = _forwarded_cases("basic", PRIVATE)
    for label, header in {**MALFORMED_BASIC, **WRONG_BASIC}.items():
        for where, target in (("public", PUBLIC), ("private", PRIVATE), ("base", "/v2/")):
            cases.append(
                case(f"basic-{label}-{where}", "GET", target, 401, UNAUTHORIZED, headers=[("Authorization", header)])
            )
    cases += [
        case("basic-anonymous-private", "GET", PRIVATE, 401, UNAUTHORIZED),
        case("basic-other-user-private", "GET", PRIVATE, 403, DENIED, headers=[("Authorization", basic(*_alice()))]),
        case(
            "basic-other-user-push",
            "POST",
            "/v2/<repo>/blobs/uploads/",
            403,
            DENIED,
            headers=[("Authorization", basic(*_alice()))],
        ),
        case("basic-anonymous-push-public", "POST", "/v2/public/x/blobs/uploads/", 401, UNAUTHORIZED),
        case(
            "bearer-in-basic-mode-private", "GET", PRIVATE, 401, UNAUTHORIZED, headers=[("Authorization", "Bearer x")]
        ),
    ]
    return cases


def _alice() -> tuple[str, str]:
    return "alice", USERS["alice"]


# -- tokens ------------------------------------------------------------------------------------------


def _issuer(seeded: Seeded) -> Any:
    return seeded.app.state.token_server.issuer


def _claims(seeded: Seeded, **changes: Any) -> dict:
    """Claims of a token that would admit root to everything the matrix touches; `changes` applied
    (a value of None removes the claim)."""
    issuer, now = _issuer(seeded), int(time.time())
    claims = {
        "iss": issuer.issuer,
        "sub": "root",
        "aud": issuer.audience,
        "exp": now + 300,
        "nbf": now - 1,
        "iat": now,
        "jti": "hostile",
        "access": [
            {"type": "repository", "name": n, "actions": ["pull", "push", "delete"]}
            for n in ("hostile/app", "hostile/other", "public/x")
        ],
    }
    for key, value in changes.items():
        if value is None:
            claims.pop(key, None)
        else:
            claims[key] = value
    return claims


def forge(header: dict, payload: bytes, private_key: Any) -> str:
    """A compact JWS of `payload` under `header`, signed ES256 with `private_key`, whatever the header
    says (PyJWT refuses to write some of the headers tested here)."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(payload)}".encode()
    signature = ECAlgorithm(ECAlgorithm.SHA256).sign(signing_input, private_key)
    return f"{signing_input.decode()}.{_b64(signature)}"


def signed(header: dict | None = None, key: str = "own", **changes: Any) -> Callable[[Seeded], str]:
    """An `Authorization` value: a token with the claims of `_claims(**changes)`, signed ES256 by our
    own key or by a stranger's (`key="stranger"`), with `header` fields added (None removes one)."""

    def value(seeded: Seeded) -> str:
        issuer = _issuer(seeded)
        private = issuer.private_key if key == "own" else ec.generate_private_key(ec.SECP256R1())
        fields = {"alg": "ES256", "typ": "JWT", "kid": issuer.kid, **(header or {})}
        fields = {k: v for k, v in fields.items() if v is not None}
        return "Bearer " + forge(fields, json.dumps(_claims(seeded, **changes)).encode(), private)

    return value


def unsigned(alg: str) -> Callable[[Seeded], str]:
    """A token with algorithm `alg` and an empty signature."""

    def value(seeded: Seeded) -> str:
        header = _b64(json.dumps({"alg": alg, "typ": "JWT", "kid": _issuer(seeded).kid}).encode())
        return f"Bearer {header}.{_b64(json.dumps(_claims(seeded)).encode())}."

    return value


def hmac_with_public_key(alg: str = "HS256") -> Callable[[Seeded], str]:
    """A token signed with HMAC whose secret is our public key (the classic key-confusion attack)."""

    def value(seeded: Seeded) -> str:
        issuer = _issuer(seeded)
        public = issuer.private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        header = _b64(json.dumps({"alg": alg, "typ": "JWT", "kid": issuer.kid}).encode())
        body = _b64(json.dumps(_claims(seeded)).encode())
        digest = {"HS256": hashlib.sha256, "HS512": hashlib.sha512}[alg]
        signature = hmac.new(public, f"{header}.{body}".encode(), digest).digest()
        return f"Bearer {header}.{body}.{_b64(signature)}"

    return value


def raw_payload(payload: bytes) -> Callable[[Seeded], str]:
    """A token signed by our own key whose payload is `payload` as is."""

    def value(seeded: Seeded) -> str:
        issuer = _issuer(seeded)
        return "Bearer " + forge({"alg": "ES256", "typ": "JWT", "kid": issuer.kid}, payload, issuer.private_key)

    return value


def raw_header(header: bytes) -> Callable[[Seeded], str]:
    """A token whose header segment is `header` as is, with a valid claims segment and junk signature."""

    def value(seeded: Seeded) -> str:
        return f"Bearer {_b64(header)}.{_b64(json.dumps(_claims(seeded)).encode())}.{_b64(b'x' * 64)}"

    return value


def tampered(seeded: Seeded) -> str:
    """A token of ours with its claims swapped for wider ones after signing."""
    token = signed(access=[])(seeded).removeprefix("Bearer ")
    header, _, signature = token.split(".")
    return f"Bearer {header}.{_b64(json.dumps(_claims(seeded)).encode())}.{signature}"


def huge_signed(seeded: Seeded) -> str:
    """A token of ours, validly signed, of about 133 KB."""
    entries = [{"type": "repository", "name": f"hostile/r{i:05}", "actions": ["pull"]} for i in range(2600)]
    return signed(access=_claims(seeded)["access"] + entries)(seeded)


def refresh_token(seeded: Seeded) -> str:
    return "Bearer " + _issuer(seeded).issue_refresh("root", "fingerprint")


BAD_TOKENS: dict[str, Any] = {
    "empty": "Bearer ",
    "one-segment": "Bearer x",
    "three-junk-segments": "Bearer a.b.c",
    "dots-only": "Bearer ...",
    "two-segments": "Bearer a.b",
    "5000-dots": "Bearer " + "." * 5000,
    "133k-of-junk": "Bearer " + "a" * 133_000,
    "133k-signed": huge_signed,
    "latin1": "Bearer \u00ff\u00fe.\u00fd",
    "alg-none": unsigned("none"),
    "alg-None": unsigned("None"),
    "alg-NONE": unsigned("NONE"),
    "alg-ES256-no-signature": unsigned("ES256"),
    "hs256-with-public-key": hmac_with_public_key("HS256"),
    "hs512-with-public-key": hmac_with_public_key("HS512"),
    "signed-by-a-stranger-with-our-kid": signed(key="stranger"),
    "signed-by-a-stranger-without-kid": signed({"kid": None}, key="stranger"),
    "claims-swapped-after-signing": tampered,
    "expired": signed(exp=int(time.time()) - 3600, nbf=int(time.time()) - 7200, iat=int(time.time()) - 7200),
    "not-yet-valid": signed(nbf=int(time.time()) + 3600),
    "wrong-audience": signed(aud="elsewhere"),
    "audience-list-without-us": signed(aud=["a", "b"]),
    "wrong-issuer": signed(iss="evil"),
    "no-expiry": signed(exp=None),
    "no-issuer": signed(iss=None),
    "no-audience": signed(aud=None),
    "expiry-a-string": signed(exp="never"),
    "expiry-a-float-nan": signed(exp=1e400),
    "a-refresh-token": refresh_token,
    "payload-not-json": raw_payload(b"not json"),
    "payload-a-list": raw_payload(b"[1, 2, 3]"),
    "payload-5000-deep": raw_payload(b"[" * 5000 + b"]" * 5000),
    "payload-invalid-utf8": raw_payload(b'{"sub": "\xff"}'),
    "header-not-json": raw_header(b"not json"),
    "header-a-list": raw_header(b"[]"),
    "header-alg-a-list": raw_header(b'{"alg": ["ES256"]}'),
    "header-alg-missing": raw_header(b'{"typ": "JWT"}'),
    "header-kid-an-object": signed({"kid": {"a": 1}}),
    "header-kid-5000-chars": signed({"kid": "k" * 5000}),
    "scheme-only": "Bearer",
    "scheme-twice": "Bearer Bearer x",
    "basic-in-token-mode": basic("root", "root-pw"),
}
# Validly signed by us, but granting nothing usable here: refused for lack of scope (401) or, where
# the rules do not allow the signed-in user either, 403.
EMPTY_GRANTS: dict[str, Any] = {
    "access-a-string": signed(access="everything"),
    "access-an-object": signed(access={"type": "repository", "name": "hostile/app", "actions": ["pull"]}),
    "access-numbers": signed(access=[1, 2, 3]),
    "access-actions-a-string": signed(access=[{"type": "repository", "name": "hostile/app", "actions": "pull"}]),
    "access-200-other-entries": signed(
        access=[{"type": "repository", "name": f"x{i}", "actions": ["pull"]} for i in range(200)]
    ),
    "access-other-type": signed(access=[{"type": "registry", "name": "hostile/app", "actions": ["pull"]}]),
}


def _token_cases() -> list[Case]:
    cases = []
    for label, value in BAD_TOKENS.items():
        cases.append(case(f"token-{label}", "GET", PRIVATE, 401, UNAUTHORIZED, headers=[("Authorization", value)]))
    for label, value in list(BAD_TOKENS.items())[:12]:
        cases.append(
            case(
                f"token-{label}-push",
                "POST",
                "/v2/<repo>/blobs/uploads/",
                401,
                UNAUTHORIZED,
                headers=[("Authorization", value)],
            )
        )
    for label, value in EMPTY_GRANTS.items():
        cases.append(case(f"token-{label}", "GET", PRIVATE, 401, UNAUTHORIZED, headers=[("Authorization", value)]))
    cases.append(
        case(
            "token-valid-lowercase-scheme",
            "GET",
            PRIVATE,
            200,
            headers=[("Authorization", lambda s: "bearer " + signed()(s).removeprefix("Bearer "))],
        )
    )
    return cases


TOKEN = "/auth/token"
BAD_SCOPE_NAMES = {
    "uppercase": "repository:Hostile/APP:pull",
    "double-slash": "repository:a//b:pull",
    "300-chars": "repository:" + "a" * 300 + ":pull",
    "dotdot": "repository:../x:pull",
    "nul": "repository:x%00:pull",
    "unicode": "repository:%C3%A4:pull",
    "trailing-slash": "repository:hostile/app/:pull",
    "space-inside": "repository:hostile%20app:pull",
}
ODD_SCOPES = {
    "type-only": "repository",
    "colons-only": ":::",
    "no-actions": "repository:hostile/app:",
    "empty-name": "repository::pull",
    "many-colons": "repository:a:b:c:d:pull",
    "commas-only": "repository:hostile/app:,,,",
    "unknown-type": "cluster:hostile/app:pull",
    "unknown-action": "repository:public/x:fly",
}


def _token_request_cases() -> list[Case]:
    cases = []
    for label, scope in BAD_SCOPE_NAMES.items():
        cases.append(
            case(f"token-request-scope-{label}", "GET", f"{TOKEN}?service=registry&scope={scope}", 400, UNSUPPORTED)
        )
    for label, scope in ODD_SCOPES.items():
        # Nothing grammatical to grant: refused, or a token granting nothing.
        cases.append(
            case(
                f"token-request-odd-scope-{label}",
                "GET",
                f"{TOKEN}?service=registry&scope={scope}",
                400,
                UNSUPPORTED,
                also=[Expect(200)],
            )
        )
    many = "&".join(f"scope=repository:public/r{i}:pull" for i in range(65))
    thousands = "&".join(f"scope=repository:public/r{i}:pull" for i in range(5000))
    one_param_many = "%20".join(f"repository:public/r{i}:pull" for i in range(5000))
    cases += [
        case("token-request-65-scopes", "GET", f"{TOKEN}?{many}", 400, UNSUPPORTED),
        case("token-request-5000-scopes", "GET", f"{TOKEN}?{thousands}", 400, UNSUPPORTED),
        case("token-request-5000-scopes-in-one", "GET", f"{TOKEN}?scope={one_param_many}", 400, UNSUPPORTED),
        case(
            "token-request-100k-scope", "GET", f"{TOKEN}?scope=repository:public/{'a' * 100_000}:pull", 400, UNSUPPORTED
        ),
        case("token-request-other-service", "GET", f"{TOKEN}?service=elsewhere", 400, UNSUPPORTED),
        case(
            "token-request-post-no-grant",
            "POST",
            TOKEN,
            400,
            UNSUPPORTED,
            headers=[("Content-Type", "application/x-www-form-urlencoded")],
            body=b"service=registry",
        ),
        case(
            "token-request-post-unknown-grant",
            "POST",
            TOKEN,
            400,
            UNSUPPORTED,
            headers=[("Content-Type", "application/x-www-form-urlencoded")],
            body=b"grant_type=client_credentials",
        ),
        case(
            "token-request-post-form-too-large",
            "POST",
            TOKEN,
            400,
            UNSUPPORTED,
            headers=[("Content-Type", "application/x-www-form-urlencoded")],
            body=b"grant_type=password&username=root&password=" + b"x" * (65 << 10),
            also=[Expect(413, UNSUPPORTED)],
        ),
        case(
            "token-request-post-invalid-utf8",
            "POST",
            TOKEN,
            400,
            UNSUPPORTED,
            headers=[("Content-Type", "application/x-www-form-urlencoded")],
            body=b"grant_type=\xff\xfe",
        ),
        case(
            "token-request-post-garbage-refresh",
            "POST",
            TOKEN,
            401,
            UNAUTHORIZED,
            headers=[("Content-Type", "application/x-www-form-urlencoded")],
            body=b"grant_type=refresh_token&refresh_token=a.b.c",
        ),
        case(
            "token-request-post-access-token-as-refresh",
            "POST",
            TOKEN,
            401,
            UNAUTHORIZED,
            headers=[("Content-Type", "application/x-www-form-urlencoded")],
            body=lambda s: ("grant_type=refresh_token&refresh_token=" + signed()(s).removeprefix("Bearer ")).encode(),
        ),
        case(
            "token-request-post-wrong-password",
            "POST",
            TOKEN,
            401,
            UNAUTHORIZED,
            headers=[("Content-Type", "application/x-www-form-urlencoded")],
            body=b"grant_type=password&username=root&password=wrong",
        ),
        case(
            "token-request-post-65-scopes",
            "POST",
            TOKEN,
            400,
            UNSUPPORTED,
            headers=[("Content-Type", "application/x-www-form-urlencoded")],
            body=(
                "grant_type=password&username=root&password=root-pw&scope="
                + "%20".join(f"repository:public/r{i}:pull" for i in range(65))
            ).encode(),
        ),
    ]
    cases += _forwarded_cases("token-request", f"{TOKEN}?service=registry")
    for label, header in {**MALFORMED_BASIC, **WRONG_BASIC}.items():
        cases.append(
            case(
                f"token-request-basic-{label}",
                "GET",
                f"{TOKEN}?service=registry",
                401,
                UNAUTHORIZED,
                headers=[("Authorization", header)],
            )
        )
    return cases


BASIC_CASES = _basic_cases()
TOKEN_CASES = _token_cases() + _token_request_cases()


async def basic_sign_in(client: httpx.AsyncClient) -> None:
    """Sign the seeding client in as root with Basic credentials."""
    client.headers["Authorization"] = basic("root", USERS["root"])


async def token_sign_in(client: httpx.AsyncClient) -> None:
    """Give the seeding client a token of root's for the repositories it seeds."""
    scopes = [f"repository:{n}:pull,push" for n in ("hostile/app", "hostile/other")]
    r = await client.get(
        TOKEN, params={"service": "registry", "scope": scopes}, headers={"Authorization": basic("root", USERS["root"])}
    )
    assert r.status_code == 200, r.text
    client.headers["Authorization"] = "Bearer " + r.json()["token"]


@pytest.fixture(scope="module")
async def basic_registry(request, tmp_path_factory) -> AsyncIterator[Seeded]:
    settings = with_auth(module_settings(request, tmp_path_factory, "disk+sqlite"), "htpasswd")
    async with seeded_registry(settings, basic_sign_in) as registry:
        yield registry


@pytest.fixture(scope="module")
async def token_registry(request, tmp_path_factory) -> AsyncIterator[Seeded]:
    settings = with_auth(module_settings(request, tmp_path_factory, "disk+sqlite"), "token")
    async with seeded_registry(settings, token_sign_in) as registry:
        yield registry


@pytest.mark.parametrize("hostile", params(BASIC_CASES))
async def test_hostile_basic_credentials_get_401_or_403(basic_registry: Seeded, hostile: Case) -> None:
    await check(basic_registry, hostile)


@pytest.mark.parametrize("hostile", params(TOKEN_CASES))
async def test_hostile_token_or_token_request_gets_400_401_or_403(token_registry: Seeded, hostile: Case) -> None:
    await check(token_registry, hostile)
