"""The index's figures (repositories, manifests, blobs, stored bytes, open uploads, the newest
collection), read in the background now and then: a scrape never queries the index."""

from __future__ import annotations

import asyncio
import logging

from registry.metrics.families import Metrics
from storage.metadata import FigureQueries

log = logging.getLogger("registry.metrics")


async def read_figures_every(metrics: Metrics, figures: FigureQueries, interval_s: float) -> None:
    """Read the figures into `metrics` at once, then every `interval_s` seconds, forever; a failed
    read is logged and the figures shown stay those of the last good one."""
    while True:
        try:
            metrics.index_figures(await figures.read())
        except Exception as e:
            log.warning("reading the index figures for /metrics failed: %s", e)
        await asyncio.sleep(interval_s)
