"""Logging set-up: plain lines on stderr at the configured level."""

from __future__ import annotations

import logging
import sys

from registry.config import Settings


def configure_logging(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log.level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
