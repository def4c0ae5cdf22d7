"""Token issue and verification, and the attacks verification must refuse."""

from __future__ import annotations

import base64
import datetime
import hmac
import json
import subprocess
import sys
import time

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from registry.auth.access import access
from registry.auth.tokens import (
    TOKEN_MAX_BYTES,
    InvalidToken,
    TokenIssuer,
    TokenVerifier,
    TrustedKey,
    certificate_keys,
    jwks_keys,
    key_id,
    load_or_create_key,
)

PULL_A = access("repository", "team/a", ["pull"])


@pytest.fixture(params=["ES256", "RS256"])
def issuer(request, tmp_path) -> TokenIssuer:
    key = load_or_create_key(str(tmp_path / "key.pem"), request.param)
    return TokenIssuer(key, request.param, "us", "registry", 300, 3600)


def verifier_for(issuer: TokenIssuer, *extra: TrustedKey) -> TokenVerifier:
    return TokenVerifier([issuer.trusted_key(), *extra], "registry")


def forge(issuer: TokenIssuer, **changes) -> str:
    now = int(time.time())
    claims = {"iss": "us", "sub": "alice", "aud": "registry", "exp": now + 60, "nbf": now - 1, "iat": now}
    claims.update(changes)
    return jwt.encode(claims, issuer.private_key, algorithm=issuer.algorithm, headers={"kid": issuer.kid})


def test_issued_token_verifies_with_its_claims(issuer: TokenIssuer) -> None:
    issued = issuer.issue("alice", [PULL_A])
    claims = verifier_for(issuer).verify(issued.token)
    assert (claims.subject, claims.issuer, claims.access) == ("alice", "us", [PULL_A])
    header = jwt.get_unverified_header(issued.token)
    assert header["kid"] == issuer.kid and header["alg"] == issuer.algorithm
    payload = jwt.decode(issued.token, options={"verify_signature": False})
    assert {"iss", "sub", "aud", "exp", "nbf", "iat", "jti", "access"} <= set(payload)


def test_the_key_file_is_created_once_and_reused(tmp_path) -> None:
    first = load_or_create_key(str(tmp_path / "k.pem"), "ES256")
    again = load_or_create_key(str(tmp_path / "k.pem"), "ES256")
    assert key_id(first.public_key()) == key_id(again.public_key())
    with pytest.raises(ValueError, match="does not suit"):
        load_or_create_key(str(tmp_path / "k.pem"), "RS256")


def test_key_ids_have_the_libtrust_shape(issuer: TokenIssuer) -> None:
    groups = issuer.kid.split(":")
    assert len(groups) == 12 and all(len(g) == 4 for g in groups)


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        # Times as offsets from when the test runs (not from collection: a long run would make them pass).
        ({"exp": lambda now: now - 120}, "expired"),
        ({"nbf": lambda now: now + 600}, "not yet valid"),
        ({"aud": "another-registry"}, "(?i)audience"),
        ({"iss": "someone-else"}, "issuer"),
    ],
)
def test_claims_outside_what_we_accept_are_refused(issuer: TokenIssuer, changes: dict, reason: str) -> None:
    now = int(time.time())
    claims = {name: value(now) if callable(value) else value for name, value in changes.items()}
    with pytest.raises(InvalidToken, match=reason):
        verifier_for(issuer).verify(forge(issuer, **claims))


def test_expiry_has_a_small_leeway(issuer: TokenIssuer) -> None:
    verifier_for(issuer).verify(forge(issuer, exp=int(time.time()) - 5))


def test_tampered_payload_is_refused(issuer: TokenIssuer) -> None:
    header, payload, signature = issuer.issue("alice", [PULL_A]).token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["access"] = [access("repository", "team/a", ["*"]).claim()]
    forged_payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    with pytest.raises(InvalidToken):
        verifier_for(issuer).verify(f"{header}.{forged_payload}.{signature}")


def test_alg_none_is_refused(issuer: TokenIssuer) -> None:
    token = jwt.encode({"iss": "us", "aud": "registry", "exp": int(time.time()) + 60}, None, algorithm="none")
    with pytest.raises(InvalidToken, match="not accepted"):
        verifier_for(issuer).verify(token)


def test_hmac_signed_with_the_public_key_is_refused(issuer: TokenIssuer) -> None:
    public_pem = issuer.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    claims = {"iss": "us", "sub": "x", "aud": "registry", "exp": int(time.time()) + 60}
    header = base64.urlsafe_b64encode(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()).rstrip(b"=")
    body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=")

    signature = hmac.new(public_pem, header + b"." + body, "sha256").digest()
    token = b".".join([header, body, base64.urlsafe_b64encode(signature).rstrip(b"=")]).decode()
    with pytest.raises(InvalidToken, match="not accepted"):
        verifier_for(issuer).verify(token)


def test_token_signed_by_an_unknown_key_is_refused(issuer: TokenIssuer, tmp_path) -> None:
    other_key = load_or_create_key(str(tmp_path / "other.pem"), issuer.algorithm)
    impostor = TokenIssuer(other_key, issuer.algorithm, "us", "registry", 300, 3600)
    with pytest.raises(InvalidToken):
        verifier_for(issuer).verify(impostor.issue("alice", [PULL_A]).token)


def test_refresh_tokens_are_not_access_tokens(issuer: TokenIssuer) -> None:
    refresh = issuer.issue_refresh("alice", "fp")
    assert issuer.check_refresh(refresh) == ("alice", "fp")
    with pytest.raises(InvalidToken, match="refresh"):
        verifier_for(issuer).verify(refresh)
    with pytest.raises(InvalidToken):
        issuer.check_refresh(issuer.issue("alice", []).token)


def test_external_issuer_by_jwks(issuer: TokenIssuer, tmp_path) -> None:
    external = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(external.public_key()))
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": [{**jwk, "kid": "ext-1", "use": "sig"}]}))
    verifier = verifier_for(issuer, *jwks_keys(str(tmp_path / "jwks.json"), "gitlab"))
    now = int(time.time())
    claims = {"iss": "gitlab", "sub": "bob", "aud": "registry", "exp": now + 60, "access": [PULL_A.claim()]}
    token = jwt.encode(claims, external, algorithm="RS256", headers={"kid": "ext-1"})
    assert verifier.verify(token).access == [PULL_A]
    wrong_issuer = jwt.encode({**claims, "iss": "us"}, external, algorithm="RS256", headers={"kid": "ext-1"})
    with pytest.raises(InvalidToken):
        verifier.verify(wrong_issuer)


def test_external_issuer_by_certificate_bundle(issuer: TokenIssuer, tmp_path) -> None:
    external = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "auth.example")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(external.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(external, hashes.SHA256())
    )
    (tmp_path / "bundle.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    verifier = verifier_for(issuer, *certificate_keys(str(tmp_path / "bundle.pem"), "docker_auth"))
    claims = {"iss": "docker_auth", "sub": "c", "aud": "registry", "exp": int(time.time()) + 60}
    token = jwt.encode(claims, external, algorithm="ES256", headers={"kid": key_id(external.public_key())})
    assert verifier.verify(token).subject == "c"


def test_a_token_over_the_size_cap_is_refused_unread(issuer: TokenIssuer) -> None:
    big = issuer.issue("alice", [access("repository", f"team/{'x' * 200}{i}", ["pull"]) for i in range(40)]).token
    assert len(big) > TOKEN_MAX_BYTES
    with pytest.raises(InvalidToken, match="larger than"):
        verifier_for(issuer).verify(big)


def test_the_verified_token_cache_is_bounded_in_bytes_least_recently_used_out(issuer: TokenIssuer) -> None:
    verifier = TokenVerifier([issuer.trusted_key()], "registry", cache_max_bytes=64 << 10)
    scopes = [access("repository", f"team/{'y' * 100}{i}", ["pull"]) for i in range(12)]
    tokens = [issuer.issue(f"user{i}", scopes).token for i in range(60)]
    assert sum(map(len, tokens)) > 2 * verifier.cache_max_bytes
    kept = tokens[0]
    for token in tokens:
        verifier.verify(token)
        verifier.verify(kept)  # used again each time: never the least recently used
        assert verifier.cached_bytes <= verifier.cache_max_bytes
    assert verifier.cached(kept) and verifier.cached(tokens[-1]) and not verifier.cached(tokens[1])
    assert verifier.cached_bytes >= verifier.cache_max_bytes // 2


def test_the_jwt_libraries_load_only_for_token_mode() -> None:
    code = "import sys, registry.app; print('jwt' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
