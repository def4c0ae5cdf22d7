"""The base endpoint, health, and error shapes for requests no route serves."""

from __future__ import annotations

import httpx
import pytest

from tests.support import error_codes

pytestmark = pytest.mark.anyio


async def test_v2_answers_with_the_api_version_header(client: httpx.AsyncClient) -> None:
    r = await client.get("/v2/")
    assert r.status_code == 200
    assert r.headers["Docker-Distribution-API-Version"] == "registry/2.0"
    head = await client.head("/v2/")
    assert head.status_code == 200


async def test_healthz_is_ok_when_the_index_answers(client: httpx.AsyncClient) -> None:
    r = await client.get("/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok"}


async def test_unknown_endpoint_answers_404_in_the_oci_error_format(client: httpx.AsyncClient) -> None:
    r = await client.get("/v2/team/app/nothing-here/x")
    assert r.status_code == 404
    assert error_codes(r) == ["NOT_FOUND"]


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
