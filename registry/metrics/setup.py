"""What the app adds for metrics, from the `metrics.*` settings: the counting middleware, the /metrics
route (unless a listener of its own serves it) and the background reading of the index's figures."""

from __future__ import annotations

import os
from collections.abc import Coroutine
from typing import Any

from starlette.middleware import Middleware
from starlette.routing import Route

from registry.config import Settings
from registry.metrics.counting import Counted
from registry.metrics.exposition import DIRECTORY_VARIABLE, Exposition, metrics_endpoint, scrape_token
from registry.metrics.families import Metrics
from registry.metrics.figures import read_figures_every
from storage.metadata import Metadata

PATH = "/metrics"


def metrics_middleware(settings: Settings, metrics: Metrics) -> list[Middleware]:
    """The middleware counting requests into `metrics` (none with metrics off)."""
    return [Middleware(Counted, metrics=metrics)] if settings.metrics.enabled else []


def metrics_routes(settings: Settings, metrics: Metrics) -> list[Route]:
    """GET /metrics on the API port: with metrics on and no `metrics.listen`. It shows every worker's
    values when PROMETHEUS_MULTIPROC_DIR is set (by `registry serve`), else this app's own."""
    if not settings.metrics.enabled or settings.metrics.listen is not None:
        return []
    exposition = Exposition(metrics.registry, os.environ.get(DIRECTORY_VARIABLE) or None)
    endpoint = metrics_endpoint(exposition, scrape_token(settings.metrics))
    return [Route(PATH, endpoint, methods=["GET"], name="metrics")]


def metrics_work(settings: Settings, metrics: Metrics, metadata: Metadata) -> list[Coroutine[Any, Any, None]]:
    """The background work metrics need while the app runs (reading the index's figures)."""
    if not settings.metrics.enabled:
        return []
    return [read_figures_every(metrics, metadata.figures, settings.metrics.index_refresh_s)]
