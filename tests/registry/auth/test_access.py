"""Scopes and access claims."""

from __future__ import annotations

from registry.auth.access import access, covers, from_claim, parse_scope, parse_scopes


def test_scope_round_trip_with_a_port_in_the_name() -> None:
    parsed = parse_scope("repository:localhost:5000/team/app:push,pull")
    assert parsed == access("repository", "localhost:5000/team/app", ["pull", "push"])
    assert str(parsed) == "repository:localhost:5000/team/app:pull,push"


def test_malformed_scopes_are_dropped() -> None:
    assert parse_scope("repository") is None
    assert parse_scope("repository:name") is None
    assert parse_scope(":name:pull") is None
    assert parse_scopes(["repository:a:pull repository:b:push", "junk", "registry:catalog:*"]) == [
        access("repository", "a", ["pull"]),
        access("repository", "b", ["push"]),
        access("registry", "catalog", ["*"]),
    ]


def test_covers_joins_entries_and_honours_wildcards() -> None:
    granted = [access("repository", "a", ["pull"]), access("repository", "a", ["push"])]
    assert covers(granted, access("repository", "a", ["pull", "push"]))
    assert not covers(granted, access("repository", "a", ["delete"]))
    assert not covers(granted, access("repository", "b", ["pull"]))
    assert covers([access("repository", "a", ["*"])], access("repository", "a", ["delete"]))


def test_claims_with_wrong_shapes_grant_nothing() -> None:
    assert from_claim("repository:a:pull") == []
    assert from_claim([{"type": "repository", "name": "a", "actions": "pull"}]) == []
    assert from_claim([{"type": "repository", "name": "a", "actions": ["pull"]}, 5]) == [
        access("repository", "a", ["pull"])
    ]
