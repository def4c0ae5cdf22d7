"""registry/ui/sessions.py: signed cookies that cannot be forged, altered or kept past their expiry, and a key
file that workers starting together agree on."""

from __future__ import annotations

import os
import stat
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from registry.ui.sessions import KEY_BYTES, Session, Sessions, load_or_create_key


def test_a_session_reads_back_as_it_was_issued() -> None:
    sessions = Sessions(os.urandom(32), 60)
    session = sessions.new("alice", "fp")
    assert sessions.decode(sessions.encode(session)) == session
    assert session.expires - 60 <= time.time() <= session.expires and len(session.csrf) >= 32
    anonymous = sessions.new(None)
    assert sessions.decode(sessions.encode(anonymous)) == anonymous and anonymous.csrf != session.csrf


def test_another_key_an_altered_payload_or_garbage_read_as_no_session() -> None:
    sessions, other = Sessions(os.urandom(32), 60), Sessions(os.urandom(32), 60)
    value = sessions.encode(sessions.new("alice"))
    payload, _, signature = value.partition(".")
    rooted = other.encode(Session("root", int(time.time()) + 60, "x")).partition(".")[0]
    for forged in (
        other.encode(other.new("alice")),
        f"{rooted}.{signature}",
        f"{payload}x.{signature}",
        payload,
        "",
        "a.b",
        "." * 5000,
        value[:-2],
    ):
        assert sessions.decode(forged) is None, forged[:40]
    assert sessions.decode(value) is not None


def test_an_expired_session_is_none() -> None:
    sessions = Sessions(os.urandom(32), 60)
    expired = Session("alice", int(time.time()) - 1, "token")
    assert sessions.decode(sessions.encode(expired)) is None


def test_the_key_is_created_private_once_and_read_afterwards(tmp_path: Path) -> None:
    path = str(tmp_path / "data" / "ui-session-key")
    key = load_or_create_key(path)
    assert len(key) == KEY_BYTES and stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert load_or_create_key(path) == key
    assert sorted(os.listdir(tmp_path / "data")) == ["ui-session-key"], "no temporary file left behind"


def test_workers_creating_the_key_together_all_get_the_same(tmp_path: Path) -> None:
    for attempt in range(5):
        path = str(tmp_path / f"key-{attempt}")
        with ThreadPoolExecutor(8) as pool:
            keys = set(pool.map(load_or_create_key, [path] * 8))
        assert len(keys) == 1


def test_a_short_key_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_bytes(b"short")
    with pytest.raises(ValueError, match="shorter"):
        load_or_create_key(str(path))
