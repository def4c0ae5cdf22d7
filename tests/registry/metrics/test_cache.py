"""The pull-through cache's metrics through the whole app and a real HTTP upstream: answers by
X-Registry-Cache at the edge, bytes fetched and failures reported by the upstream client."""

from __future__ import annotations

import pytest

from registry.metrics.exposition import Exposition
from registry.metrics.families import Metrics
from tests.support.content import digest_of, make_image
from tests.support.fake_upstream import FakeUpstream, cache_app
from tests.support.metrics import Scrape

pytestmark = pytest.mark.anyio


async def test_hits_misses_upstream_bytes_and_errors_are_counted(tmp_path) -> None:
    image = make_image(layers=1)
    async with FakeUpstream() as upstream:
        settings = {"prefix": "dist", "url": upstream.url, "tag_ttl": "1h"}
        async with cache_app(tmp_path, settings) as (_, client):
            upstream.add_image("team/app", image, tag="1")
            assert (await client.get("/v2/dist/team/app/manifests/1")).headers["X-Registry-Cache"] == "miss"
            assert (await client.get("/v2/dist/team/app/manifests/1")).headers["X-Registry-Cache"] == "hit"
            layer = f"/v2/dist/team/app/blobs/{digest_of(image.layers[0])}"
            assert (await client.get(layer)).content == image.layers[0]
            assert (await client.get("/v2/dist/team/gone/manifests/1")).status_code == 404
            upstream.status = 503
            assert (await client.get("/v2/dist/team/other/manifests/1")).status_code == 503
            found = Scrape((await client.get("/metrics")).text)
    assert found.value("registry_cache_requests_total", result="miss") == 2  # the manifest, then the layer
    assert found.value("registry_cache_requests_total", result="hit") == 1
    fetched = found.value("registry_cache_upstream_bytes_total", upstream=upstream.url)
    assert fetched == len(image.manifest) + len(image.layers[0])
    assert found.value("registry_cache_upstream_errors_total", upstream=upstream.url, kind="missing") == 1
    assert found.value("registry_cache_upstream_errors_total", upstream=upstream.url, kind="unreachable") == 1


def test_an_upstream_url_is_shown_without_credentials() -> None:
    metrics = Metrics()
    metrics.upstreams.fetched("https://robot:secret@registry.example:5000/", 10)
    found = Scrape(Exposition(metrics.registry, None).render().decode())
    assert found.value("registry_cache_upstream_bytes_total", upstream="https://registry.example:5000/") == 10
    assert "secret" not in found.text
