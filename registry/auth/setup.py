"""Builds the gate and the token service that the settings describe."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from registry.auth.gate import BasicGate, OpenGate, Passwords
from registry.auth.limiter import LoginLimiter
from registry.auth.rules import Rules, make_rule
from registry.auth.users import Htpasswd
from registry.config import Settings


@dataclass
class Auth:
    gate: OpenGate | BasicGate | TokenGate
    token_service: TokenService | None  # None unless mode is `token`


if TYPE_CHECKING:
    from registry.auth.token_gate import TokenGate
    from registry.auth.token_service import TokenService


def build_auth(settings: Settings) -> Auth:
    """The auth parts for `settings`; reads (or, for tokens, creates) key files."""
    config = settings.auth
    if config.mode == "none":
        return Auth(OpenGate(), None)
    rules = Rules([make_rule(r.who, r.repository, r.actions) for r in config.rules], config.groups)
    passwords = Passwords(Htpasswd(settings.htpasswd_path), LoginLimiter(config.login_attempts, config.login_window_s))
    if config.mode == "htpasswd":
        return Auth(BasicGate(passwords, rules, config.realm), None)
    # Imported here: the JWT and crypto libraries cost about 10 MiB a process, only worth it for tokens.
    from registry.auth.token_gate import TokenGate
    from registry.auth.token_service import TokenService
    from registry.auth.tokens import TokenIssuer, TokenVerifier, certificate_keys, jwks_keys, load_or_create_key

    token = config.token
    key = load_or_create_key(settings.token_key_path, token.algorithm)
    issuer = TokenIssuer(key, token.algorithm, token.issuer, token.service, token.expiry_s, token.refresh_expiry_s)
    trusted = [issuer.trusted_key()]
    for external in token.issuers:
        if external.certificates:
            trusted += certificate_keys(external.certificates, external.issuer)
        if external.jwks:
            trusted += jwks_keys(external.jwks, external.issuer)
    gate = TokenGate(TokenVerifier(trusted, token.service), rules, token.issuer, token.realm, token.path)
    return Auth(gate, TokenService(issuer, rules, passwords))
