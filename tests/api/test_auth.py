"""Every endpoint under each auth mode: allowed, 401 with the right challenge, 403 DENIED."""

from __future__ import annotations

import asyncio
import base64
import json
import sqlite3
import time
from collections.abc import AsyncIterator

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.applications import Starlette

from registry.auth.access import access
from registry.auth.users import Htpasswd
from registry.config import IssuerSettings, Settings
from tests.support.app import app_client, running_app
from tests.support.content import digest_of, error_codes, make_image, push_blob, push_image
from tests.support.users import basic, bearer, configure, htpasswd_bytes

pytestmark = pytest.mark.anyio

DIGEST = digest_of(b"x")


@pytest.fixture(scope="module")
def htpasswd_file(tmp_path_factory) -> bytes:
    return htpasswd_bytes(tmp_path_factory.mktemp("users"))


@pytest.fixture
async def token_client(settings: Settings, htpasswd_file: bytes) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(configure(settings, "token", htpasswd_file)) as client:
        yield client


@pytest.fixture
async def basic_client(settings: Settings, htpasswd_file: bytes) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(configure(settings, "htpasswd", htpasswd_file)) as client:
        yield client


async def token_for(client: httpx.AsyncClient, user: str | None, *scopes: str) -> str:
    headers = basic(user, f"{user}-pw") if user else {}
    r = await client.get("/auth/token", params={"service": "registry", "scope": list(scopes)}, headers=headers)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["token"] == body["access_token"] and body["expires_in"] == 300 and body["issued_at"]
    return body["token"]


ROUTES = [
    ("GET", "/v2/alice/app/tags/list", "repository:alice/app:pull"),
    ("GET", "/v2/alice/app/manifests/latest", "repository:alice/app:pull"),
    ("HEAD", "/v2/alice/app/manifests/latest", "repository:alice/app:pull"),
    ("PUT", "/v2/alice/app/manifests/latest", "repository:alice/app:pull,push"),
    ("DELETE", "/v2/alice/app/manifests/latest", "repository:alice/app:delete"),
    ("GET", f"/v2/alice/app/blobs/{DIGEST}", "repository:alice/app:pull"),
    ("DELETE", f"/v2/alice/app/blobs/{DIGEST}", "repository:alice/app:delete"),
    ("POST", "/v2/alice/app/blobs/uploads/", "repository:alice/app:pull,push"),
    ("PATCH", "/v2/alice/app/blobs/uploads/x", "repository:alice/app:pull,push"),
    ("PUT", "/v2/alice/app/blobs/uploads/x", "repository:alice/app:pull,push"),
    ("GET", "/v2/alice/app/blobs/uploads/x", "repository:alice/app:pull,push"),
    ("DELETE", "/v2/alice/app/blobs/uploads/x", "repository:alice/app:pull,push"),
    ("GET", f"/v2/alice/app/referrers/{DIGEST}", "repository:alice/app:pull"),
    ("GET", "/v2/_catalog", "registry:catalog:*"),
]


async def test_base_endpoint_challenges_without_a_token(token_client: httpx.AsyncClient) -> None:
    r = await token_client.get("/v2/")
    assert r.status_code == 401 and error_codes(r) == ["UNAUTHORIZED"]
    assert r.headers["WWW-Authenticate"] == 'Bearer realm="http://registry.test/auth/token",service="registry"'
    token = await token_for(token_client, None)
    assert (await token_client.get("/v2/", headers=bearer(token))).status_code == 200


@pytest.mark.parametrize(("method", "path", "scope"), ROUTES)
async def test_every_endpoint_challenges_with_the_scope_it_needs(
    token_client: httpx.AsyncClient, method: str, path: str, scope: str
) -> None:
    r = await token_client.request(method, path)
    assert r.status_code == 401
    assert f'scope="{scope}"' in r.headers["WWW-Authenticate"]
    if method != "HEAD":
        assert error_codes(r) == ["UNAUTHORIZED"]


async def test_a_token_for_the_scope_admits_push_and_pull(token_client: httpx.AsyncClient) -> None:
    token = await token_for(token_client, "alice", "repository:alice/app:pull,push")
    client = token_client
    client.headers.update(bearer(token))
    image = make_image()
    await push_image(client, "alice/app", image, "v1")
    assert (await client.get("/v2/alice/app/manifests/v1")).status_code == 200
    r = await client.delete("/v2/alice/app/manifests/v1")
    assert r.status_code == 401 and "insufficient_scope" in r.headers["WWW-Authenticate"]


async def test_known_user_outside_the_rules_is_denied(token_client: httpx.AsyncClient) -> None:
    token = await token_for(token_client, "alice", "repository:bob/app:pull,push")
    r = await token_client.post("/v2/bob/app/blobs/uploads/", headers=bearer(token))
    assert r.status_code == 403 and error_codes(r) == ["DENIED"]
    assert r.json()["errors"][0]["message"] == "requested access to the resource is denied"


async def test_the_token_grants_only_what_the_rules_allow(token_client: httpx.AsyncClient) -> None:
    r = await token_client.get(
        "/auth/token",
        params={"service": "registry", "scope": ["repository:public/base:pull,push", "repository:bob/x:pull"]},
        headers=basic("alice", "alice-pw"),
    )
    assert r.json()["scope"] == "repository:public/base:pull"


async def test_anonymous_pull_where_a_rule_allows_it_and_nothing_more(token_client: httpx.AsyncClient) -> None:
    admin = await token_for(token_client, "root", "repository:public/base:pull,push")
    image = make_image()
    token_client.headers.update(bearer(admin))
    await push_image(token_client, "public/base", image, "1")
    anonymous = await token_for(token_client, None, "repository:public/base:pull,push")
    token_client.headers.update(bearer(anonymous))
    assert (await token_client.get("/v2/public/base/manifests/1")).status_code == 200
    r = await token_client.post("/v2/public/base/blobs/uploads/")
    assert r.status_code == 401 and 'error="insufficient_scope"' in r.headers["WWW-Authenticate"]


async def test_garbage_token_answers_invalid_token(token_client: httpx.AsyncClient) -> None:
    r = await token_client.get("/v2/alice/app/tags/list", headers=bearer("not.a.jwt"))
    assert r.status_code == 401 and 'error="invalid_token"' in r.headers["WWW-Authenticate"]


async def test_wrong_password_then_too_many_failures(token_client: httpx.AsyncClient) -> None:
    for _ in range(3):
        r = await token_client.get("/auth/token", params={"service": "registry"}, headers=basic("alice", "nope"))
        assert r.status_code == 401 and error_codes(r) == ["UNAUTHORIZED"]
        assert r.json()["errors"][0]["message"] == "incorrect username or password"
    r = await token_client.get("/auth/token", params={"service": "registry"}, headers=basic("alice", "alice-pw"))
    assert r.status_code == 429 and error_codes(r) == ["TOOMANYREQUESTS"]
    assert int(r.headers["Retry-After"]) > 0


async def test_token_for_another_service_is_refused(token_client: httpx.AsyncClient) -> None:
    r = await token_client.get("/auth/token", params={"service": "elsewhere"})
    assert r.status_code == 400


async def test_oauth_password_and_refresh_grants(token_client: httpx.AsyncClient, settings: Settings) -> None:
    form = {
        "grant_type": "password",
        "username": "alice",
        "password": "alice-pw",
        "service": "registry",
        "scope": "repository:alice/app:pull",
        "access_type": "offline",
        "client_id": "docker",
    }
    r = await token_client.post("/auth/token", data=form)
    assert r.status_code == 200, r.text
    refresh = r.json()["refresh_token"]
    r = await token_client.post(
        "/auth/token",
        data={"grant_type": "refresh_token", "refresh_token": refresh, "service": "registry", "scope": form["scope"]},
    )
    assert r.status_code == 200
    r2 = await token_client.get("/v2/alice/app/tags/list", headers=bearer(r.json()["access_token"]))
    assert r2.status_code == 404  # admitted; the repository does not exist yet
    Htpasswd(settings.htpasswd_path).set_password("alice", "changed")
    r = await token_client.post("/auth/token", data={"grant_type": "refresh_token", "refresh_token": refresh})
    assert r.status_code == 401
    r = await token_client.post("/auth/token", data={**form, "password": "wrong"})
    assert r.status_code == 401
    r = await token_client.post("/auth/token", data={"grant_type": "client_credentials"})
    assert r.status_code == 400


async def test_a_refresh_token_is_not_an_access_token(token_client: httpx.AsyncClient) -> None:
    r = await token_client.get(
        "/auth/token",
        params={"offline_token": "true", "scope": "repository:alice/a:pull"},
        headers=basic("alice", "alice-pw"),
    )
    refresh = r.json()["refresh_token"]
    r = await token_client.get("/v2/alice/a/tags/list", headers=bearer(refresh))
    assert r.status_code == 401


async def test_mount_needs_pull_on_the_source(token_client: httpx.AsyncClient) -> None:
    token_client.headers.update(bearer(await token_for(token_client, "bob", "repository:bob/private:pull,push")))
    digest = await push_blob(token_client, "bob/private", b"bob's layer")
    del token_client.headers["Authorization"]
    alice = await token_for(token_client, "alice", "repository:alice/app:pull,push", "repository:bob/private:pull")
    r = await token_client.post(
        "/v2/alice/app/blobs/uploads/", params={"mount": digest, "from": "bob/private"}, headers=bearer(alice)
    )
    assert r.status_code == 202  # not mounted: a plain upload starts instead
    r = await token_client.post("/v2/alice/app/blobs/uploads/", params={"mount": digest}, headers=bearer(alice))
    assert r.status_code == 202
    root = await token_for(token_client, "root", "repository:root/app:pull,push")
    r = await token_client.post(
        "/v2/root/app/blobs/uploads/", params={"mount": digest, "from": "bob/private"}, headers=bearer(root)
    )
    assert r.status_code == 201


async def test_catalog_lists_only_what_the_caller_may_pull(token_client: httpx.AsyncClient) -> None:
    for user, repository in [("alice", "alice/a"), ("bob", "bob/b"), ("root", "public/p")]:
        token = await token_for(token_client, user, f"repository:{repository}:push,pull")
        r = await token_client.post(
            f"/v2/{repository}/blobs/uploads/", params={"digest": DIGEST}, content=b"x", headers=bearer(token)
        )
        assert r.status_code == 201
    seen = {}
    for user in ("alice", "root", None):
        token = await token_for(token_client, user, "registry:catalog:*")
        r = await token_client.get("/v2/_catalog", headers=bearer(token))
        seen[user] = r.json()["repositories"]
    assert seen == {"alice": ["alice/a", "public/p"], "root": ["alice/a", "bob/b", "public/p"], None: ["public/p"]}


async def test_catalog_for_another_issuers_token_lists_what_its_access_claim_lets_pull(
    settings: Settings, htpasswd_file: bytes, tmp_path
) -> None:
    external = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(external.public_key()))
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": [{**jwk, "kid": "ext-1", "use": "sig"}]}))
    configured = configure(settings, "token", htpasswd_file)
    configured.auth.token.issuers = [IssuerSettings(issuer="gitlab", jwks=str(tmp_path / "jwks.json"))]
    access_claim = [
        {"type": "registry", "name": "catalog", "actions": ["*"]},
        {"type": "repository", "name": "team/a", "actions": ["pull"]},
        {"type": "repository", "name": "team/b", "actions": ["push"]},
        {"type": "repository", "name": "team/c", "actions": ["*"]},
        {"type": "repository", "name": "team/*", "actions": ["pull"]},  # a name, not a glob
    ]
    claims = {"iss": "gitlab", "sub": "carol", "aud": "registry", "exp": int(time.time()) + 60, "access": access_claim}
    token = jwt.encode(claims, external, algorithm="RS256", headers={"kid": "ext-1"})
    async with running_app(configured) as (app, client):
        await app.state.registry.metadata.db.write(
            lambda c: c.executemany(
                "INSERT INTO repositories (name, created_at) VALUES (?, 0)",
                [(name,) for name in ("team/a", "team/b", "team/c", "team/d", "zed")],
            )
        )
        r = await client.get("/v2/_catalog", params={"n": 1}, headers=bearer(token))
        assert r.json()["repositories"] == ["team/a"] and "Link" in r.headers
        r = await client.get("/v2/_catalog", params={"n": 1, "last": "team/a"}, headers=bearer(token))
        assert r.json()["repositories"] == ["team/c"]
        r = await client.get("/v1/search", params={"q": "team"}, headers=bearer(token))
        assert [found["name"] for found in r.json()["results"]] == ["team/a", "team/c"]


async def test_htpasswd_mode_checks_basic_credentials_and_rules(basic_client: httpx.AsyncClient) -> None:
    r = await basic_client.get("/v2/")
    assert r.status_code == 401 and r.headers["WWW-Authenticate"] == 'Basic realm="registry"'
    assert (await basic_client.get("/v2/", headers=basic("alice", "alice-pw"))).status_code == 200
    r = await basic_client.get("/v2/", headers=basic("alice", "wrong"))
    assert r.status_code == 401 and r.json()["errors"][0]["message"] == "incorrect username or password"
    image = make_image()
    basic_client.headers.update(basic("alice", "alice-pw"))
    await push_image(basic_client, "alice/app", image, "v1")
    r = await basic_client.post("/v2/bob/app/blobs/uploads/")
    assert r.status_code == 403 and error_codes(r) == ["DENIED"]
    del basic_client.headers["Authorization"]
    r = await basic_client.get("/v2/alice/app/manifests/v1")
    assert r.status_code == 401 and "Basic" in r.headers["WWW-Authenticate"]
    assert (await basic_client.get("/v2/public/x/tags/list")).status_code == 404  # admitted anonymously


async def test_no_auth_mode_lets_everything_through(client: httpx.AsyncClient) -> None:
    assert (await client.get("/v2/")).status_code == 200
    assert (await client.get("/auth/token")).status_code == 404


def client_from(app: Starlette, address: str, forwarded_for: str | None = None) -> httpx.AsyncClient:
    """A client of `app` whose connection comes from `address` (optionally through X-Forwarded-For)."""
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
    transport = httpx.ASGITransport(app, client=(address, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://registry.test", headers=headers)


async def login(client: httpx.AsyncClient, mode: str, user: str, password: str) -> int:
    """The status of a sign-in: a token request (token mode) or `GET /v2/` with Basic (htpasswd mode)."""
    if mode == "token":
        r = await client.get("/auth/token", params={"service": "registry"}, headers=basic(user, password))
    else:
        r = await client.get("/v2/", headers=basic(user, password))
    if r.status_code == 429:
        assert error_codes(r) == ["TOOMANYREQUESTS"] and int(r.headers["Retry-After"]) > 0
    return r.status_code


@pytest.mark.parametrize("mode", ["token", "htpasswd"])
async def test_a_burst_of_wrong_passwords_gets_no_more_password_checks_than_the_limit(
    settings: Settings, htpasswd_file: bytes, mode: str
) -> None:
    async with running_app(configure(settings, mode, htpasswd_file)) as (_, client):
        codes = await asyncio.gather(*(login(client, mode, "alice", f"wrong-{i}") for i in range(20)))
        assert sorted(codes) == [401] * 3 + [429] * 17
        assert await login(client, mode, "alice", "alice-pw") == 429


async def test_two_workers_sharing_the_index_share_the_failure_count(settings: Settings, htpasswd_file: bytes) -> None:
    configure(settings, "token", htpasswd_file)
    async with running_app(settings) as (_, first), running_app(settings) as (_, second):
        assert [await login(c, "token", "alice", "wrong") for c in (first, second, first)] == [401] * 3
        assert await login(second, "token", "alice", "alice-pw") == 429
        assert await login(first, "token", "alice", "alice-pw") == 429


async def test_behind_a_trusted_proxy_one_client_cannot_lock_a_user_out_for_another(
    settings: Settings, htpasswd_file: bytes
) -> None:
    settings.http.trusted_proxies = ["10.0.0.0/8"]
    async with running_app(configure(settings, "htpasswd", htpasswd_file)) as (app, _):
        attacker = client_from(app, "10.0.0.2", "203.0.113.9")
        codes = [await login(attacker, "htpasswd", "alice", "wrong") for _ in range(6)]
        assert codes == [401] * 3 + [429] * 3
        assert await login(client_from(app, "10.0.0.2", "198.51.100.7"), "htpasswd", "alice", "alice-pw") == 200
        # A spoofed left-most entry changes nothing: the right-most untrusted address counts.
        spoofed = client_from(app, "10.0.0.3", "198.51.100.7, 203.0.113.9")
        assert await login(spoofed, "htpasswd", "alice", "another guess") == 429


async def test_forwarded_for_from_an_untrusted_peer_is_ignored(settings: Settings, htpasswd_file: bytes) -> None:
    async with running_app(configure(settings, "htpasswd", htpasswd_file)) as (app, _):
        codes = [await login(client_from(app, "203.0.113.9", f"192.0.2.{i}"), "htpasswd", "bob", "x") for i in range(5)]
        assert codes == [401] * 3 + [429] * 2


async def test_many_users_sprayed_from_one_address_are_limited(settings: Settings, htpasswd_file: bytes) -> None:
    settings.auth.login_attempts_per_address = 4
    async with running_app(configure(settings, "token", htpasswd_file)) as (app, client):
        codes = [await login(client, "token", f"user{i}", "guess") for i in range(6)]
        assert codes == [401] * 4 + [429] * 2
        assert await login(client_from(app, "198.51.100.7"), "token", "user5", "guess") == 401


async def test_failures_from_several_addresses_lock_the_user_for_everyone(
    settings: Settings, htpasswd_file: bytes
) -> None:
    settings.auth.login_attempts_per_user = 6
    async with running_app(configure(settings, "token", htpasswd_file)) as (app, _):
        first = client_from(app, "203.0.113.1")
        assert [await login(first, "token", "alice", "wrong") for _ in range(5)] == [401] * 3 + [429] * 2
        assert await login(client_from(app, "198.51.100.7"), "token", "alice", "wrong") == 401  # not locked
        second = client_from(app, "203.0.113.2")
        assert [await login(second, "token", "alice", "wrong") for _ in range(2)] == [401] * 2
        assert await login(client_from(app, "198.51.100.8"), "token", "alice", "alice-pw") == 429
        assert await login(client_from(app, "198.51.100.8"), "token", "bob", "bob-pw") == 200


async def test_a_remembered_password_costs_no_index_write(settings: Settings, htpasswd_file: bytes) -> None:
    if not settings.index_url.startswith("sqlite:///"):
        pytest.skip("watches commits through SQLite's data_version")
    async with running_app(configure(settings, "htpasswd", htpasswd_file)) as (_, client):
        client.headers.update(basic("alice", "alice-pw"))
        assert (await client.get("/v2/")).status_code == 200
        watcher = sqlite3.connect(settings.index_url.removeprefix("sqlite:///"))
        before = watcher.execute("PRAGMA data_version").fetchone()[0]
        for _ in range(10):
            assert (await client.get("/v2/alice/app/tags/list")).status_code == 404
        assert watcher.execute("PRAGMA data_version").fetchone()[0] == before
        assert (await client.get("/v2/", headers=basic("alice", "wrong"))).status_code == 401
        assert watcher.execute("PRAGMA data_version").fetchone()[0] != before
        watcher.close()


async def test_scopes_with_invalid_repository_names_are_refused(token_client: httpx.AsyncClient) -> None:
    for scope in ["repository:Alice/App:pull", "repository:" + "a" * 300 + ":pull", "repository:a//b:pull"]:
        r = await token_client.get("/auth/token", params={"service": "registry", "scope": scope})
        assert r.status_code == 400, scope
        assert error_codes(r) == ["UNSUPPORTED"]
    r = await token_client.get("/auth/token", params={"scope": ["registry:catalog:*", "repository:public/a_b.c:pull"]})
    assert r.status_code == 200 and r.json()["scope"] == "registry:catalog:* repository:public/a_b.c:pull"


async def test_too_many_scopes_in_one_request_are_refused(token_client: httpx.AsyncClient) -> None:
    scopes = [f"repository:public/r{i}:pull" for i in range(65)]
    r = await token_client.get("/auth/token", params={"service": "registry", "scope": scopes})
    assert r.status_code == 400 and error_codes(r) == ["UNSUPPORTED"]
    r = await token_client.post(
        "/auth/token",
        data={"grant_type": "password", "username": "alice", "password": "alice-pw", "scope": " ".join(scopes)},
    )
    assert r.status_code == 400
    r = await token_client.get("/auth/token", params={"service": "registry", "scope": scopes[:64]})
    assert r.status_code == 200


async def test_an_oversized_bearer_token_is_refused_even_when_signed(settings: Settings, htpasswd_file: bytes) -> None:
    async with running_app(configure(settings, "token", htpasswd_file)) as (app, client):
        issuer = app.state.token_server.issuer
        wanted = [access("repository", f"alice/{'r' * 200}{i}", ["pull"]) for i in range(40)]
        huge = issuer.issue("alice", [*wanted, access("repository", "alice/app", ["pull"])]).token
        assert len(huge) > 8 << 10
        r = await client.get("/v2/alice/app/tags/list", headers=bearer(huge))
        assert r.status_code == 401 and 'error="invalid_token"' in r.headers["WWW-Authenticate"]


@pytest.mark.parametrize("mode", ["token", "htpasswd"])
async def test_a_password_longer_than_72_bytes_is_refused_not_an_error(
    settings: Settings, htpasswd_file: bytes, mode: str
) -> None:
    async with running_app(configure(settings, mode, htpasswd_file)) as (_, client):
        assert await login(client, mode, "alice", "alice-pw" + "x" * 100) == 401
        assert await login(client, mode, "nobody", "y" * 200) == 401


@pytest.mark.parametrize("mode", ["token", "htpasswd"])
@pytest.mark.parametrize(
    "header",
    ["Basic !!!", "Basic " + base64.b64encode(b"no-colon").decode(), "Basic", "Basic caf\xe9".encode("latin-1")],
)
async def test_a_malformed_basic_header_is_refused_with_a_challenge(
    settings: Settings, htpasswd_file: bytes, mode: str, header: str | bytes
) -> None:
    async with running_app(configure(settings, mode, htpasswd_file)) as (_, client):
        path = "/auth/token" if mode == "token" else "/v2/public/x/tags/list"
        r = await client.get(path, headers={"Authorization": header})
        assert r.status_code == 401 and error_codes(r) == ["UNAUTHORIZED"]
        assert r.headers["WWW-Authenticate"] == 'Basic realm="registry"'


async def test_the_token_of_a_removed_user_stops_working(token_client: httpx.AsyncClient, settings: Settings) -> None:
    token = await token_for(token_client, "bob", "repository:bob/app:pull")
    assert (await token_client.get("/v2/bob/app/tags/list", headers=bearer(token))).status_code == 404
    assert Htpasswd(settings.htpasswd_path).remove("bob")
    time.sleep(1.1)  # the user list is looked at no more than once a second
    r = await token_client.get("/v2/bob/app/tags/list", headers=bearer(token))
    assert r.status_code == 401 and 'error="invalid_token"' in r.headers["WWW-Authenticate"]


async def test_blob_reads_do_not_wait_behind_password_checks(settings: Settings, htpasswd_file: bytes) -> None:
    settings.auth.login_attempts_per_address = 1000
    async with running_app(configure(settings, "htpasswd", htpasswd_file)) as (app, client):
        client.headers.update(basic("alice", "alice-pw"))
        digest = await push_blob(client, "alice/app", b"layer bytes" * 1000)
        attackers = [client_from(app, f"203.0.113.{i}") for i in range(100)]
        logins = [asyncio.create_task(login(c, "htpasswd", f"u{i}", "guess")) for i, c in enumerate(attackers)]
        await asyncio.sleep(0.3)
        started = time.monotonic()
        r = await client.get(f"/v2/alice/app/blobs/{digest}")
        took = time.monotonic() - started
        codes = await asyncio.gather(*logins)
        assert r.status_code == 200 and took < 3.0, took  # before: ~100 checks queued ahead, 10 s and more
        assert 401 in codes and 429 in codes and set(codes) == {401, 429}


async def test_a_refused_refresh_token_answers_401_with_a_challenge(token_client: httpx.AsyncClient) -> None:
    for refresh in ["a.b.c", await token_for(token_client, "alice", "repository:alice/app:pull")]:
        r = await token_client.post("/auth/token", data={"grant_type": "refresh_token", "refresh_token": refresh})
        assert r.status_code == 401 and error_codes(r) == ["UNAUTHORIZED"]
        assert r.headers["WWW-Authenticate"] == 'Basic realm="registry"'
