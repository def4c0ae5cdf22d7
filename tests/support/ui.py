"""The web UI driven as a browser would, in process: its pages' CSRF token, signing in through its form,
and the repositories a page lists."""

from __future__ import annotations

import re

import httpx

# What the in-process UI tests seed in a registry with users (tests/support/users.py): repository -> tags.
# public/** anyone may pull; alice/** and bob/** only their owner (and root, an admin).
SEEDED = {"public/base": ["1"], "alice/app": ["1", "2"], "bob/secret": ["1"]}


def csrf_of(text: str) -> str:
    """The session's CSRF token, as every UI page carries it (`<meta name="csrf-token">`)."""
    match = re.search(r'<meta name="csrf-token" content="([^"]+)">', text)
    assert match, "the page carries the session's CSRF token"
    return match.group(1)


def listed(text: str) -> list[str]:
    """The repositories a page's table rows name (`data-repository`), in order."""
    return re.findall(r'data-repository="([^"]*)"', text)


async def sign_in(client: httpx.AsyncClient, user: str, password: str | None = None) -> httpx.Response:
    """Sign in through the login form as a browser does (its page first, for the session's token); the
    password defaults to `<user>-pw`. Returns the form's answer (303 to /ui/storage when it worked)."""
    form = await client.get("/ui/login")
    assert form.status_code == 200
    data = {"username": user, "password": password or f"{user}-pw", "csrf": csrf_of(form.text), "next": "/ui/storage"}
    return await client.post("/ui/login", data=data)
