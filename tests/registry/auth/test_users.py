"""The htpasswd file: bcrypt hashes, reloads, fingerprints."""

from __future__ import annotations

import asyncio
import os
import threading
import time

import bcrypt
import pytest

from registry.auth.users import Htpasswd, UserError
from registry.errors import TooManyRequests

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


async def test_a_password_longer_than_72_bytes_is_checked_by_its_first_72_as_htpasswd_does(tmp_path) -> None:
    long = "p" * 72 + "ignored by bcrypt"
    hashed = bcrypt.hashpw(long.encode()[:72], bcrypt.gensalt(4))  # what `htpasswd -B` stores for it
    (tmp_path / "htpasswd").write_bytes(b"alice:$2y$" + hashed[4:] + b"\n")
    users = Htpasswd(str(tmp_path / "htpasswd"))
    assert await users.verify("alice", long)
    assert await users.verify("alice", "p" * 72)
    assert not await users.verify("alice", "p" * 71)
    assert not await users.verify("mallory", long * 3)


def test_a_password_longer_than_bcrypt_can_use_is_refused_when_set(tmp_path) -> None:
    users = Htpasswd(str(tmp_path / "htpasswd"))
    with pytest.raises(UserError, match="longer than 72 bytes"):
        users.set_password("alice", "é" * 37)  # 74 bytes in UTF-8
    users.set_password("alice", "x" * 72)
    assert users.users() == ["alice"]


async def test_password_checks_run_on_their_own_bounded_threads(tmp_path) -> None:
    users = Htpasswd(str(tmp_path / "htpasswd"), threads=2, queue=3)
    users.set_password("alice", "right")
    threads: set[str] = set()
    original = bcrypt.checkpw

    async def check(password: str) -> bool:
        return await users.verify("alice", password)

    bcrypt.checkpw = lambda *a: threads.add(threading.current_thread().name) or original(*a)  # type: ignore[assignment]
    try:
        outcomes = await asyncio.gather(*(check(f"wrong{i}") for i in range(8)), return_exceptions=True)
    finally:
        bcrypt.checkpw = original  # type: ignore[assignment]
    refused = [o for o in outcomes if isinstance(o, TooManyRequests)]
    assert len(refused) == 3 and refused[0].headers["Retry-After"] == "1"
    assert outcomes.count(False) == 5
    assert threads and all(name.startswith("password-hash") for name in threads)


async def test_a_removed_user_is_seen_within_a_second_without_a_stat_per_call(tmp_path) -> None:
    path = str(tmp_path / "htpasswd")
    server, cli = Htpasswd(path), Htpasswd(path)
    cli.set_password("bob", "pw")
    assert server.has_user("bob")
    cli.remove("bob")
    assert server.has_user("bob")  # looked at the file less than a second ago
    time.sleep(1.05)
    assert not server.has_user("bob")
