"""Who sees what in auth modes htpasswd and token: anonymous visitors see what anonymous may pull, a signed-in
user what their rules let them pull, never more (lists, counts, search, storage, direct URLs); sign-in goes
through the API's password checks and login limits; the session cookie is signed, expiring, HttpOnly, SameSite=Lax."""

from __future__ import annotations

import re

import httpx
import pytest
from starlette.applications import Starlette

from registry.auth.users import Htpasswd
from registry.ui.sessions import COOKIE
from tests.support.ui import SEEDED, csrf_of, listed, sign_in

pytestmark = pytest.mark.anyio

UI = tuple[Starlette, httpx.AsyncClient]
EVERY_PAGE = ("/ui/", "/ui/?q=a", "/ui/storage")


async def seen(client: httpx.AsyncClient) -> set[str]:
    """Every repository the pages show the client: the list, a search, the storage page."""
    names: set[str] = set()
    for path in EVERY_PAGE:
        r = await client.get(path)
        assert r.status_code == 200, path
        names |= set(listed(r.text))
    return names


async def test_anonymous_visitors_see_only_what_anonymous_may_pull(users_ui: UI) -> None:
    _, client = users_ui
    assert await seen(client) == {"public/base"}
    r = await client.get("/ui/")
    assert "1 repository" in r.text and 'id="nav-sign-in"' in r.text
    assert (await client.get("/ui/repositories/public/base")).status_code == 200


async def test_a_repository_the_visitor_may_not_pull_answers_404_like_one_that_does_not_exist(users_ui: UI) -> None:
    app, client = users_ui
    record = await app.state.registry.manifest("bob/secret", "1")
    assert (await sign_in(client, "alice")).status_code == 303
    for path in (
        "/ui/repositories/bob/secret",
        f"/ui/repositories/bob/secret/manifests/{record.digest}",
        "/ui/delete/bob/secret?reference=1",
    ):
        hidden, missing = await client.get(path), await client.get(path.replace("bob/secret", "bob/nothing"))
        assert hidden.status_code == missing.status_code == 404, path
        assert hidden.text == missing.text.replace("bob/nothing", "bob/secret"), path
    r = await client.post(
        "/ui/delete/bob/secret", data={"reference": "1", "csrf": csrf_of((await client.get("/ui/")).text)}
    )
    assert r.status_code == 404
    assert (await app.state.registry.manifest("bob/secret", "1")).digest == record.digest


async def test_signed_in_users_see_what_their_rules_let_them_pull(users_ui: UI) -> None:
    _, client = users_ui
    r = await sign_in(client, "alice")
    assert r.status_code == 303 and r.headers["location"] == "/ui/storage"
    assert await seen(client) == {"public/base", "alice/app"}
    page = (await client.get("/ui/")).text
    assert 'id="nav-user"' in page and ">alice<" in page and 'id="sign-out"' in page
    assert "bob/secret" not in (await client.get("/ui/", params={"q": "secret"})).text


async def test_an_admin_sees_everything_and_storage_totals_follow_what_is_seen(users_ui: UI) -> None:
    _, client = users_ui
    anonymous = (await client.get("/ui/storage")).text
    await sign_in(client, "root")
    assert await seen(client) == set(SEEDED)
    everything = (await client.get("/ui/storage")).text
    total = re.compile(r'Total stored: <strong data-bytes="(\d+)"')
    assert int(total.findall(anonymous)[0]) < int(total.findall(everything)[0])


async def test_the_session_cookie_is_signed_http_only_same_site_lax_for_ui_and_expires(users_ui: UI) -> None:
    app, client = users_ui
    r = await sign_in(client, "alice")
    cookie = r.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=")
    attributes = {part.strip().split("=")[0].lower(): part for part in cookie.split(";")[1:]}
    assert "httponly" in attributes and attributes["samesite"].strip().lower() == "samesite=lax"
    assert attributes["path"].strip() == "Path=/ui"
    assert attributes["max-age"].strip() == f"Max-Age={app.state.settings.ui.session_s}"
    value = client.cookies[COOKIE]
    signature = value.partition(".")[2]
    forged = app.routes[-1].app.state.visitors.sessions  # the UI's own sessions, with another user inside
    tampered = forged.encode(forged.new("root"))
    client.cookies.set(COOKIE, tampered.split(".")[0] + "." + signature, domain="registry.test", path="/ui")
    assert await seen(client) == {"public/base"}, "a cookie whose signature does not match is anonymous"


async def test_wrong_passwords_show_the_form_again_and_then_answer_429(users_ui: UI) -> None:
    app, client = users_ui
    r = await sign_in(client, "alice", "wrong")
    assert r.status_code == 401 and 'id="login-error"' in r.text and COOKIE not in r.headers.get("set-cookie", "")
    for _ in range(app.state.settings.auth.login_attempts):
        r = await sign_in(client, "alice", "wrong")
    assert r.status_code == 429 and int(r.headers["retry-after"]) > 0
    assert "<title>429 · Registry</title>" in r.text
    api = await client.get("/v2/_catalog", auth=("alice", "alice-pw"))
    assert api.status_code in (401, 429), "the API counts the same failures (token mode: Basic goes to /auth/token)"
    token = await client.get("/auth/token", params={"service": "registry"}, auth=("alice", "alice-pw"))
    assert 429 in (api.status_code, token.status_code)


async def test_a_login_without_the_session_token_is_refused(users_ui: UI) -> None:
    _, client = users_ui
    r = await client.post("/ui/login", data={"username": "alice", "password": "alice-pw"})
    assert r.status_code == 403 and COOKIE not in r.headers.get("set-cookie", "")
    await client.get("/ui/login")
    r = await client.post("/ui/login", data={"username": "alice", "password": "alice-pw", "csrf": "guess"})
    assert r.status_code == 403


async def test_signing_out_makes_the_visitor_anonymous(users_ui: UI) -> None:
    _, client = users_ui
    await sign_in(client, "alice")
    page = (await client.get("/ui/")).text
    assert (await client.post("/ui/logout", data={"csrf": "wrong"})).status_code == 403
    assert await seen(client) == {"public/base", "alice/app"}
    r = await client.post("/ui/logout", data={"csrf": csrf_of(page)})
    assert r.status_code == 303 and await seen(client) == {"public/base"}


async def test_a_changed_password_or_a_removed_user_ends_the_session(users_ui: UI) -> None:
    app, client = users_ui
    await sign_in(client, "alice")
    assert "alice/app" in await seen(client)
    Htpasswd(app.state.settings.htpasswd_path).set_password("alice", "new-password")
    assert await seen(client) == {"public/base"}


async def test_after_a_redirect_target_off_the_site_the_login_goes_to_the_ui(users_ui: UI) -> None:
    _, client = users_ui
    for target in ("https://evil.example/", "//evil.example/ui/", "/v2/_catalog"):
        form = await client.get("/ui/login")  # each sign-in starts a new session, with a new token
        data = {"username": "alice", "password": "alice-pw", "csrf": csrf_of(form.text), "next": target}
        r = await client.post("/ui/login", data=data)
        assert r.status_code == 303 and r.headers["location"] == "/ui/", target


async def test_auth_mode_none_has_no_sign_in(open_ui: UI) -> None:
    _, client = open_ui
    assert (await client.get("/ui/login")).status_code == 404
    assert 'id="nav-sign-in"' not in (await client.get("/ui/")).text
