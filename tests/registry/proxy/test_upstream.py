"""The upstream client (registry/proxy/upstream.py) against a real HTTP upstream: its auth (anonymous, Basic, the
token flow), credentials from each source, redirects without credentials, and every failure as one of its three
exceptions, quickly and without the password."""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import parse_qs

import anyio
import pytest

from registry.config import UpstreamSettings
from registry.proxy import upstream as upstream_module
from registry.proxy.upstream import Upstream, UpstreamDenied, UpstreamError, UpstreamMissing, UpstreamUnreachable
from tests.support.content import DOCKER_MANIFEST, digest_of, make_image
from tests.support.fake_upstream import SERVICE, FakeUpstream

pytestmark = pytest.mark.anyio

LIMIT = 4 << 20
PASSWORD = "Pa55-w0rd-only-the-upstream-knows"


@asynccontextmanager
async def client_of(
    server: FakeUpstream, connect_timeout_s: float = 2.0, read_timeout_s: float = 2.0, **settings: object
) -> AsyncIterator[Upstream]:
    """An Upstream of `server` with `settings` (UpstreamSettings' fields), closed afterwards."""
    upstream = Upstream(UpstreamSettings(prefix="up", url=server.url, **settings), connect_timeout_s, read_timeout_s)
    try:
        yield upstream
    finally:
        await upstream.close()


async def read_all(upstream: Upstream, name: str, digest: str) -> bytes:
    stream = await upstream.blob(name, digest)
    try:
        return b"".join([chunk async for chunk in stream.chunks()])
    finally:
        stream.close()


async def test_anonymous_reads_send_no_credentials() -> None:
    image = make_image(layers=2)
    async with FakeUpstream() as server, client_of(server) as upstream:
        digest = server.add_image("team/app", image, tag="1")
        fetched = await upstream.manifest("team/app", "1", LIMIT)
        assert (fetched.body, fetched.media_type, fetched.digest) == (image.manifest, image.media_type, digest)
        assert await upstream.manifest_digest("team/app", "1") == digest
        assert await upstream.blob_size("team/app", digest_of(image.layers[0])) == len(image.layers[0])
        assert await read_all(upstream, "team/app", digest_of(image.layers[0])) == image.layers[0]
        assert [r.authorization for r in server.requests] == [None] * 4
        assert [r.method for r in server.requests] == ["GET", "HEAD", "HEAD", "GET"]


async def test_basic_answers_the_challenge_then_sends_the_credentials_first() -> None:
    image = make_image()
    async with (
        FakeUpstream(auth="basic", username="puller", password=PASSWORD) as server,
        client_of(server, username="puller", password=PASSWORD) as upstream,
    ):
        server.add_image("team/app", image, tag="1")
        for _ in range(3):
            assert (await upstream.manifest("team/app", "1", LIMIT)).body == image.manifest
        basic = "Basic " + base64.b64encode(f"puller:{PASSWORD}".encode()).decode()
        assert [(r.authorization, r.status) for r in server.requests] == [
            (None, 401),
            (basic, 200),
            (basic, 200),
            (basic, 200),
        ]


async def test_the_token_flow_gets_a_token_per_scope_and_again_once_it_expired() -> None:
    one, two = make_image(), make_image()
    async with (
        FakeUpstream(auth="token", username="puller", password=PASSWORD, token_expires_in=1) as server,
        client_of(server, username="puller", password=PASSWORD) as upstream,
    ):
        server.add_image("team/one", one, tag="1")
        server.add_image("team/two", two, tag="1")
        assert (await upstream.manifest("team/one", "1", LIMIT)).body == one.manifest
        assert (await upstream.manifest("team/one", "1", LIMIT)).body == one.manifest
        assert server.count_kind("GET", "token") == 1, "the token of a scope is reused while it lasts"
        assert (await upstream.manifest("team/two", "1", LIMIT)).body == two.manifest
        assert server.count_kind("GET", "token") == 2, "another repository is another scope"
        await anyio.sleep(1.0)
        assert (await upstream.manifest("team/one", "1", LIMIT)).body == one.manifest
        assert server.count_kind("GET", "token") == 3, "an expired token is fetched again"

        tokens = [r for r in server.requests if r.path == "/token"]
        basic = "Basic " + base64.b64encode(f"puller:{PASSWORD}".encode()).decode()
        assert all(r.authorization == basic for r in tokens), "the token server gets the credentials"
        assert [parse_qs(r.query) for r in tokens[:2]] == [
            {"scope": ["repository:team/one:pull"], "service": [SERVICE]},
            {"scope": ["repository:team/two:pull"], "service": [SERVICE]},
        ]
        registry_calls = [r for r in server.requests if r.path != "/token"]
        assert all(r.authorization is None or r.authorization.startswith("Bearer ") for r in registry_calls)
        assert sum(r.status == 200 for r in registry_calls) == 4


@pytest.mark.parametrize("source", ["password", "password_file", "password_env"])
async def test_credentials_come_from_each_source(source: str, tmp_path, monkeypatch) -> None:
    image = make_image()
    if source == "password_file":
        (tmp_path / "secret").write_text(PASSWORD + "\n")
        given = {"password_file": str(tmp_path / "secret")}
    elif source == "password_env":
        monkeypatch.setenv("UPSTREAM_TEST_PASSWORD", PASSWORD)
        given = {"password_env": "UPSTREAM_TEST_PASSWORD"}
    else:
        given = {"password": PASSWORD}
    async with (
        FakeUpstream(auth="token", username="puller", password=PASSWORD) as server,
        client_of(server, username="puller", **given) as upstream,
    ):
        server.add_image("team/app", image, tag="1")
        assert (await upstream.manifest("team/app", "1", LIMIT)).body == image.manifest


@pytest.mark.parametrize("auth", ["basic", "token"])
async def test_a_redirected_blob_is_followed_without_credentials(auth: str) -> None:
    data = os.urandom(200_000)
    async with (
        FakeUpstream(auth=auth, username="puller", password=PASSWORD) as server,
        FakeUpstream() as cdn,
        client_of(server, username="puller", password=PASSWORD) as upstream,
    ):
        digest = server.add_blob("team/app", data)
        server.redirect_blobs_to(cdn)
        assert await upstream.blob_size("team/app", digest) == len(data)
        assert await read_all(upstream, "team/app", digest) == data
        assert [(r.method, r.status) for r in cdn.requests] == [("HEAD", 200), ("GET", 200)]
        assert [r.authorization for r in cdn.requests] == [None, None], "credentials never follow a redirect"
        to_server = [r for r in server.requests if r.path.endswith(digest)]
        assert [r.status for r in to_server] == [401, 307, 307], "one challenge, then credentials sent first"
        assert all(r.authorization for r in to_server[1:]), "the upstream itself gets them"


async def test_a_chain_of_redirects_is_followed() -> None:
    data = os.urandom(1000)
    async with FakeUpstream() as server, FakeUpstream() as edge, FakeUpstream() as cdn, client_of(server) as upstream:
        digest = server.add_blob("team/app", data)
        server.redirect_blobs_to(edge)
        edge.redirect_blobs_to(cdn)
        assert await read_all(upstream, "team/app", digest) == data


async def test_what_the_upstream_lacks_is_missing() -> None:
    async with FakeUpstream() as server, client_of(server) as upstream:
        server.add_image("team/app", make_image(), tag="1")
        absent = "sha256:" + "0" * 64
        for attempt in [
            upstream.manifest("team/app", "2", LIMIT),
            upstream.manifest("team/none", "1", LIMIT),
            upstream.manifest_digest("team/app", "2"),
            upstream.blob_size("team/app", absent),
            upstream.blob("team/app", absent),
        ]:
            with pytest.raises(UpstreamMissing) as e:
                await attempt
            assert e.value.url == server.url


@pytest.mark.parametrize("auth", ["basic", "token"])
async def test_wrong_credentials_are_denied(auth: str) -> None:
    async with (
        FakeUpstream(auth=auth, username="puller", password=PASSWORD) as server,
        client_of(server, username="puller", password="not-" + PASSWORD) as upstream,
    ):
        server.add_image("team/app", make_image(), tag="1")
        with pytest.raises(UpstreamDenied):
            await upstream.manifest("team/app", "1", LIMIT)


async def test_no_credentials_for_an_upstream_that_wants_them_is_denied() -> None:
    async with FakeUpstream(auth="basic", username="u", password=PASSWORD) as server, client_of(server) as upstream:
        server.add_image("team/app", make_image(), tag="1")
        with pytest.raises(UpstreamDenied):
            await upstream.manifest("team/app", "1", LIMIT)


async def test_a_403_is_denied() -> None:
    async with FakeUpstream(status=403) as server, client_of(server) as upstream:
        server.add_image("team/app", make_image(), tag="1")
        with pytest.raises(UpstreamDenied):
            await upstream.manifest("team/app", "1", LIMIT)


@pytest.mark.parametrize("status", [500, 502, 503, 429])
async def test_server_errors_and_rate_limits_are_unreachable(status: int) -> None:
    image = make_image()
    async with FakeUpstream(status=status) as server, client_of(server) as upstream:
        digest = server.add_image("team/app", image, tag="1")
        for attempt in [
            upstream.manifest("team/app", "1", LIMIT),
            upstream.manifest_digest("team/app", "1"),
            upstream.blob_size("team/app", digest),
            upstream.blob("team/app", digest),
        ]:
            with pytest.raises(UpstreamUnreachable) as e:
                await attempt
            assert e.value.url == server.url
        assert len(server.requests) == 4, "a status is no failure to connect: no pause after it"


async def test_a_closed_port_fails_at_once_and_then_pauses_the_upstream(monkeypatch) -> None:
    monkeypatch.setattr(upstream_module, "PAUSE_AFTER_FAILURE_S", 0.6)
    image = make_image()
    server = FakeUpstream()
    await server.start()
    server.add_image("team/app", image, tag="1")
    await server.stop()
    try:
        async with client_of(server) as upstream:
            started = time.monotonic()
            with pytest.raises(UpstreamUnreachable) as e:
                await upstream.manifest("team/app", "1", LIMIT)
            assert time.monotonic() - started < 1.0
            assert e.value.url == server.url
            await server.start()  # back, on the same port
            started = time.monotonic()
            with pytest.raises(UpstreamUnreachable):
                await upstream.manifest("team/app", "1", LIMIT)
            assert time.monotonic() - started < 0.25
            assert server.requests == [], "within the pause the upstream is not tried"
            await anyio.sleep(0.7)
            assert (await upstream.manifest("team/app", "1", LIMIT)).body == image.manifest
    finally:
        await server.stop()


async def test_an_upstream_that_stalls_is_unreachable_after_the_read_timeout() -> None:
    async with FakeUpstream(stall_s=10) as server, client_of(server, read_timeout_s=0.3) as upstream:
        server.add_image("team/app", make_image(), tag="1")
        started = time.monotonic()
        with pytest.raises(UpstreamUnreachable):
            await upstream.manifest("team/app", "1", LIMIT)
        assert 0.25 < time.monotonic() - started < 1.5


async def test_a_blob_body_that_stalls_breaks_off_after_the_read_timeout() -> None:
    data = os.urandom(8192)
    async with (
        FakeUpstream(piece_bytes=1024, hold=asyncio.Event()) as server,
        client_of(server, read_timeout_s=0.3) as upstream,
    ):
        digest = server.add_blob("team/app", data)
        stream = await upstream.blob("team/app", digest)
        got = b""
        started = time.monotonic()
        with pytest.raises(UpstreamUnreachable):
            async for chunk in stream.chunks():
                got += chunk
        stream.close()
        assert got == data[: len(got)] and len(got) < len(data)
        assert time.monotonic() - started < 1.5


async def test_a_body_cut_short_is_unreachable() -> None:
    data = os.urandom(10_000)
    async with FakeUpstream(piece_bytes=1000) as server, client_of(server) as upstream:
        digest = server.add_blob("team/app", data)
        server.short.add(digest)
        with pytest.raises(UpstreamUnreachable):
            await read_all(upstream, "team/app", digest)


async def test_a_manifest_over_the_limit_is_refused() -> None:
    image = make_image(layers=20)
    async with FakeUpstream() as server, client_of(server) as upstream:
        server.add_image("team/app", image, tag="1")
        with pytest.raises(UpstreamUnreachable, match="larger than"):
            await upstream.manifest("team/app", "1", len(image.manifest) - 1)
        assert (await upstream.manifest("team/app", "1", len(image.manifest))).body == image.manifest


async def test_the_password_is_in_no_message_and_no_log_line(caplog) -> None:
    caplog.set_level(logging.DEBUG)
    secrets = [PASSWORD, base64.b64encode(f"puller:{PASSWORD}".encode()).decode()]
    errors: list[UpstreamError] = []
    for auth in ["basic", "token"]:
        async with (
            FakeUpstream(auth=auth, username="puller", password=PASSWORD) as server,
            client_of(server, username="puller", password=PASSWORD) as upstream,
        ):
            server.add_image("team/app", make_image(), tag="1")
            server.add_image("team/other", make_image(), tag="1")
            await upstream.manifest("team/app", "1", LIMIT)
            server.status = 503
            with pytest.raises(UpstreamError) as e:
                await upstream.manifest("team/app", "1", LIMIT)
            errors.append(e.value)
            server.status, server.password = None, "rotated"  # our password is now the wrong one
            with pytest.raises(UpstreamError) as e:
                await upstream.manifest("team/other", "1", LIMIT)
            errors.append(e.value)
            assert all(s not in repr(upstream) for s in secrets)
    closed = FakeUpstream()
    await closed.start()
    await closed.stop()
    async with client_of(closed, username="puller", password=PASSWORD) as upstream:
        with pytest.raises(UpstreamError) as e:
            await upstream.manifest("team/app", "1", LIMIT)
        errors.append(e.value)
    assert [type(e) for e in errors] == [UpstreamUnreachable, UpstreamDenied] * 2 + [UpstreamUnreachable]
    for error in errors:
        for text in [str(error), repr(error), error.reason, str(error.__cause__), str(error.__context__)]:
            assert all(s not in text for s in secrets), text
    assert all(s not in caplog.text for s in secrets)


async def test_a_docker_manifest_keeps_its_media_type() -> None:
    image = make_image(DOCKER_MANIFEST)
    async with FakeUpstream() as server, client_of(server) as upstream:
        server.add_image("team/app", image, tag="1")
        assert (await upstream.manifest("team/app", "1", LIMIT)).media_type == DOCKER_MANIFEST
