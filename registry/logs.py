"""Logging set-up: one line per event on stderr, plain text or a JSON object (`log.format`), each line
logged while serving a request carrying that request's id; the ASGI server's own loggers included."""

from __future__ import annotations

import datetime
import json
import logging
import logging.config
from contextvars import ContextVar
from typing import Any

from registry.config import Settings

# The id of the request being served (set by registry/edge.py for the request's task, copied into the
# threads it starts by asyncio.to_thread); None outside a request.
REQUEST_ID: ContextVar[str | None] = ContextVar("registry_request_id", default=None)

# Attributes of a LogRecord that are not fields a caller added with `extra=` (those go into JSON lines),
# and uvicorn's copy of its message with terminal colors.
_RECORD_ATTRIBUTES = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "color_message"}


def _request_id(record: logging.LogRecord) -> str | None:
    found = getattr(record, "request_id", None)
    return found if isinstance(found, str) else REQUEST_ID.get()


class TextFormatter(logging.Formatter):
    """`TIME LEVEL LOGGER MESSAGE`, then ` request_id=ID` when logged while serving a request, then the
    exception's traceback on the lines after. Fields a client controls are escaped by the caller
    (registry/edge.py's `printable`)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        request_id = _request_id(record)
        return line if request_id is None else f"{line} request_id={request_id}"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: `time` (ISO 8601, UTC, milliseconds), `level`, `logger`, `message`,
    `request_id` when logged while serving a request, `exception` (the traceback's text) when there is
    one, and every field given with `extra=` (the access line's client, method, path, status...).
    JSON escaping keeps whatever a client sent on the one line, control and separator characters
    included (`ensure_ascii`)."""

    def format(self, record: logging.LogRecord) -> str:
        created = datetime.datetime.fromtimestamp(record.created, datetime.UTC)
        entry: dict[str, Any] = {
            "time": created.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = _request_id(record)
        if request_id is not None:
            entry["request_id"] = request_id
        for name, value in record.__dict__.items():
            if name not in _RECORD_ATTRIBUTES and name not in entry and not name.startswith("_"):
                entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=True, default=str)


class QuietTlsProbes(logging.Filter):
    """docker tries TLS before plain HTTP on every push and pull to an HTTP registry; uvicorn's warning
    about each such probe says nothing useful, so it goes to the debug level."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.WARNING and record.getMessage() == "Invalid HTTP request received.":
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        return True


_FORMATTERS = {"text": "registry.logs.TextFormatter", "json": "registry.logs.JsonFormatter"}


def logging_config(settings: Settings) -> dict[str, Any]:
    """The `logging.config.dictConfig` of the settings: every logger writes to stderr through the one
    handler of the root logger, in `log.format`. granian's logger (`_granian`), which granian gives a
    handler of its own on stdout, and uvicorn's are sent there too; their access loggers are silenced.
    granian applies this in its main process and in each worker (`log_dictconfig`), so its own lines
    share the format."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"registry": {"()": _FORMATTERS[settings.log.format]}},
        "filters": {"quiet_tls_probes": {"()": "registry.logs.QuietTlsProbes"}},
        "handlers": {
            "stderr": {"class": "logging.StreamHandler", "stream": "ext://sys.stderr", "formatter": "registry"}
        },
        "root": {"level": settings.log.level.upper(), "handlers": ["stderr"]},
        "loggers": {
            "_granian": {"handlers": [], "propagate": True},
            "uvicorn": {"handlers": [], "propagate": True},
            "uvicorn.error": {"handlers": [], "propagate": True, "filters": ["quiet_tls_probes"]},
            # The registry writes the one access line (registry/edge.py); the servers' own would repeat it
            # with the query string, which may hold secrets.
            "granian.access": {"handlers": [], "propagate": False},
            "uvicorn.access": {"handlers": [], "propagate": False},
        },
    }


def configure_logging(settings: Settings) -> None:
    """Send every log line to stderr in the settings' format and level (replacing the root logger's handlers)."""
    logging.config.dictConfig(logging_config(settings))
