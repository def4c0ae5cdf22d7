"""The built-in token server: signs in users and grants what the rules allow of what they ask."""

from __future__ import annotations

from registry.auth.access import Access, access
from registry.auth.gate import Passwords
from registry.auth.rules import Rules
from registry.auth.tokens import TOKEN_MAX_BYTES, InvalidToken, TokenIssuer
from registry.errors import TokenRequestInvalid, Unauthorized


class TokenServer:
    """Answers token requests for `issuer.audience`, signing in users with `passwords`."""

    def __init__(self, issuer: TokenIssuer, rules: Rules, passwords: Passwords, realm: str):
        self.issuer, self.rules, self.passwords = issuer, rules, passwords
        self.challenge = {"WWW-Authenticate": f'Basic realm="{realm}"'}

    @property
    def audience(self) -> str:
        """The audience of the tokens served: a request's `service` parameter, when given, must name it."""
        return self.issuer.audience

    def refuse(self, message: str, detail: object = None) -> Unauthorized:
        """401 with a Basic challenge, as an answer to credentials the server cannot accept."""
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
            raise self.refuse("invalid refresh token", {"reason": str(e)}) from None
        if self.passwords.htpasswd.fingerprint(user) != fingerprint:
            raise self.refuse("the refresh token is no longer valid; sign in again")
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

    def respond(self, user: str | None, requested: list[Access], offline: bool) -> dict[str, object]:
        """The token response: `token` and `access_token` (the same JWT), its lifetime, and a
        `refresh_token` when a signed-in user asked for offline access. Raises TokenRequestInvalid
        when the token would be larger than the registry accepts (TOKEN_MAX_BYTES)."""
        granted = self.grant(user, requested)
        issued = self.issuer.issue(user, granted)
        if len(issued.token) > TOKEN_MAX_BYTES:
            raise TokenRequestInvalid(
                {"token_bytes": len(issued.token)}, message="the scopes asked for do not fit in one token"
            )
        body: dict[str, object] = {
            "token": issued.token,
            "access_token": issued.token,
            "expires_in": issued.expires_in,
            "issued_at": issued.issued_at,
            "scope": " ".join(str(a) for a in granted),
        }
        fingerprint = self.passwords.htpasswd.fingerprint(user) if offline and user else None
        if user and fingerprint is not None:
            body["refresh_token"] = self.issuer.issue_refresh(user, fingerprint)
        return body
