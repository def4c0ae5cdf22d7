"""The built-in token service: signs in users and grants what the rules allow of what they ask."""

from __future__ import annotations

import re

from registry.auth.access import CATALOG, Access, access, parse_scope
from registry.auth.gate import Passwords
from registry.auth.rules import Rules
from registry.auth.tokens import TOKEN_MAX_BYTES, InvalidToken, TokenIssuer
from registry.errors import RegistryError, Unauthorized
from registry.names import NAME_MAX_LENGTH, NAME_RE

SCOPES_MAX = 64  # scopes in one token request (`docker` asks for one or two)
SCOPE_TYPE_RE = re.compile(r"[a-z]+(?:\([a-z0-9]+\))?")  # `repository`, `repository(plugin)`, `registry`
ACTION_RE = re.compile(r"[a-z*]{1,16}")
ACTIONS_MAX = 8


class TokenRequestInvalid(RegistryError):
    code, status, message = "UNSUPPORTED", 400, "invalid token request"


def _valid(scope: Access) -> bool:
    if scope == CATALOG:
        return True
    return (
        SCOPE_TYPE_RE.fullmatch(scope.type) is not None
        and len(scope.name) <= NAME_MAX_LENGTH
        and NAME_RE.fullmatch(scope.name) is not None
        and len(scope.actions) <= ACTIONS_MAX
        and all(ACTION_RE.fullmatch(a) for a in scope.actions)
    )


def requested_scopes(values: list[str]) -> list[Access]:
    """The scopes of a token request (each value may hold several, separated by spaces); raises
    TokenRequestInvalid for more than SCOPES_MAX, or one whose name is not a repository name (or
    `registry:catalog:*`)."""
    scopes = [s for value in values for s in value.split()]
    if len(scopes) > SCOPES_MAX:
        raise TokenRequestInvalid({"scopes": len(scopes)}, message=f"at most {SCOPES_MAX} scopes per request")
    parsed = []
    for scope in scopes:
        entry = parse_scope(scope)
        if entry is None or not _valid(entry):
            raise TokenRequestInvalid({"scope": scope[:300]}, message="invalid scope")
        parsed.append(entry)
    return parsed


class TokenService:
    def __init__(self, issuer: TokenIssuer, rules: Rules, passwords: Passwords, realm: str):
        self.issuer, self.rules, self.passwords = issuer, rules, passwords
        self.challenge = {"WWW-Authenticate": f'Basic realm="{realm}"'}

    def refuse(self, message: str, detail: object = None) -> Unauthorized:
        """401 with a Basic challenge, as an answer to credentials the service cannot accept."""
        return Unauthorized(detail, message=message, headers=self.challenge)

    async def sign_in(self, user: str, password: str, address: str) -> str:
        """The user, once the password is right; raises Unauthorized or TooManyRequests."""
        if not await self.passwords.check(user, password, address):
            raise self.refuse("incorrect username or password")
        return user

    def redeem(self, refresh_token: str) -> str:
        """The user of a refresh token we issued, while their password is unchanged."""
        try:
            user, fingerprint = self.issuer.check_refresh(refresh_token)
        except InvalidToken as e:
            raise Unauthorized({"reason": str(e)}, message="invalid refresh token") from None
        if self.passwords.htpasswd.fingerprint(user) != fingerprint:
            raise Unauthorized(message="the refresh token is no longer valid; sign in again")
        return user

    def grant(self, user: str | None, requested: list[Access]) -> list[Access]:
        """What of `requested` the rules give `user` (None: anonymous)."""
        granted = []
        for wanted in requested:
            if wanted.type == "repository":
                allowed = self.rules.actions(user, wanted.name)
                actions = allowed if "*" in wanted.actions else [a for a in wanted.actions if a in allowed]
                if actions:
                    granted.append(access("repository", wanted.name, actions))
            elif wanted.type == "registry" and wanted.name == "catalog":
                granted.append(access("registry", "catalog", ["*"]))  # the listing itself is filtered
        return granted

    def respond(self, user: str | None, requested: list[Access], offline: bool) -> dict:
        """The token response: `token` and `access_token` (the same JWT), its lifetime, and a
        `refresh_token` when a signed-in user asked for offline access. Raises TokenRequestInvalid
        when the token would be larger than the registry accepts (TOKEN_MAX_BYTES)."""
        granted = self.grant(user, requested)
        issued = self.issuer.issue(user, granted)
        if len(issued.token) > TOKEN_MAX_BYTES:
            raise TokenRequestInvalid(
                {"token_bytes": len(issued.token)}, message="the scopes asked for do not fit in one token"
            )
        body = {
            "token": issued.token,
            "access_token": issued.token,
            "expires_in": issued.expires_in,
            "issued_at": issued.issued_at,
            "scope": " ".join(str(a) for a in granted),
        }
        fingerprint = self.passwords.htpasswd.fingerprint(user) if user else None
        if offline and fingerprint is not None:
            body["refresh_token"] = self.issuer.issue_refresh(user, fingerprint)
        return body
