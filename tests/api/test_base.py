"""The base endpoint, health, and error shapes for requests no route serves."""

from __future__ import annotations

import logging

import httpx
import pytest

from registry.config import Settings
from tests.support.app import app_client
from tests.support.content import error_codes

pytestmark = pytest.mark.anyio


async def test_v2_answers_with_the_api_version_header(client: httpx.AsyncClient) -> None:
    r = await client.get("/v2/")
    assert r.status_code == 200
    assert r.headers["Docker-Distribution-API-Version"] == "registry/2.0"
    head = await client.head("/v2/")
    assert head.status_code == 200


async def test_every_answer_carries_a_request_id_the_proxy_in_front_may_set(client: httpx.AsyncClient) -> None:
    own = await client.get("/v2/")
    assert len(own.headers["x-request-id"]) == 36
    relayed = await client.get("/v2/nope/tags/list", headers={"X-Request-Id": "lb-7f3a"})
    assert relayed.headers["x-request-id"] == "lb-7f3a"


async def test_healthz_is_ok_when_the_index_answers(client: httpx.AsyncClient) -> None:
    r = await client.get("/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok"}


async def test_unknown_endpoint_answers_404_in_the_oci_error_format(client: httpx.AsyncClient) -> None:
    r = await client.get("/v2/team/app/nothing-here/x")
    assert r.status_code == 404
    assert error_codes(r) == ["NOT_FOUND"]


async def test_the_unknown_endpoint_detail_shows_the_path_as_sent(client: httpx.AsyncClient) -> None:
    r = await client.get("/v3/a%0Ab%09c")
    assert r.status_code == 404 and r.json()["errors"][0]["detail"] == {"path": "/v3/a\nb\tc"}


async def test_wrong_method_answers_405_unsupported(client: httpx.AsyncClient) -> None:
    r = await client.post("/v2/team/app/tags/list")
    assert r.status_code == 405
    assert error_codes(r) == ["UNSUPPORTED"]


@pytest.mark.parametrize("name", ["Team/app", "a" * 256, "a//b", "-a", "..%2Fetc"])
async def test_names_that_break_the_grammar_answer_name_invalid(client: httpx.AsyncClient, name: str) -> None:
    for method, path in [
        ("GET", f"/v2/{name}/tags/list"),
        ("GET", f"/v2/{name}/manifests/latest"),
        ("POST", f"/v2/{name}/blobs/uploads/"),
        ("HEAD", f"/v2/{name}/blobs/sha256:{'a' * 64}"),
    ]:
        r = await client.request(method, path)
        assert r.status_code == 400, (method, path, r.status_code)
        if method != "HEAD":
            assert error_codes(r) == ["NAME_INVALID"]


async def test_dot_dot_in_the_path_never_reaches_a_repository(client: httpx.AsyncClient) -> None:
    r = await client.get("/v2/../etc/tags/list")
    assert r.status_code in (400, 404)


HOSTILE_HOSTS = [b'x" ,realm="http://evil/', b"evil/x", b"a b", b"evil\tx", b"\xff\xfe", b"[::1", b"a" * 1000, b""]


@pytest.mark.parametrize("host", HOSTILE_HOSTS)
async def test_a_malformed_host_answers_400_before_any_route(client: httpx.AsyncClient, host: bytes) -> None:
    for method, path in [
        ("GET", "/v2/"),
        ("GET", "/v2"),
        ("GET", "/v2/team/app/tags/list"),
        ("PUT", "/v2/a/manifests/x"),
    ]:
        r = await client.request(method, path, headers={"Host": host})
        assert r.status_code == 400, (host, path, r.status_code)
        assert error_codes(r) == ["HOST_INVALID"] and "Location" not in r.headers
        assert r.headers["Docker-Distribution-API-Version"] == "registry/2.0"


async def test_two_host_headers_answer_400(client: httpx.AsyncClient) -> None:
    r = await client.get("/v2/", headers=[("Host", "a.test"), ("Host", "b.test")])
    assert r.status_code == 400 and error_codes(r) == ["HOST_INVALID"]


async def test_the_trailing_slash_redirect_keeps_a_valid_host(client: httpx.AsyncClient) -> None:
    r = await client.get("/v2", headers={"Host": "registry.test:5000"})
    assert r.status_code in (301, 307, 308) and r.headers["Location"] == "http://registry.test:5000/v2/"


async def test_the_token_challenge_realm_never_carries_a_hostile_host(settings: Settings) -> None:
    settings.auth.mode = "token"
    async with app_client(settings) as client:
        for host in HOSTILE_HOSTS:
            r = await client.get("/v2/", headers={"Host": host})
            assert r.status_code == 400 and "WWW-Authenticate" not in r.headers, host
        r = await client.get("/v2/", headers={"Host": "[::1]:5000"})
        assert r.status_code == 401
        assert r.headers["WWW-Authenticate"].startswith('Bearer realm="http://[::1]:5000/auth/token",')


async def test_the_access_log_escapes_what_the_client_controls(settings: Settings, caplog) -> None:
    settings.log.access = True
    async with app_client(settings) as client:
        with caplog.at_level(logging.INFO, logger="registry.access"):
            await client.get("/v2/a%0A1.2.3.4%20GET%20/forged%20200%200%200.1ms/x%00%09%5C/tags/list")
    lines = [r.getMessage() for r in caplog.records if r.name == "registry.access"]
    assert len(lines) == 1 and "\n" not in lines[0] and "\x00" not in lines[0] and "\t" not in lines[0]
    assert "/v2/a\\n1.2.3.4\\x20GET\\x20/forged\\x20200\\x200\\x200.1ms/x\\x00\\t\\\\/tags/list 400 " in lines[0]


async def test_error_log_lines_escape_the_method_and_path(settings: Settings, caplog) -> None:
    from starlette.requests import Request

    from registry.app import registry_error

    scope = {
        "type": "http",
        "method": "GET\x1b",
        "path": "/v2/a\x00b\u2028 forged\\",
        "headers": [],
        "query_string": b"",
    }
    with caplog.at_level(logging.ERROR, logger="registry"):
        error = registry_error(Request(scope), RuntimeError("boom"))
    assert (error.status, error.body()) == (500, {"errors": [{"code": "UNKNOWN", "message": "internal server error"}]})
    (line,) = [r.getMessage() for r in caplog.records if r.name == "registry"]
    assert line == "unexpected error on GET\\x1b /v2/a\\x00b\\u2028\\x20forged\\\\"


@pytest.mark.parametrize("name", ["team/app%0A", "a%0Ab", "%0A", "a%0D%0Ab", "a%00b", "a%E2%80%A8b"])
async def test_names_with_line_breaks_or_control_characters_answer_name_invalid(
    client: httpx.AsyncClient, name: str
) -> None:
    for method, path in [
        ("GET", f"/v2/{name}/tags/list"),
        ("GET", f"/v2/{name}/manifests/latest"),
        ("DELETE", f"/v2/{name}/manifests/latest"),
        ("POST", f"/v2/{name}/blobs/uploads/"),
        ("GET", f"/v2/{name}/blobs/sha256:{'a' * 64}"),
        ("GET", f"/v2/{name}/referrers/sha256:{'a' * 64}"),
    ]:
        r = await client.request(method, path)
        assert r.status_code == 400 and error_codes(r) == ["NAME_INVALID"], (method, path, r.status_code)


def test_the_paths_in_location_headers_are_those_of_the_named_routes(settings: Settings) -> None:
    from registry.app import create_app
    from registry.urls import blob_path, manifest_path, upload_path

    app = create_app(settings)
    name, digest, upload_id = "team/app", f"sha256:{'a' * 64}", "0f1e2d3c-0000-4000-8000-000000000000"
    assert app.url_path_for("get_blob", name=name, digest=digest) == blob_path(name, digest)
    assert app.url_path_for("get_manifest", name=name, reference=digest) == manifest_path(name, digest)
    assert app.url_path_for("upload_status", name=name, upload_id=upload_id) == upload_path(name, upload_id)


def test_every_route_is_named_after_its_handler(settings: Settings) -> None:
    from starlette.routing import Route

    from registry.app import create_app

    settings.auth.mode = "token"
    routes = [route for route in create_app(settings).routes if isinstance(route, Route)]
    assert not {"guarded", "identified"} & {route.name for route in routes}
    api = [route for route in routes if route.path.startswith(("/v1/", "/v2/"))]
    assert len(api) == 17, "every API endpoint, one route each"
    for route in api:
        assert route.endpoint.__name__ in (route.name, "guarded", "identified"), route.path


def test_no_handler_imports_storage() -> None:
    """Handlers and the web UI reach storage only through the facade (registry/facade.py)."""
    import ast
    from pathlib import Path

    import registry.handlers
    import registry.ui

    folders = [Path(registry.handlers.__file__).parent, Path(registry.ui.__file__).parent]
    for path in [path for folder in folders for path in folder.glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom):
                modules = [node.module or ""]
            assert not [m for m in modules if m == "storage" or m.startswith("storage.")], path.name
