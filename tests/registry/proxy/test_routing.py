"""Which names are caches of which upstream (registry/proxy/routing.py, and PullThrough.route for the
mirror): by prefix and alias, by containerd's `?ns=` host, and unprefixed names through Docker's mirror;
Docker Hub's one-component names; every route to one upstream name reaching one repository here."""

from __future__ import annotations

import pytest

from registry.config import ProxySettings, UpstreamSettings
from registry.proxy.routing import Route, Routes
from tests.support.content import OCI_MANIFEST, digest_of, make_image, push_image
from tests.support.fake_upstream import FakeUpstream, cache_app

pytestmark = pytest.mark.anyio


def routes(*upstreams: UpstreamSettings) -> Routes:
    return Routes(ProxySettings(upstreams=list(upstreams)))


def where(route: Route | None) -> tuple[str, str, str] | None:
    """The prefix of the upstream a route reaches, the repository here and the name upstream."""
    return None if route is None else (route.cached.prefix, route.repository, route.remote)


DIST = UpstreamSettings(prefix="dist", url="http://127.0.0.1:1", aliases=["cncf"], hosts=["registry.example:5000"])
HUB = UpstreamSettings(
    prefix="dockerhub", url="http://127.0.0.1:2", aliases=["hub"], hosts=["docker.io", "registry-1.docker.io"]
)


def test_a_prefix_names_the_upstream_and_the_rest_is_the_name_there() -> None:
    found = routes(DIST, HUB)
    assert where(found.by_prefix("dist/team/app")) == ("dist", "dist/team/app", "team/app")
    assert where(found.by_prefix("dist/app")) == ("dist", "dist/app", "app"), "no library/ outside Docker Hub"
    assert found.by_prefix("team/app") is None
    assert found.by_prefix("distx/app") is None
    assert found.by_prefix("dist") is None, "the prefix alone names nothing upstream"
    assert found.by_prefix("app/dist/x") is None, "only the first component is a prefix"
    assert sorted(found.prefixes) == ["cncf", "dist", "dockerhub", "hub"]


def test_an_alias_reaches_the_repository_of_the_prefix() -> None:
    found = routes(DIST, HUB)
    assert where(found.by_prefix("cncf/team/app")) == ("dist", "dist/team/app", "team/app")
    assert found.by_prefix("cncf/team/app").cached is found.by_prefix("dist/team/app").cached


def test_a_host_names_the_upstream_and_the_path_is_the_name_there() -> None:
    found = routes(DIST, HUB)
    assert where(found.by_host("team/app", "registry.example:5000")) == ("dist", "dist/team/app", "team/app")
    assert where(found.by_host("dist/app", "docker.io")) == ("dockerhub", "dockerhub/dist/app", "dist/app")
    assert found.by_host("team/app", "registry.example") is None, "the port is part of the host"
    assert found.by_host("team/app", None) is None
    assert found.by_host("team/app", "") is None


def test_the_hosts_default_to_the_prefix() -> None:
    found = routes(UpstreamSettings(prefix="ghcr", url="http://127.0.0.1:3"))
    assert where(found.by_host("org/tool", "ghcr")) == ("ghcr", "ghcr/org/tool", "org/tool")
    assert found.by_host("org/tool", "ghcr.io") is None


def test_the_mirror_is_the_one_upstream_marked_so() -> None:
    assert routes(DIST, HUB).by_mirror("team/app") is None
    mirror = UpstreamSettings(prefix="dist", url="http://127.0.0.1:1", mirror=True)
    assert where(routes(mirror, HUB).by_mirror("team/app")) == ("dist", "dist/team/app", "team/app")


def test_docker_hub_one_component_names_are_library_ones_on_every_route() -> None:
    hub = UpstreamSettings(
        prefix="dockerhub", url="http://127.0.0.1:2", aliases=["hub"], hosts=["docker.io"], mirror=True
    )
    found = routes(DIST, hub)
    every = [
        found.by_prefix("dockerhub/busybox"),
        found.by_prefix("dockerhub/library/busybox"),
        found.by_prefix("hub/busybox"),
        found.by_prefix("hub/library/busybox"),
        found.by_host("busybox", "docker.io"),
        found.by_host("library/busybox", "docker.io"),
        found.by_mirror("busybox"),
        found.by_mirror("library/busybox"),
    ]
    assert {where(route) for route in every} == {("dockerhub", "dockerhub/library/busybox", "library/busybox")}
    assert where(found.by_prefix("hub/team/app")) == ("dockerhub", "dockerhub/team/app", "team/app")


def test_settings_become_the_upstream_of_each_cache() -> None:
    settings = UpstreamSettings(prefix="dist", url="http://127.0.0.1:1/", tag_ttl="90s", max_bytes=1000)
    (cached,) = routes(settings).caches
    assert (cached.tag_ttl_s, cached.max_bytes, cached.prefixes, cached.mirror) == (90.0, 1000, ("dist",), False)
    assert cached.upstream.url == "http://127.0.0.1:1", "no trailing slash, so paths join cleanly"
    assert cached.upstream.hosts == ["dist"]


# -- through the app: the mirror and the one repository per upstream name --------------------------------------


async def test_the_mirror_serves_only_names_without_a_repository_here(tmp_path) -> None:
    local, remote, other = make_image(), make_image(), make_image()
    async with (
        FakeUpstream() as upstream,
        cache_app(tmp_path, {"prefix": "hub", "url": upstream.url, "mirror": True}) as (
            app,
            client,
        ),
    ):
        upstream.add_image("team/app", remote, tag="1")
        upstream.add_image("team/other", other, tag="1")
        await push_image(client, "team/app", local, "1")
        r = await client.get("/v2/team/app/manifests/1", headers={"Accept": OCI_MANIFEST})
        assert r.status_code == 200 and r.content == local.manifest
        assert "X-Registry-Cache" not in r.headers
        assert upstream.requests == [], "a repository here is never looked up upstream"

        r = await client.get("/v2/team/other/manifests/1", headers={"Accept": OCI_MANIFEST})
        assert r.status_code == 200 and r.content == other.manifest
        assert r.headers["X-Registry-Cache"] == "miss"
        pull_through = app.state.registry.pull_through
        assert where(await pull_through.route("team/other", None)) == ("hub", "hub/team/other", "team/other")
        assert await pull_through.route("team/app", None) is None
        r = await client.get("/v2/_catalog")
        assert r.json()["repositories"] == ["hub/team/other", "team/app"]


async def test_without_a_mirror_an_unknown_name_is_unknown_here(tmp_path) -> None:
    async with FakeUpstream() as upstream, cache_app(tmp_path, {"prefix": "dist", "url": upstream.url}) as (_, client):
        upstream.add_image("team/app", make_image(), tag="1")
        r = await client.get("/v2/team/app/manifests/1")
        assert r.status_code == 404
        assert upstream.requests == []


async def test_a_namespace_host_wins_over_a_prefix(tmp_path) -> None:
    image = make_image()
    async with (
        FakeUpstream() as dist,
        FakeUpstream() as hub,
        cache_app(
            tmp_path,
            {"prefix": "dist", "url": dist.url},
            {"prefix": "dockerhub", "url": hub.url, "hosts": ["docker.io"]},
        ) as (_, client),
    ):
        hub.add_image("dist/app", image, tag="1")  # a Docker Hub user called "dist"
        r = await client.get("/v2/dist/app/manifests/1", params={"ns": "docker.io"}, headers={"Accept": OCI_MANIFEST})
        assert r.status_code == 200 and r.content == image.manifest
        assert dist.requests == []
        assert hub.count("GET", "/v2/dist/app/manifests/1") == 1


async def test_every_route_to_one_upstream_name_reaches_one_repository(tmp_path) -> None:
    image = make_image()
    hub = {"prefix": "dockerhub", "aliases": ["hub"], "hosts": ["docker.io"], "mirror": True, "tag_ttl": "1h"}
    async with FakeUpstream() as upstream, cache_app(tmp_path, hub | {"url": upstream.url}) as (_, client):
        digest = upstream.add_image("library/busybox", image, tag="1.36")
        layer = digest_of(image.layers[0])
        names = [
            ("dockerhub/busybox", None),
            ("dockerhub/library/busybox", None),
            ("hub/busybox", None),
            ("busybox", "docker.io"),
            ("library/busybox", "docker.io"),
            ("busybox", None),
            ("library/busybox", None),
        ]
        for name, ns in names:
            params = {"ns": ns} if ns else {}
            r = await client.get(f"/v2/{name}/manifests/1.36", params=params, headers={"Accept": OCI_MANIFEST})
            assert r.status_code == 200 and r.content == image.manifest, name
            assert r.headers["Docker-Content-Digest"] == digest
            r = await client.get(f"/v2/{name}/blobs/{layer}", params=params)
            assert r.status_code == 200 and r.content == image.layers[0], name
        assert upstream.count("GET", "/v2/library/busybox/manifests/1.36") == 1
        assert upstream.count("GET", f"/v2/library/busybox/blobs/{layer}") == 1
        assert len(upstream.requests) == 2, "each name, each route: the one repository's cache"
        r = await client.get("/v2/_catalog")
        assert r.json()["repositories"] == ["dockerhub/library/busybox"]
        r = await client.get("/v2/hub/busybox/tags/list")
        assert r.json()["tags"] == ["1.36"]
