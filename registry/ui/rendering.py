"""How the UI's pages are written: the Jinja2 templates shipped in the package, their filters, and the
query parameters every listing reads (page, sort)."""

from __future__ import annotations

import os
import time
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response
from starlette.templating import Jinja2Templates

from registry.facade import Registry
from registry.numbers import NumberInvalid, parse_number

HERE = os.path.dirname(__file__)
TEMPLATES = os.path.join(HERE, "templates")
STATIC = os.path.join(HERE, "static")
PAGE_MAX = 1 << 31
# Every page: no framing (clickjacking of the delete button), scripts and styles from /ui/static only,
# forms posted to this site only, and nothing cached (pages differ per visitor).
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def human_bytes(size: int | None) -> str:
    """`size` bytes as people read them: 0 B, 512 B, 1.5 KiB, 20.0 MiB."""
    if size is None:
        return "-"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def when(seconds: float | None) -> str:
    """A Unix time as `2024-05-01 12:34 UTC` ("-" for None)."""
    if seconds is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(seconds))


def iso(seconds: float | None) -> str:
    """A Unix time in ISO 8601 (UTC), for `<time datetime>`."""
    return "" if seconds is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def short_digest(digest: str) -> str:
    """`sha256:0123456789ab`: the algorithm and the first 12 characters, as docker prints image ids."""
    algorithm, _, encoded = digest.partition(":")
    return f"{algorithm}:{encoded[:12]}"


def with_page(params: dict[str, str], number: int) -> str:
    """The query string of `params` with `page` set to `number`."""
    return urlencode({**params, "page": number})


def make_templates() -> Jinja2Templates:
    """The UI's templates, autoescaped, with the filters above."""
    templates = Jinja2Templates(directory=TEMPLATES)
    templates.env.filters.update(
        bytes=human_bytes, when=when, iso=iso, short=short_digest, query=urlencode, with_page=with_page
    )
    templates.env.trim_blocks = templates.env.lstrip_blocks = True
    return templates


def render(
    request: Request, template: str, context: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    """`template` filled with `context` and what every page shows (the visitor, whether sign-in exists)."""
    templates: Jinja2Templates = request.app.state.templates
    visitor = getattr(request.state, "visitor", None)
    common = {
        "visitor": visitor,
        "sign_in": request.app.state.visitors.sign_in,
        "csrf": None if visitor is None else visitor.session.csrf,
    }
    headers = PAGE_HEADERS | (headers or {})
    return templates.TemplateResponse(request, template, common | context, status_code=status, headers=headers)


def registry_of(request: Request) -> Registry:
    registry: Registry = request.app.state.registry
    return registry


def page_number(request: Request) -> int:
    """The `page` query parameter, from 1 (1 when missing or not a number)."""
    try:
        return max(1, min(parse_number(request.query_params.get("page", "1")), PAGE_MAX))
    except NumberInvalid:
        return 1


def pages(total: int, per_page: int) -> int:
    """How many pages `total` items fill (at least 1)."""
    return max(1, (total + per_page - 1) // per_page)
