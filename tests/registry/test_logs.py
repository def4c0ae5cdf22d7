"""registry/logs.py: the text and JSON formats, the request id on every line logged while serving a request
(in handlers, their threads and the error handler), exceptions, hostile paths kept on one line, and the
logging configuration granian and uvicorn share."""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import PlainTextResponse

from registry.app import create_app
from registry.config import Settings
from registry.logs import REQUEST_ID, JsonFormatter, TextFormatter

pytestmark = pytest.mark.anyio

handler_log = logging.getLogger("registry.test_handler")


def record(message: str = "hello %s", *args: object, **extra: object) -> logging.LogRecord:
    made = logging.LogRecord("registry.x", logging.WARNING, __file__, 1, message, args or ("world",), None)
    made.__dict__.update(extra)
    return made


def test_a_json_line_holds_time_level_logger_and_message() -> None:
    entry = json.loads(JsonFormatter().format(record()))
    assert set(entry) == {"time", "level", "logger", "message"}, "no request id outside a request"
    assert (entry["level"], entry["logger"], entry["message"]) == ("WARNING", "registry.x", "hello world")
    assert entry["time"].endswith("Z")
    stamp = datetime.datetime.fromisoformat(entry["time"])
    assert stamp.utcoffset() == datetime.timedelta(0)
    assert abs(stamp - datetime.datetime.now(datetime.UTC)) < datetime.timedelta(seconds=5)


def test_a_json_line_carries_extra_fields_and_the_request_id_of_its_context() -> None:
    token = REQUEST_ID.set("req-1")
    try:
        entry = json.loads(JsonFormatter().format(record(status=201, path="/v2/x")))
    finally:
        REQUEST_ID.reset(token)
    assert (entry["request_id"], entry["status"], entry["path"]) == ("req-1", 201, "/v2/x")
    text = TextFormatter().format(record(request_id="req-2"))
    assert text.endswith(" WARNING registry.x hello world request_id=req-2")


def test_an_exception_is_in_the_json_line_and_after_the_text_line() -> None:
    try:
        raise ValueError("bad thing")
    except ValueError:
        failed = record(exc_info=sys.exc_info())
    entry = json.loads(JsonFormatter().format(failed))
    assert entry["exception"].startswith("Traceback") and "ValueError: bad thing" in entry["exception"]
    lines = TextFormatter().format(failed).splitlines()
    assert lines[0].endswith("hello world") and lines[-1] == "ValueError: bad thing"


def test_whatever_a_message_holds_a_json_entry_is_one_line() -> None:
    hostile = 'a\nb\r\u2028\u2029\x00\x1b[31m"}{\\ \udcff'
    line = JsonFormatter().format(record("%s", hostile, path=hostile))
    assert "\n" not in line and "\r" not in line and line.isascii()
    entry = json.loads(line)
    assert entry["message"] == hostile and entry["path"] == hostile


# -- through the app, in process --------------------------------------------------------------------------


class Lines(logging.Handler):
    """Every record logged, formatted by `formatter`, one string each."""

    def __init__(self, formatter: logging.Formatter):
        super().__init__(logging.DEBUG)
        self.setFormatter(formatter)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def json_lines() -> Iterator[Lines]:
    lines = Lines(JsonFormatter())
    root = logging.getLogger()
    level = root.level
    root.addHandler(lines)
    root.setLevel(logging.INFO)
    yield lines
    root.removeHandler(lines)
    root.setLevel(level)


async def logs_in_handler(request: Request) -> PlainTextResponse:
    handler_log.info("in the handler")
    await asyncio.to_thread(handler_log.info, "in a thread of the handler")
    return PlainTextResponse("ok")


async def fails(request: Request) -> PlainTextResponse:
    raise RuntimeError("the handler broke")


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the registry app (access lines on) with two routes more: one that logs, one that raises."""
    settings.log.access = True
    app = create_app(settings)
    app.add_route("/logs", logs_in_handler)
    app.add_route("/fails", fails)
    transport = httpx.ASGITransport(app, raise_app_exceptions=False)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://r") as c:
        yield c


def entries(lines: Lines) -> list[dict[str, object]]:
    return [json.loads(line) for line in lines.lines]


async def test_every_line_of_a_request_carries_its_id_as_the_response_does(client, json_lines) -> None:
    response = await client.get("/logs", headers={"User-Agent": "docker/20.10 \x7f"})
    rid = response.headers["x-request-id"]
    mine = [e for e in entries(json_lines) if e.get("request_id") == rid]
    assert [e["message"] for e in mine[:2]] == ["in the handler", "in a thread of the handler"]
    (access,) = [e for e in mine if e["logger"] == "registry.access"]
    assert access["message"].startswith("127.0.0.1 GET /logs 200 2 ")
    assert {k: access[k] for k in ("client", "method", "path", "status", "bytes", "user_agent")} == {
        "client": "127.0.0.1",
        "method": "GET",
        "path": "/logs",
        "status": 200,
        "bytes": 2,
        "user_agent": "docker/20.10 \x7f",
    }
    assert isinstance(access["duration_ms"], float)
    second = await client.get("/logs", headers={"X-Request-Id": "from-the-proxy.42"})
    assert second.headers["x-request-id"] == "from-the-proxy.42"
    assert sum(e.get("request_id") == "from-the-proxy.42" for e in entries(json_lines)) == 3
    json_lines.lines.clear()
    logging.getLogger("registry.test_handler").info("outside any request")
    assert "request_id" not in entries(json_lines)[0]


async def test_an_unexpected_error_is_logged_with_its_traceback_and_request_id(client, json_lines) -> None:
    response = await client.get("/fails", headers={"X-Request-Id": "broken-1"})
    assert response.status_code == 500
    errors = [e for e in entries(json_lines) if e["level"] == "ERROR"]
    assert errors and errors[0]["request_id"] == "broken-1"
    assert "RuntimeError: the handler broke" in str(errors[0]["exception"])
    (access,) = [e for e in entries(json_lines) if e["logger"] == "registry.access"]
    assert (access["status"], access["request_id"]) == (500, "broken-1")


async def test_a_hostile_path_stays_on_one_line_in_both_formats(client, json_lines) -> None:
    text = Lines(TextFormatter())
    logging.getLogger("registry.access").addHandler(text)
    try:
        await client.get("/v2/a%0A2026-01-01%20ERROR%20forged%E2%80%A8x%00/tags/list")
    finally:
        logging.getLogger("registry.access").removeHandler(text)
    (access,) = [e for e in entries(json_lines) if e["logger"] == "registry.access"]
    assert access["path"] == "/v2/a\n2026-01-01 ERROR forged\u2028x\x00/tags/list"
    assert all("\n" not in line and "\u2028" not in line for line in json_lines.lines)
    (line,) = text.lines
    assert "/v2/a\\n2026-01-01\\x20ERROR\\x20forged\\u2028x\\x00/tags/list 4" in line and "\n" not in line
    assert line.endswith(f" request_id={access['request_id']}")


# -- the configuration of a process ------------------------------------------------------------------------

CONFIGURED = """
import logging, sys
from registry.config import load_settings
from registry.logs import configure_logging
configure_logging(load_settings(env={}, overrides={"log": {"format": sys.argv[1]}}))
logging.getLogger("_granian").info("Listening at: https://192.0.2.2:5000")
logging.getLogger("granian.access").info("an access line of granian's")
logging.getLogger("uvicorn.access").info("an access line of uvicorn's")
logging.getLogger("uvicorn.error").warning("Invalid HTTP request received.")
logging.getLogger("uvicorn.error").error("uvicorn says %s", "so")
logging.getLogger("registry").debug("not at level info")
"""


def configured_output(log_format: str) -> tuple[str, str]:
    done = subprocess.run(
        [sys.executable, "-c", CONFIGURED, log_format], capture_output=True, text=True, timeout=60, check=True
    )
    return done.stdout, done.stderr


def test_configured_json_sends_the_servers_loggers_to_stderr_as_json() -> None:
    stdout, stderr = configured_output("json")
    assert stdout == ""
    lines = [json.loads(line) for line in stderr.splitlines()]
    assert [(e["logger"], e["message"]) for e in lines] == [
        ("_granian", "Listening at: https://192.0.2.2:5000"),
        ("uvicorn.error", "uvicorn says so"),
    ], "the servers' access lines are the registry's own; docker's TLS probe warnings are debug lines"


def test_configured_text_is_one_plain_line_per_event() -> None:
    stdout, stderr = configured_output("text")
    assert stdout == ""
    lines = stderr.splitlines()
    assert len(lines) == 2 and lines[0].endswith(" INFO _granian Listening at: https://192.0.2.2:5000")
