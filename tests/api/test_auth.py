"""Every endpoint under each auth mode: allowed, 401 with the right challenge, 403 DENIED."""

from __future__ import annotations

import base64
import os
from collections.abc import AsyncIterator

import httpx
import pytest

from registry.auth.users import Htpasswd
from registry.config import RuleSettings, Settings
from tests.support import app_client, digest_of, error_codes, make_image, push_blob, push_image

pytestmark = pytest.mark.anyio

RULES = [
    RuleSettings(["anonymous"], "public/**", ["pull"]),
    RuleSettings(["*"], "{user}/**", ["*"]),
    RuleSettings(["group:admins"], "**", ["*"]),
    RuleSettings(["*"], "public/**", ["pull"]),
]
DIGEST = digest_of(b"x")


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def htpasswd_file(tmp_path_factory) -> bytes:
    """alice, bob and root, each with the password `<name>-pw` (hashed once: bcrypt is slow)."""
    path = tmp_path_factory.mktemp("users") / "htpasswd"
    users = Htpasswd(str(path))
    for user in ("alice", "bob", "root"):
        users.set_password(user, f"{user}-pw")
    return path.read_bytes()


def configure(settings: Settings, mode: str, htpasswd: bytes) -> Settings:
    settings.auth.mode = mode
    settings.auth.rules = RULES
    settings.auth.groups = {"admins": ["root"]}
    settings.auth.login_attempts = 3
    os.makedirs(settings.data_dir, exist_ok=True)
    with open(settings.htpasswd_path, "wb") as f:
        f.write(htpasswd)
    return settings


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
