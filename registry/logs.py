"""Logging set-up: plain lines on stderr at the configured level."""

from __future__ import annotations

import logging
import sys

from registry.config import Settings


class _QuietTlsProbes(logging.Filter):
    """docker tries TLS before plain HTTP on every push and pull to an HTTP registry; the server's
    warning about each such probe says nothing useful, so it goes to the debug level."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.WARNING and record.getMessage() == "Invalid HTTP request received.":
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        return True


def configure_logging(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log.level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("uvicorn.error").addFilter(_QuietTlsProbes())
