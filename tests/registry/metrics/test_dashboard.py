"""deploy/grafana-dashboard.json: every query is valid PromQL, and every metric it reads is one /metrics shows
(after traffic over the routes the panels look at)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import promql_parser
import pytest

from registry.config import Settings
from tests.support.app import running_app
from tests.support.content import make_image, push_image
from tests.support.metrics import Scrape

pytestmark = pytest.mark.anyio

DASHBOARD = Path(__file__).parents[3] / "deploy" / "grafana-dashboard.json"
# What Grafana puts in place of the dashboard's variables before a query reaches Prometheus.
VARIABLES = {"$__rate_interval": "1m", "$instance": ".*"}


def expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    found = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(found) > 20
    return found


def metric_names(node: Any) -> set[str]:
    """The metric names the selectors of a parsed PromQL expression read."""
    if isinstance(node, promql_parser.VectorSelector):
        return {node.name}
    names: set[str] = set()
    for attribute in ("expr", "lhs", "rhs", "vector_selector", "param"):
        child = getattr(node, attribute, None)
        if child is not None and not isinstance(child, str | int | float):
            names |= metric_names(child)
    for child in getattr(node, "args", None) or []:
        names |= metric_names(child)
    return names


async def test_every_metric_the_dashboard_reads_is_exposed(settings: Settings):
    async with running_app(settings) as (_, client):
        await push_image(client, "team/app", make_image(), "1.0")
        await client.get("/v2/team/app/manifests/1.0")
        found = Scrape((await client.get("/metrics")).text)
    exposed = found.sample_names()
    used: set[str] = set()
    for expr in expressions():
        for variable, value in VARIABLES.items():
            expr = expr.replace(variable, value)
        used |= metric_names(promql_parser.parse(expr))
    assert {"registry_http_requests_total", "registry_http_request_duration_seconds_bucket"} <= used
    assert sorted(used - exposed) == []


def test_the_dashboard_s_panels_fit_the_grid_and_use_its_data_source():
    dashboard = json.loads(DASHBOARD.read_text())
    assert {v["name"] for v in dashboard["templating"]["list"]} == {"datasource", "instance"}
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] == "${datasource}"
            assert 'instance=~"$instance"' in target["expr"]
