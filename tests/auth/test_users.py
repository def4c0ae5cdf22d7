"""The htpasswd file: bcrypt hashes, reloads, fingerprints."""

from __future__ import annotations

import os

import pytest

from registry.auth.users import Htpasswd, UserError

pytestmark = pytest.mark.anyio


async def test_added_user_verifies_only_with_the_right_password(tmp_path) -> None:
    users = Htpasswd(str(tmp_path / "htpasswd"))
    users.set_password("alice", "s3cret")
    assert await users.verify("alice", "s3cret")
    assert not await users.verify("alice", "wrong")
    assert not await users.verify("mallory", "s3cret")
    line = (tmp_path / "htpasswd").read_text()
    assert line.startswith("alice:$2y$12$") and "s3cret" not in line
    assert os.stat(tmp_path / "htpasswd").st_mode & 0o777 == 0o600


async def test_changes_by_another_process_are_seen(tmp_path) -> None:
    path = str(tmp_path / "htpasswd")
    server, cli = Htpasswd(path), Htpasswd(path)
    assert server.users() == []
    cli.set_password("bob", "one")
    assert server.users() == ["bob"]
    assert await server.verify("bob", "one")
    before = server.fingerprint("bob")
    cli.set_password("bob", "two")
    assert not await server.verify("bob", "one")
    assert server.fingerprint("bob") != before
    assert cli.remove("bob") and not cli.remove("bob")
    assert not await server.verify("bob", "two")


def test_invalid_names_and_empty_passwords_are_refused(tmp_path) -> None:
    users = Htpasswd(str(tmp_path / "htpasswd"))
    for name in ["Alice", "a:b", "", "-x", "a b"]:
        with pytest.raises(UserError):
            users.set_password(name, "pw")
    with pytest.raises(UserError):
        users.set_password("alice", "")
