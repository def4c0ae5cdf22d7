"""Deleting a tag or a manifest from the UI: a confirmation page, then a POST with the session's CSRF token;
only with delete rights and deletes enabled; a pull sees it at once."""

from __future__ import annotations

import re

import httpx
import pytest
from starlette.applications import Starlette

from registry.config import Settings
from tests.support.app import running_app
from tests.support.content import make_image, push_image
from tests.support.ui import csrf_of, sign_in

pytestmark = pytest.mark.anyio

UI = tuple[Starlette, httpx.AsyncClient]


async def confirm(client: httpx.AsyncClient, name: str, reference: str) -> str:
    """The confirmation page's CSRF token, once it shows the delete form."""
    r = await client.get(f"/ui/delete/{name}", params={"reference": reference})
    assert r.status_code == 200, r.text
    assert 'id="delete-form"' in r.text and 'id="confirm-delete"' in r.text and reference in r.text
    return csrf_of(r.text)


async def test_deleting_a_tag_asks_first_then_pulls_of_it_fail(open_ui: UI) -> None:
    _, client = open_ui
    image = make_image()
    await push_image(client, "team/app", image, "1")
    await push_image(client, "team/app", image, "2")
    page = (await client.get("/ui/repositories/team/app")).text
    assert re.findall(r'aria-label="Delete tag ([^"]+)"', page) == ["2", "1"]
    token = await confirm(client, "team/app", "1")
    assert (await client.get("/v2/team/app/manifests/1")).status_code == 200, "the confirmation changed nothing"
    r = await client.post("/ui/delete/team/app", data={"reference": "1", "csrf": token})
    assert r.status_code == 303 and r.headers["location"] == "/ui/repositories/team/app?deleted=1"
    assert (await client.get("/v2/team/app/manifests/1")).status_code == 404
    assert (await client.get(f"/v2/team/app/manifests/{image.digest}")).status_code == 200, "only the tag went"
    after = (await client.get(r.headers["location"])).text
    assert re.findall(r'data-tag="([^"]+)"', after) == ["2"] and 'id="notice"' in after


async def test_deleting_a_manifest_removes_it_with_its_tags(open_ui: UI) -> None:
    _, client = open_ui
    image = make_image()
    await push_image(client, "team/app", image, "1")
    await push_image(client, "team/app", image, "latest")
    token = await confirm(client, "team/app", image.digest)
    page = (await client.get("/ui/delete/team/app", params={"reference": image.digest})).text
    assert "<code>1</code>" in page and "<code>latest</code>" in page, "the page names the tags that go too"
    r = await client.post("/ui/delete/team/app", data={"reference": image.digest, "csrf": token})
    assert r.status_code == 303
    for reference in ("1", "latest", image.digest):
        assert (await client.get(f"/v2/team/app/manifests/{reference}")).status_code == 404


async def test_a_delete_without_the_right_token_or_from_another_site_changes_nothing(open_ui: UI) -> None:
    _, client = open_ui
    await push_image(client, "team/app", make_image(), "1")
    token = await confirm(client, "team/app", "1")
    attempts = [
        ({"reference": "1"}, {}),
        ({"reference": "1", "csrf": "forged"}, {}),
        ({"reference": "1", "csrf": token}, {"Origin": "https://evil.example"}),
    ]
    for data, headers in attempts:
        r = await client.post("/ui/delete/team/app", data=data, headers=headers)
        assert r.status_code == 403, (data, headers)
    assert (await client.get("/v2/team/app/manifests/1")).status_code == 200
    fresh = httpx.AsyncClient(transport=client._transport, base_url="http://registry.test")
    r = await fresh.post("/ui/delete/team/app", data={"reference": "1", "csrf": token})
    assert r.status_code == 403, "another browser (no session cookie) cannot use a leaked token"
    r = await client.post(
        "/ui/delete/team/app", data={"reference": "1", "csrf": token}, headers={"Origin": "http://registry.test"}
    )
    assert r.status_code == 303


async def test_deletes_are_only_a_post(open_ui: UI) -> None:
    _, client = open_ui
    await push_image(client, "team/app", make_image(), "1")
    for method in ("PUT", "DELETE"):
        assert (await client.request(method, "/ui/delete/team/app?reference=1")).status_code == 405
    assert (await client.get("/v2/team/app/manifests/1")).status_code == 200


async def test_users_without_delete_rights_get_no_button_and_403(users_ui: UI) -> None:
    _, client = users_ui
    await sign_in(client, "bob")  # public/** is pull only for him
    page = (await client.get("/ui/repositories/public/base")).text
    assert 'class="delete"' not in page
    assert (await client.get("/ui/delete/public/base", params={"reference": "1"})).status_code == 403
    r = await client.post("/ui/delete/public/base", data={"reference": "1", "csrf": csrf_of(page)})
    assert r.status_code == 403
    assert "Delete tag 1" in (await client.get("/ui/repositories/bob/secret")).text, "his own repository: yes"


async def test_with_deletes_disabled_there_is_no_delete(settings: Settings) -> None:
    settings.storage.delete_enabled = False
    async with running_app(settings) as (_, client):
        await push_image(client, "team/app", make_image(), "1")
        page = (await client.get("/ui/repositories/team/app")).text
        assert 'class="delete"' not in page
        assert (await client.get("/ui/delete/team/app", params={"reference": "1"})).status_code == 403
        r = await client.post("/ui/delete/team/app", data={"reference": "1", "csrf": csrf_of(page)})
        assert r.status_code == 403 and (await client.get("/v2/team/app/manifests/1")).status_code == 200
