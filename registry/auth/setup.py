"""Builds the gate and the token server that the settings describe."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from registry.auth.clients import ClientAddresses
from registry.auth.gate import BasicGate, OpenGate, Passwords
from registry.auth.limiter import LoginLimiter
from registry.auth.rules import Rules
from registry.auth.users import Htpasswd
from registry.config import Settings
from registry.rule_syntax import make_rule
from storage.metadata import Limits, Metadata


@dataclass
class Auth:
    gate: OpenGate | BasicGate | TokenGate
    token_server: TokenServer | None  # None unless mode is `token`


if TYPE_CHECKING:
    from registry.auth.token_gate import TokenGate
    from registry.auth.token_server import TokenServer


def build_auth(settings: Settings, metadata: Metadata) -> Auth:
    """The auth parts for `settings`, counting failed logins in `metadata`; reads (or, for tokens,
    creates) key files."""
    config = settings.auth
    if config.mode == "none":
        return Auth(OpenGate(), None)
    rules = Rules([make_rule(r.who, r.repository, r.actions) for r in config.rules], config.groups)
    limits = Limits(
        config.login_attempts, config.login_attempts_per_address, config.login_attempts_per_user, config.login_window_s
    )
    users = Htpasswd(settings.htpasswd_path, config.password_threads, config.password_queue)
    passwords = Passwords(users, LoginLimiter(metadata.logins, limits), ClientAddresses(settings.http.trusted_proxies))
    if config.mode == "htpasswd":
        return Auth(BasicGate(passwords, rules, config.realm), None)
    # Imported here: the JWT and crypto libraries cost about 10 MiB a process, only worth it for tokens.
    from registry.auth.token_gate import TokenGate
    from registry.auth.token_server import TokenServer
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
    gate = TokenGate(TokenVerifier(trusted, token.service), rules, token.issuer, token.realm, token.path, passwords)
    return Auth(gate, TokenServer(issuer, rules, passwords, config.realm))
