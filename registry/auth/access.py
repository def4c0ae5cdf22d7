"""Access as the Docker token spec names it: `repository:team/app:pull,push`, `registry:catalog:*`."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from registry.errors import TokenRequestInvalid
from registry.names import NAME_MAX_LENGTH, NAME_RE


@dataclass(frozen=True, slots=True)
class Access:
    """Actions on one resource; `actions` is sorted and free of duplicates."""

    type: str
    name: str
    actions: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.type}:{self.name}:{','.join(self.actions)}"

    def claim(self) -> dict[str, object]:
        """The form of an entry of a token's `access` claim."""
        return {"type": self.type, "name": self.name, "actions": list(self.actions)}


def access(type_: str, name: str, actions: Iterable[str]) -> Access:
    return Access(type_, name, tuple(sorted(set(actions))))


CATALOG = access("registry", "catalog", ["*"])

SCOPES_MAX = 64  # scopes in one token request (`docker` asks for one or two)
SCOPE_TYPE_RE = re.compile(r"[a-z]+(?:\([a-z0-9]+\))?")  # `repository`, `repository(plugin)`, `registry`
ACTION_RE = re.compile(r"[a-z*]{1,16}")
ACTIONS_MAX = 8


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


def parse_scope(scope: str) -> Access | None:
    """Parse one scope `type:name:actions`; the name may hold `:` (a port). None when malformed."""
    type_, _, rest = scope.partition(":")
    name, _, actions = rest.rpartition(":")
    if not type_ or not name or not actions:
        return None
    return access(type_, name, [a for a in actions.split(",") if a])


def parse_scopes(values: list[str]) -> list[Access]:
    """Every well-formed scope in `values`, each of which may hold several separated by spaces."""
    parsed = (parse_scope(s) for value in values for s in value.split())
    return [a for a in parsed if a is not None]


def covers(granted: list[Access], needed: Access) -> bool:
    """Whether the `granted` entries together allow every action of `needed`."""
    actions: set[str] = set()
    for entry in granted:
        if entry.type == needed.type and entry.name == needed.name:
            actions.update(entry.actions)
    return "*" in actions or set(needed.actions) <= actions


def from_claim(claim: object) -> list[Access]:
    """The entries of a token's `access` claim; malformed entries are dropped."""
    entries = []
    for item in claim if isinstance(claim, list) else []:
        if (
            isinstance(item, dict)
            and isinstance(item.get("type"), str)
            and isinstance(item.get("name"), str)
            and isinstance(item.get("actions"), list)
            and all(isinstance(a, str) for a in item["actions"])
        ):
            entries.append(access(item["type"], item["name"], item["actions"]))
    return entries
