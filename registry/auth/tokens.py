"""Bearer tokens (Docker token spec): JWTs we issue, signed RS256 or ES256, and their verification,
for our own tokens and for those of trusted external issuers (certificate bundle or JWKS)."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from registry.auth.access import Access, from_claim
from registry.files import write_private_file

# Asymmetric algorithms only: never `none`, never an HMAC that a public key could be abused as.
ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512")
SIGNING_ALGORITHMS = ("RS256", "ES256")
LEEWAY_S = 30
REFRESH_TYPE = "refresh"
TOKEN_MAX_BYTES = 8 << 10  # larger Bearer tokens are refused unread
CACHE_MAX_BYTES = 8 << 20  # verified tokens kept, counted by their size (see _cost)
CACHE_ENTRY_OVERHEAD = 512  # bytes per cache entry besides the token: key, claims, list entries

SigningKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey  # what we sign with (ES256, RS256)
VerifyingKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey  # what we verify with (ES*, RS*, PS*)


class InvalidToken(Exception):
    """The token is not one to honour; the message says why."""


def key_id(public_key: PublicKeyTypes) -> str:
    """The libtrust key id Distribution uses: base32 of the first 30 bytes of the SHA-256 of the
    DER public key, in groups of four joined by `:`."""
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    encoded = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode().rstrip("=")
    return ":".join(encoded[i : i + 4] for i in range(0, len(encoded), 4))


def load_or_create_key(path: str, algorithm: str) -> SigningKey:
    """The private key in PEM file `path`, generated there (P-256 for ES256, RSA 3072 for RS256)
    when the file does not exist."""
    if algorithm not in SIGNING_ALGORITHMS:
        raise ValueError(f"token signing algorithm must be one of {SIGNING_ALGORITHMS}")
    try:
        with open(path, "rb") as f:
            key = serialization.load_pem_private_key(f.read(), password=None)
    except FileNotFoundError:
        if algorithm == "ES256":
            key = ec.generate_private_key(ec.SECP256R1())
        else:
            key = rsa.generate_private_key(public_exponent=65537, key_size=3072)
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        write_private_file(path, pem)
    wanted = ec.EllipticCurvePrivateKey if algorithm == "ES256" else rsa.RSAPrivateKey
    if not isinstance(key, wanted):
        raise ValueError(f"the key in {path} does not suit {algorithm}")
    return key


@dataclass(frozen=True, slots=True)
class TrustedKey:
    """A public key whose tokens we accept from `issuer` (any a certificate or JWKS holds; only a
    `VerifyingKey` is ever used)."""

    key: object
    kid: str | None
    issuer: str


def certificate_keys(path: str, issuer: str) -> list[TrustedKey]:
    """The keys of every certificate in a PEM bundle, with their libtrust key ids."""
    with open(path, "rb") as f:
        certificates = x509.load_pem_x509_certificates(f.read())
    return [TrustedKey(c.public_key(), key_id(c.public_key()), issuer) for c in certificates]


def jwks_keys(path: str, issuer: str) -> list[TrustedKey]:
    """The signing keys of a JWKS document (`{"keys": [...]}`)."""
    with open(path) as f:
        document = json.load(f)
    keys = []
    for jwk in document.get("keys", []):
        if jwk.get("use", "sig") != "sig":
            continue
        keys.append(TrustedKey(jwt.PyJWK(jwk).key, jwk.get("kid"), issuer))
    return keys


@dataclass(frozen=True, slots=True)
class IssuedToken:
    token: str
    expires_in: int
    issued_at: str  # RFC 3339


@dataclass(frozen=True, slots=True)
class Claims:
    """What a verified token says."""

    subject: str | None
    issuer: str
    access: list[Access]
    expires_at: float


class TokenIssuer:
    """Signs access tokens for `audience` (the token spec's `service`) and long-lived refresh tokens."""

    def __init__(
        self, private_key: SigningKey, algorithm: str, issuer: str, audience: str, expiry_s: int, refresh_expiry_s: int
    ):
        self.private_key, self.algorithm = private_key, algorithm
        self.issuer, self.audience = issuer, audience
        self.expiry_s, self.refresh_expiry_s = expiry_s, refresh_expiry_s
        self.kid = key_id(private_key.public_key())

    def trusted_key(self) -> TrustedKey:
        return TrustedKey(self.private_key.public_key(), self.kid, self.issuer)

    def _sign(self, claims: dict[str, object]) -> str:
        return jwt.encode(claims, self.private_key, algorithm=self.algorithm, headers={"kid": self.kid})

    def issue(self, subject: str | None, access: list[Access]) -> IssuedToken:
        now = int(time.time())
        claims: dict[str, object] = {
            "iss": self.issuer,
            "sub": subject or "",
            "aud": self.audience,
            "exp": now + self.expiry_s,
            "nbf": now - 1,
            "iat": now,
            "jti": secrets.token_urlsafe(16),
            "access": [a.claim() for a in access],
        }
        issued_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
        return IssuedToken(self._sign(claims), self.expiry_s, issued_at)

    def issue_refresh(self, subject: str, fingerprint: str) -> str:
        """A refresh token for `subject`, void once their password (`fingerprint`) changes."""
        now = int(time.time())
        claims: dict[str, object] = {
            "iss": self.issuer,
            "sub": subject,
            "aud": self.audience,
            "exp": now + self.refresh_expiry_s,
            "iat": now,
            "jti": secrets.token_urlsafe(16),
            "typ": REFRESH_TYPE,
            "fp": fingerprint,
        }
        return self._sign(claims)

    def check_refresh(self, token: str) -> tuple[str, str]:
        """(subject, fingerprint) of a refresh token we issued; raises InvalidToken."""
        try:
            claims = jwt.decode(
                token,
                self.private_key.public_key(),
                algorithms=[self.algorithm],
                audience=self.audience,
                issuer=self.issuer,
                leeway=LEEWAY_S,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.PyJWTError as e:
            raise InvalidToken(str(e)) from None
        if claims.get("typ") != REFRESH_TYPE or not isinstance(claims.get("fp"), str):
            raise InvalidToken("not a refresh token")
        return claims["sub"], claims["fp"]


def _verifying_key(key: object, algorithm: str) -> VerifyingKey | None:
    """`key` when it can check `algorithm` (EC keys ES*, RSA keys RS* and PS*), else None."""
    if algorithm.startswith("ES"):
        return key if isinstance(key, ec.EllipticCurvePublicKey) else None
    return key if isinstance(key, rsa.RSAPublicKey) else None


def _cost(token: str, claims: Claims) -> int:
    """About the memory a cache entry holds: the token, and its claims (a fraction of the token, which
    carries them in base64, plus objects per access entry)."""
    return 2 * len(token) + CACHE_ENTRY_OVERHEAD + 200 * len(claims.access)


class TokenVerifier:
    """Verifies access tokens against trusted keys: signature, algorithm, issuer, audience, expiry.
    Verified tokens are remembered, least recently used first out, within `cache_max_bytes`."""

    def __init__(self, keys: list[TrustedKey], audience: str, cache_max_bytes: int = CACHE_MAX_BYTES):
        self.keys, self.audience, self.cache_max_bytes = keys, audience, cache_max_bytes
        self._verified: OrderedDict[str, tuple[Claims, int]] = OrderedDict()
        self.cached_bytes = 0

    def cached(self, token: str) -> bool:
        """Whether `token` is in the cache of verified tokens."""
        return token in self._verified

    def _forget(self, token: str) -> None:
        _, cost = self._verified.pop(token)
        self.cached_bytes -= cost

    def verify(self, token: str) -> Claims:
        """The claims of a valid access token; raises InvalidToken (also for one over TOKEN_MAX_BYTES)."""
        if len(token) > TOKEN_MAX_BYTES:
            raise InvalidToken(f"the token is larger than {TOKEN_MAX_BYTES} bytes")
        entry = self._verified.get(token)
        if entry is not None:
            if entry[0].expires_at + LEEWAY_S > time.time():
                self._verified.move_to_end(token)
                return entry[0]
            self._forget(token)
        claims = self._verify(token)
        cost = _cost(token, claims)
        while self._verified and self.cached_bytes + cost > self.cache_max_bytes:
            self._forget(next(iter(self._verified)))
        if cost <= self.cache_max_bytes:
            self._verified[token] = (claims, cost)
            self.cached_bytes += cost
        return claims

    def _verify(self, token: str) -> Claims:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as e:
            raise InvalidToken(f"malformed token: {e}") from None
        algorithm, kid = header.get("alg"), header.get("kid")
        if algorithm not in ALGORITHMS:
            raise InvalidToken(f"algorithm {algorithm!r} is not accepted")
        candidates = [
            (key, k.issuer)
            for k in self.keys
            if (key := _verifying_key(k.key, algorithm)) is not None and (kid is None or k.kid in (None, kid))
        ]
        if not candidates:
            raise InvalidToken("no trusted key matches the token")
        error = "no trusted key matches the token"
        for key, issuer in candidates:
            try:
                claims = jwt.decode(
                    token,
                    key,
                    algorithms=[algorithm],
                    audience=self.audience,
                    issuer=issuer,
                    leeway=LEEWAY_S,
                    options={"require": ["exp", "iss", "aud"]},
                )
            except jwt.InvalidSignatureError:
                continue
            except jwt.PyJWTError as e:
                error = str(e)
                continue
            if claims.get("typ") == REFRESH_TYPE:
                raise InvalidToken("a refresh token is not an access token")
            return Claims(claims.get("sub") or None, issuer, from_claim(claims.get("access")), claims["exp"])
        raise InvalidToken(error)
