"""Every metric of one app, on a `CollectorRegistry` of its own, and what fills them."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

if TYPE_CHECKING:
    from registry.gc import Report
    from registry.proxy.upstream import UpstreamError
    from storage.metadata import Figures

# Request durations: from a manifest read served from memory to a large layer pushed or pulled.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 30.0, 120.0)
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# What a collection removes, by the names of its report's fields (registry/gc.py Report).
GC_KINDS = {
    "manifests": ("manifests_removed", "manifest_bytes_removed"),
    "blobs": ("blobs_removed", "blob_bytes_removed"),
    "uploads": ("uploads_purged", "upload_bytes_purged"),
    "orphans": ("orphans_removed", "orphan_bytes_removed"),
    "leftovers": ("leftovers_removed", "leftover_bytes_removed"),
}

RequestSeries = tuple[Counter, Histogram, Counter, Counter]


class Metrics:
    """The registry's metrics, registered in `self.registry` (never prometheus_client's global one).

    Outside `registry serve` (tests, an ASGI server started by hand) `self.registry` is what /metrics
    shows. In its workers, PROMETHEUS_MULTIPROC_DIR was set before prometheus_client was imported,
    so every value also lives in that directory's files, and /metrics shows them merged over every
    worker (registry/metrics/exposition.py). Gauges of the index are `mostrecent` there (the newest
    reading of any worker), the one gauge of requests in flight `livesum` (live workers' sum).
    """

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry(auto_describe=False)
        self.requests = Counter(
            "registry_http_requests",
            "Requests answered, by route template, method and status",
            ["route", "method", "status"],
            registry=r,
        )
        self.duration = Histogram(
            "registry_http_request_duration_seconds",
            "Time from a request's arrival to its response's last byte, by route template and method",
            ["route", "method"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.received = Counter(
            "registry_http_received_bytes", "Request body bytes received, by route template", ["route"], registry=r
        )
        self.sent = Counter(
            "registry_http_sent_bytes", "Response body bytes sent, by route template", ["route"], registry=r
        )
        self.in_progress = Gauge(
            "registry_http_requests_in_progress", "Requests being served now", registry=r, multiprocess_mode="livesum"
        )
        self.auth_failures = Counter(
            "registry_auth_failures",
            "Requests refused for their credentials: 401 (none or wrong) and 403 (not allowed)",
            ["status"],
            registry=r,
        )
        self.throttled = Counter(
            "registry_http_throttled",
            "Requests answered 429 Too Many Requests, by route template",
            ["route"],
            registry=r,
        )
        self.cache_requests = Counter(
            "registry_cache_requests",
            "Pull-through cache answers by X-Registry-Cache: hit, miss, revalidated, stale",
            ["result"],
            registry=r,
        )
        self.upstream_errors = Counter(
            "registry_cache_upstream_errors",
            "Failed upstream requests: missing (404), denied, unreachable",
            ["upstream", "kind"],
            registry=r,
        )
        self.upstream_bytes = Counter(
            "registry_cache_upstream_bytes",
            "Bytes of manifests and blobs fetched from upstreams",
            ["upstream"],
            registry=r,
        )
        self.backend_errors = Counter(
            "registry_backend_errors",
            "Errors of the index (metadata database) and of storage met by requests",
            ["backend", "error"],
            registry=r,
        )
        self.gc_runs = Counter(
            "registry_gc_runs",
            "Collections run by this server (gc.interval): done, busy (another ran), failed",
            ["result"],
            registry=r,
        )
        self.gc_removed = Counter(
            "registry_gc_removed", "Items removed by this server's collections", ["kind"], registry=r
        )
        self.gc_removed_bytes = Counter(
            "registry_gc_removed_bytes", "Bytes freed by this server's collections", ["kind"], registry=r
        )

        def index_gauge(name: str, text: str, labels: tuple[str, ...] = ()) -> Gauge:
            return Gauge(name, text, labels, registry=r, multiprocess_mode="mostrecent")

        self.repositories = index_gauge("registry_repositories", "Repositories in the index")
        self.tags = index_gauge("registry_tags", "Tags in the index")
        self.manifests = index_gauge("registry_manifests", "Manifests in the index (one per repository holding it)")
        self.blobs = index_gauge("registry_blobs", "Blobs stored (manifests' bytes included), each once")
        self.stored_bytes = index_gauge("registry_stored_bytes", "Bytes of the blobs stored, each blob once")
        self.uploads = index_gauge(
            "registry_uploads_in_progress", "Upload sessions open (started, not finished or cancelled)"
        )
        self.index_read = index_gauge("registry_index_read_timestamp_seconds", "When the figures above were read")
        self.gc_last_run = index_gauge(
            "registry_gc_last_run_timestamp_seconds", "When the newest collection (server or `registry gc`) started"
        )
        self.gc_last_seconds = index_gauge(
            "registry_gc_last_run_duration_seconds", "How long the newest collection took"
        )
        self.gc_last_removed = index_gauge(
            "registry_gc_last_run_removed", "Items the newest collection removed", ("kind",)
        )
        self.gc_last_removed_bytes = index_gauge(
            "registry_gc_last_run_removed_bytes", "Bytes the newest collection freed", ("kind",)
        )
        # Series that exist from the start, at 0, so that rates over them work before the first event.
        for status in ("401", "403"):
            self.auth_failures.labels(status)
        for result in ("hit", "miss", "revalidated", "stale"):
            self.cache_requests.labels(result)
        for result in ("done", "busy", "failed"):
            self.gc_runs.labels(result)
        for kind in GC_KINDS:
            self.gc_removed.labels(kind)
            self.gc_removed_bytes.labels(kind)
        self.upstreams = UpstreamCounts(self)
        self._series: dict[tuple[str, str, str], RequestSeries] = {}

    def request(
        self, route: str, method: str, status: int, received: int, sent: int, seconds: float, cache: str | None
    ) -> None:
        """Count one answered request of `route` (a template, or `other`)."""
        method = method if method in METHODS else "other"
        key = (route, method, str(status))
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = (
                self.requests.labels(route, method, key[2]),
                self.duration.labels(route, method),
                self.received.labels(route),
                self.sent.labels(route),
            )
        requests, duration, received_bytes, sent_bytes = series
        requests.inc()
        duration.observe(seconds)
        if received:
            received_bytes.inc(received)
        if sent:
            sent_bytes.inc(sent)
        if status in (401, 403):
            self.auth_failures.labels(key[2]).inc()
        elif status == 429:
            self.throttled.labels(route).inc()
        if cache is not None:
            self.cache_requests.labels(cache).inc()

    def backend_error(self, backend: str, error: str) -> None:
        """Count an error of `backend` (index or storage), of exception class `error`."""
        self.backend_errors.labels(backend, error).inc()

    def gc_run(self, result: str, report: Report | None) -> None:
        """Count a collection this server ran (`result`: done, busy or failed), with its report when done."""
        self.gc_runs.labels(result).inc()
        if report is None:
            return
        for kind, (items, size) in GC_KINDS.items():
            self.gc_removed.labels(kind).inc(getattr(report, items))
            self.gc_removed_bytes.labels(kind).inc(getattr(report, size))

    def index_figures(self, figures: Figures) -> None:
        """Show `figures`, just read from the index."""
        self.repositories.set(figures.repositories)
        self.tags.set(figures.tags)
        self.manifests.set(figures.manifests)
        self.blobs.set(figures.blobs)
        self.stored_bytes.set(figures.blob_bytes)
        self.uploads.set(figures.uploads)
        self.index_read.set(time.time())
        if figures.gc_started_at is None or figures.gc_report is None:
            return
        report = json.loads(figures.gc_report)
        self.gc_last_run.set(figures.gc_started_at)
        self.gc_last_seconds.set(float(report.get("seconds", 0.0)))
        for kind, (items, size) in GC_KINDS.items():
            self.gc_last_removed.labels(kind).set(int(report.get(items, 0)))
            self.gc_last_removed_bytes.labels(kind).set(int(report.get(size, 0)))


class UpstreamCounts:
    """What the pull-through cache's upstream clients report (registry/proxy/upstream.py `Tally`)."""

    def __init__(self, metrics: Metrics):
        self.metrics = metrics

    def fetched(self, upstream: str, size: int) -> None:
        self.metrics.upstream_bytes.labels(_shown(upstream)).inc(size)

    def failed(self, upstream: str, error: UpstreamError) -> None:
        kind = type(error).__name__.removeprefix("Upstream").lower()  # missing, denied, unreachable
        self.metrics.upstream_errors.labels(_shown(upstream), kind).inc()


def _shown(url: str) -> str:
    """An upstream's URL as a label: without credentials, should the URL hold any."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))
