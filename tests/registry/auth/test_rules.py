"""Access rules: who, repository globs, first match wins."""

from __future__ import annotations

import pytest

from registry.auth.rules import Rules
from registry.rule_syntax import make_rule

ALL = {"pull", "push", "delete"}


@pytest.fixture
def rules() -> Rules:
    return Rules(
        [
            make_rule("anonymous", "public/**", ["pull"]),
            make_rule("group:admins", "**", ["*"]),
            make_rule("*", "{user}/**", ["*"]),
            make_rule(["bob", "carol"], "team-b/*", ["pull", "push"]),
            make_rule("*", "public/**", ["pull"]),
            make_rule("dave", "public/**", ["*"]),
        ],
        {"admins": ["root"]},
    )


def test_anonymous_gets_only_what_names_anonymous(rules: Rules) -> None:
    assert rules.actions(None, "public/base") == {"pull"}
    assert rules.actions(None, "public/a/b/c") == {"pull"}
    assert rules.actions(None, "alice/app") == set()


def test_user_namespaces(rules: Rules) -> None:
    assert rules.actions("alice", "alice/app") == ALL
    assert rules.actions("alice", "alice/deep/app") == ALL
    assert rules.actions("alice", "bob/app") == set()
    assert rules.actions("alice", "aliceX/app") == set()


def test_single_star_stays_within_a_component(rules: Rules) -> None:
    assert rules.actions("bob", "team-b/app") == {"pull", "push"}
    assert rules.actions("bob", "team-b/app/sub") == set()


def test_groups(rules: Rules) -> None:
    assert rules.actions("root", "anything/at/all") == ALL


def test_first_match_wins(rules: Rules) -> None:
    assert rules.actions("dave", "public/base") == {"pull"}  # the `*` rule comes before dave's


def test_bad_rules_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown action"):
        make_rule("*", "**", ["write"])
    with pytest.raises(ValueError):
        make_rule([], "**", ["pull"])


def test_globs_are_not_regular_expressions() -> None:
    rules = Rules([make_rule("*", "a.b/*", ["pull"])], {})
    assert rules.actions("x", "a.b/c") == {"pull"}
    assert rules.actions("x", "aXb/c") == set()
