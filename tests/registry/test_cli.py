"""The `registry` command line."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from registry.cli import main


def test_config_check_prints_the_effective_settings(capsys, tmp_path, monkeypatch) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("http:\n  port: 6001\n")
    monkeypatch.setenv("REGISTRY_DATA_DIR", "/srv/registry")
    main(["config", "check", "--config", str(path)])
    printed = json.loads(capsys.readouterr().out)
    assert printed["http"]["port"] == 6001
    assert printed["data_dir"] == "/srv/registry"


def test_config_errors_exit_with_a_message(tmp_path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("http:\n  port: nope\n")
    with pytest.raises(SystemExit) as e:
        main(["config", "check", "--config", str(path)])
    assert "http.port" in str(e.value.code)


def test_help_lists_the_commands() -> None:
    out = subprocess.run([sys.executable, "-m", "registry.cli", "--help"], capture_output=True, text=True).stdout
    assert "serve" in out and "config" in out


def test_gc_and_repo_rm_commands(tmp_path, capsys) -> None:
    data = str(tmp_path / "data")
    main(["gc", "--dry-run", "--data-dir", data])
    assert "would remove 0 manifests, 0 blobs" in capsys.readouterr().out
    main(["gc", "--json", "--data-dir", data])
    report = json.loads(capsys.readouterr().out)
    assert report["dry_run"] is False and report["blobs_removed"] == 0
    main(["gc", "--json", "--collectors", "3", "--data-dir", data])
    assert json.loads(capsys.readouterr().out)["reviews"] == 0
    with pytest.raises(SystemExit) as e:
        main(["gc", "--collectors", "0", "--data-dir", data])
    assert "--collectors: 1 or more" in str(e.value.code)
    with pytest.raises(SystemExit) as e:
        main(["repo", "rm", "team/none", "--data-dir", data])
    assert "no repository" in str(e.value.code)


def test_repo_rm_deletes_the_tags_manifests_and_uploads_with_their_bytes(tmp_path, capsys) -> None:
    import asyncio
    import os

    from tests.support.app import running_app
    from tests.support.backends import disk_and_sqlite
    from tests.support.content import make_image, push_image

    settings = disk_and_sqlite(tmp_path)

    async def push() -> None:
        async with running_app(settings) as (_, client):
            await push_image(client, "team/app", make_image(), "latest")
            r = await client.post("/v2/team/app/blobs/uploads/")
            await client.patch(r.headers["Location"], content=b"part of a layer")

    asyncio.run(push())
    uploads = os.path.join(settings.storage_root, "uploads")
    assert os.listdir(uploads)
    main(["repo", "rm", "team/app", "--data-dir", settings.data_dir])
    assert "removed team/app: 1 tags, 1 manifests, 1 uploads" in capsys.readouterr().out
    assert not os.path.exists(uploads) or not os.listdir(uploads)

    async def listed() -> int:
        async with running_app(settings) as (_, client):
            return (await client.get("/v2/team/app/tags/list")).status_code

    assert asyncio.run(listed()) == 404


def test_user_commands(tmp_path, capsys, monkeypatch) -> None:
    import io

    data = str(tmp_path / "data")
    monkeypatch.setattr("sys.stdin", io.StringIO("s3cret\n"))
    main(["user", "add", "alice", "--password-stdin", "--data-dir", data])
    main(["user", "list", "--data-dir", data])
    assert capsys.readouterr().out.splitlines()[-1] == "alice"
    main(["user", "rm", "alice", "--data-dir", data])
    with pytest.raises(SystemExit):
        main(["user", "rm", "alice", "--data-dir", data])


@pytest.mark.parametrize("server", ["granian", "uvicorn"])
def test_serve_refuses_a_mismatched_key_with_one_line(tmp_path, server: str) -> None:
    from tests.support.tls import make_server_certificate, other_key

    pair = make_server_certificate(tmp_path / "certs", "127.0.0.1")
    config = tmp_path / "c.yaml"
    config.write_text(
        f"http:\n  server: {server}\n  tls_certificate: {pair.certificate}\n"
        f"  tls_key: {other_key(tmp_path / 'other.key')}\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "registry.cli", "serve", "--config", str(config), "--data-dir", str(tmp_path / "d")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        f"registry: http.tls_key {tmp_path / 'other.key'} is not the private key of "
        f"http.tls_certificate {pair.certificate}"
    )
    assert "Traceback" not in done.stderr


def test_commands_that_change_storage_refuse_while_read_only(tmp_path, capsys) -> None:
    data = str(tmp_path / "data")
    config = tmp_path / "c.yaml"
    config.write_text("maintenance:\n  read_only: true\n")
    for command in (["gc"], ["check", "--repair"], ["repo", "rm", "team/app"]):
        with pytest.raises(SystemExit) as e:
            main([*command, "--config", str(config), "--data-dir", data])
        assert "maintenance.read_only is on" in str(e.value.code), command
    main(["gc", "--dry-run", "--config", str(config), "--data-dir", data])
    assert "would remove 0 manifests" in capsys.readouterr().out


def test_events_status_shows_pending_delivered_and_failed_per_endpoint(tmp_path, capsys) -> None:
    import asyncio

    from tests.support.app import running_app
    from tests.support.backends import disk_and_sqlite
    from tests.support.content import push_blob
    from tests.support.receiver import Receiver, hooked

    receiver = Receiver()  # never up: every attempt fails
    settings = hooked(disk_and_sqlite(tmp_path), receiver)

    async def push() -> None:
        async with running_app(settings) as (_, client):
            await push_blob(client, "team/app", b"one")
            await push_blob(client, "team/app", b"two")
            await asyncio.sleep(0.3)

    asyncio.run(push())
    config = tmp_path / "c.yaml"
    config.write_text(
        "events:\n  endpoints:\n"
        f"    - name: hook0\n      url: {receiver.url}\n"
        f"    - name: quiet\n      url: {receiver.url}\n"
    )
    data = ["--config", str(config), "--data-dir", settings.data_dir]
    main(["events", "status", "--json", *data])
    hook, quiet = json.loads(capsys.readouterr().out)
    assert (hook["name"], hook["pending"], hook["delivered"], hook["configured"]) == ("hook0", 2, 0, True)
    assert hook["failed"] >= 1 and "Connect" in hook["last_error"] and hook["oldest_pending_age_s"] >= 0.3
    assert (quiet["name"], quiet["pending"], quiet["failed"]) == ("quiet", 0, 0)
    main(["events", "status", *data])
    text = capsys.readouterr().out
    assert "hook0\n  pending: 2, the oldest" in text and "failed attempts:" in text and "last error" in text
    main(["repo", "rm", "team/app", *data])  # reported too, by the local user
    capsys.readouterr()
    main(["events", "status", "--json", *data])
    assert json.loads(capsys.readouterr().out)[0]["pending"] == 3
