"""The UI's routes, as one Starlette app mounted at /ui with its own error pages, and `/` sending browsers there."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.convertors import Convertor, register_url_convertor
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from registry.auth.gate import BasicGate, OpenGate
from registry.config import Settings
from registry.errors import RegistryError
from registry.facade import Registry
from registry.handlers.base import RepositoryConvertor
from registry.names import DIGEST_RE
from registry.ui import account, deletes, pages
from registry.ui.rendering import STATIC, make_templates, render
from registry.ui.sessions import Sessions, load_or_create_key
from registry.ui.visitors import Visitors, page

if TYPE_CHECKING:
    from registry.auth.token_gate import TokenGate

DescribeError = Callable[[Request, Exception], RegistryError]


class DigestConvertor(Convertor[str]):
    """The `{digest:digest}` part of a route: only what can be a digest, so `/manifests/<tag>` at the end
    of a path is left to the repository route (it may be part of a repository's name)."""

    regex = DIGEST_RE.pattern

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


async def to_ui(request: Request) -> Response:
    """`/` and `/ui`: the UI starts at `/ui/`."""
    return RedirectResponse("/ui/", 307)


def _error_page(describe: DescribeError) -> Callable[[Request, Exception], Response]:
    """The UI's one exception handler: the error the API would answer (`describe`), as a page."""

    def error_page(request: Request, exc: Exception) -> Response:
        error = describe(request, exc)
        context = {"status": error.status, "message": error.message, "code": error.code}
        return render(request, "error.html", context, status=error.status, headers=error.headers or None)

    return error_page


def ui_app(
    settings: Settings, registry: Registry, gate: OpenGate | BasicGate | TokenGate, describe: DescribeError
) -> Starlette:
    """The UI over `registry`, its visitors judged by the rules and passwords of the API's `gate`;
    `describe` turns any exception into the RegistryError the API would answer."""
    register_url_convertor("repository", RepositoryConvertor())
    register_url_convertor("digest", DigestConvertor())
    repository = "/repositories/{name:repository}"
    routes: list[BaseRoute] = [
        Route("/", page(pages.repositories), methods=["GET"], name="repositories"),
        Route("/storage", page(pages.storage), methods=["GET"], name="storage"),
        Route(f"{repository}/manifests/{{digest:digest}}", page(pages.image), methods=["GET"], name="image"),
        Route(repository, page(pages.repository), methods=["GET"], name="repository"),
        Route("/delete/{name:repository}", page(deletes.confirm_delete), methods=["GET"], name="confirm_delete"),
        Route("/delete/{name:repository}", page(deletes.delete), methods=["POST"], name="delete"),
        Route("/login", page(account.login_form), methods=["GET"], name="login_form"),
        Route("/login", page(account.login), methods=["POST"], name="login"),
        Route("/logout", page(account.logout), methods=["POST"], name="logout"),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    handler = _error_page(describe)
    app = Starlette(
        routes=routes, exception_handlers={Exception: handler, RegistryError: handler, 404: handler, 405: handler}
    )
    sessions = Sessions(load_or_create_key(settings.ui_key_path), settings.ui.session_s)
    app.state.visitors = Visitors(sessions, gate)
    app.state.registry = registry
    app.state.templates = make_templates()
    return app


def ui_routes(
    settings: Settings, registry: Registry, gate: OpenGate | BasicGate | TokenGate, describe: DescribeError
) -> list[BaseRoute]:
    """The routes the registry app adds for the UI: `/` and `/ui` redirect to `/ui/`, where the UI is mounted."""
    return [
        Route("/", to_ui, methods=["GET"], name="to_ui"),
        Route("/ui", to_ui, methods=["GET"], name="to_ui"),
        Mount("/ui", app=ui_app(settings, registry, gate, describe), name="ui"),
    ]
