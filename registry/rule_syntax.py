"""Access rules as the settings write them, and the check that turns one into a `Rule`.

A rule is (who, repository glob, actions); `registry.auth.rules` decides with a list of them, first match wins.
who: a user name, `group:NAME`, `anonymous` (no credentials) or `*` (any signed-in user).
repository: a glob where `*` matches within one path component, `**` across components, and
`{user}` stands for the caller's name (so `{user}/**` gives everyone a namespace of their own).
actions: pull, push, delete, or `*` for all three.

It imports nothing of the registry, so that `registry.config` can check rules without depending on `registry.auth`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

PULL, PUSH, DELETE = "pull", "push", "delete"
REPOSITORY_ACTIONS = frozenset({PULL, PUSH, DELETE})
ANONYMOUS = "anonymous"


@dataclass(frozen=True, slots=True)
class Rule:
    who: tuple[str, ...]
    repository: str
    actions: frozenset[str]


def make_rule(who: str | Sequence[str], repository: str, actions: Sequence[str]) -> Rule:
    """A rule from config values; raises ValueError on unknown actions or empty fields."""
    names = (who,) if isinstance(who, str) else tuple(who)
    expanded: set[str] = set()
    for action in actions:
        if action == "*":
            expanded |= REPOSITORY_ACTIONS
        elif action in REPOSITORY_ACTIONS:
            expanded.add(action)
        else:
            raise ValueError(f"unknown action {action!r} (pull, push, delete, *)")
    if not names or not all(names) or not repository:
        raise ValueError("a rule needs who and repository")
    return Rule(names, repository, frozenset(expanded))
