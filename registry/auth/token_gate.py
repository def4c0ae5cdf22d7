"""The gate of mode `token`: a Bearer token (ours or a trusted issuer's) whose `access` claim covers
what the route needs."""

from __future__ import annotations

from starlette.requests import Request

from registry.auth.access import Access, covers
from registry.auth.gate import Passwords, Principal, basic_user, rules_allow, rules_principal
from registry.auth.rules import Rules
from registry.auth.tokens import Claims, InvalidToken, TokenVerifier
from registry.edge import valid_host
from registry.errors import Denied, Unauthorized
from registry.rule_syntax import PULL
from storage.metadata import Visibility, literal_glob


class TokenGate:
    """Mode `token`: a Bearer token whose `access` claim covers what the route needs."""

    def __init__(
        self,
        verifier: TokenVerifier,
        rules: Rules,
        own_issuer: str,
        realm: str | None,
        token_path: str,
        passwords: Passwords,
    ):
        self.verifier, self.rules, self.own_issuer = verifier, rules, own_issuer
        self.passwords, self.users = passwords, passwords.htpasswd
        self.realm, self.token_path, self.audience = realm, token_path, verifier.audience

    def _challenge(
        self, request: Request, needed: list[Access], error: str | None, message: str | None = None
    ) -> Unauthorized:
        host = valid_host(request.headers.get("host")) or "localhost"  # the edge already refused any other
        realm = self.realm or f"{request.url.scheme}://{host}{self.token_path}"
        params = [f'realm="{realm}"', f'service="{self.audience}"']  # the token spec calls the audience service
        if needed:
            params.append(f'scope="{" ".join(str(a) for a in needed)}"')
        if error:
            params.append(f'error="{error}"')
        detail = [a.claim() for a in needed] or None
        return Unauthorized(detail, message=message, headers={"WWW-Authenticate": "Bearer " + ",".join(params)})

    def _claims(self, request: Request, needed: list[Access], token: str) -> Claims:
        """The claims of a token of ours or of a trusted issuer, whose user (of ours) still exists."""
        try:
            claims = self.verifier.verify(token)
        except InvalidToken:
            raise self._challenge(request, needed, "invalid_token") from None
        own = claims.issuer == self.own_issuer
        if own and claims.subject is not None and not self.users.has_user(claims.subject):
            raise self._challenge(request, needed, "invalid_token")  # the user was removed since
        return claims

    async def identify(self, request: Request) -> Principal:
        """The caller without asking for any access (`docker search` follows no challenge): a Bearer
        token's user, Basic credentials' user (an engine without an identity token sends those), or
        anonymous without either; 401 for wrong ones."""
        header = request.headers.get("authorization", "")
        if header[:7].lower() == "bearer ":
            return self._principal(self._claims(request, [], header[7:].strip()))
        user = await basic_user(self.passwords, request, lambda reason: self._challenge(request, [], None, reason))
        return rules_principal(self.rules, user)

    async def admit(self, request: Request, needed: list[Access]) -> Principal:
        header = request.headers.get("authorization", "")
        if header[:7].lower() != "bearer ":
            raise self._challenge(request, needed, None)
        claims = self._claims(request, needed, header[7:].strip())
        own = claims.issuer == self.own_issuer
        for access in needed:
            if not covers(claims.access, access):
                if own and claims.subject is not None and not rules_allow(self.rules, claims.subject, access):
                    raise Denied({"scope": str(access)})
                raise self._challenge(request, needed, "insufficient_scope")
        return self._principal(claims)

    def _principal(self, claims: Claims) -> Principal:
        """Our users' rights by the rules (as they are now); another issuer's by its token's claims."""
        if claims.issuer == self.own_issuer:
            return rules_principal(self.rules, claims.subject)
        granted = claims.access
        pulled = {a.name for a in granted if a.type == "repository" and ("*" in a.actions or PULL in a.actions)}
        shown = Visibility(tuple((literal_glob(name), True) for name in sorted(pulled)))
        return Principal(
            claims.subject,
            lambda repository, action: covers(granted, Access("repository", repository, (action,))),
            lambda: shown,
        )
