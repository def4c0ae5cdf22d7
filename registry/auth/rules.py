"""Access rules: an ordered list of `Rule`s (their syntax: registry/rule_syntax.py); the first match wins."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from functools import lru_cache

from registry.rule_syntax import ANONYMOUS, Rule


@lru_cache(maxsize=1024)
def _glob(pattern: str) -> re.Pattern[str]:
    out: list[str] = []
    for part in re.split(r"(\*\*|\*)", pattern):
        out.append(".*" if part == "**" else "[^/]*" if part == "*" else re.escape(part))
    return re.compile("".join(out))


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
