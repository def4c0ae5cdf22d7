"""Access rules: an ordered list of (who, repository glob, actions); the first match wins.

who: a user name, `group:NAME`, `anonymous` (no credentials) or `*` (any signed-in user).
repository: a glob where `*` matches within one path component, `**` across components, and
`{user}` stands for the caller's name (so `{user}/**` gives everyone a namespace of their own).
actions: pull, push, delete, or `*` for all three.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

from registry.auth.access import REPOSITORY_ACTIONS

ANONYMOUS = "anonymous"


@dataclass(frozen=True, slots=True)
class Rule:
    who: tuple[str, ...]
    repository: str
    actions: frozenset[str]


@lru_cache(maxsize=1024)
def _glob(pattern: str) -> re.Pattern[str]:
    out = []
    for part in re.split(r"(\*\*|\*)", pattern):
        out.append(".*" if part == "**" else "[^/]*" if part == "*" else re.escape(part))
    return re.compile("".join(out))


def make_rule(who: str | Sequence[str], repository: str, actions: Sequence[str]) -> Rule:
    """A rule from config values; raises ValueError on unknown actions or empty fields."""
    names = (who,) if isinstance(who, str) else tuple(who)
    expanded = set()
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


class Rules:
    """Decides the repository actions a caller has; users' groups come from `groups`."""

    def __init__(self, rules: Sequence[Rule], groups: Mapping[str, Sequence[str]]):
        self.rules = list(rules)
        self.groups_of: dict[str, set[str]] = {}
        for group, members in groups.items():
            for member in members:
                self.groups_of.setdefault(member, set()).add(group)

    def _is(self, who: str, user: str | None) -> bool:
        if user is None:
            return who == ANONYMOUS
        if who == "*" or who == user:
            return True
        return who.startswith("group:") and who[6:] in self.groups_of.get(user, ())

    def actions(self, user: str | None, repository: str) -> frozenset[str]:
        """The actions `user` (None: anonymous) has on `repository` by the first matching rule."""
        for rule in self.rules:
            if not any(self._is(who, user) for who in rule.who):
                continue
            pattern = rule.repository
            if "{user}" in pattern:
                if user is None:
                    continue
                pattern = pattern.replace("{user}", user)
            if _glob(pattern).fullmatch(repository):
                return rule.actions
        return frozenset()
