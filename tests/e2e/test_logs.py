"""`registry serve` with `log.format: json` (granian, then uvicorn): after a docker push and pull, every line
the server wrote, its own start-up and shutdown lines and the ASGI server's included, is one JSON object, and
the access lines carry the request ids the responses did."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest

from tests.support.clients import Docker
from tests.support.server import RegistryServer

pytestmark = pytest.mark.e2e

HARNESS_LINE = "---- "  # the line ServerProcess writes to the log before each start (the command)


@pytest.mark.parametrize("server_kind", ["granian", "uvicorn"])
def test_the_whole_output_is_json_lines_after_a_push_and_pull(
    docker: Docker, base_image: str, tmp_path: Path, server_kind: str
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(f"log:\n  format: json\nhttp:\n  server: {server_kind}\n  workers: 2\n")
    server = RegistryServer(tmp_path / "data", tmp_path / "registry.log", config=config)
    server.start()
    tag = f"{server.host}/team/json-logs:{uuid.uuid4().hex[:12]}"
    image_id = docker.build(tag, base_image, {"note.txt": b"logged as JSON\n"})
    docker.run("push", tag)
    docker.run("rmi", tag)
    docker.run("pull", tag)
    assert docker.image_id(tag) == image_id
    with server.client() as client:
        answered = client.get("/v2/team/json-logs/tags/list", headers={"X-Request-Id": "from-the-proxy-7"})
        assert answered.headers["x-request-id"] == "from-the-proxy-7"
        generated = client.get("/v2/").headers["x-request-id"]
    server.wait_for_log(generated)
    time.sleep(0.2)
    server.stop()

    lines = [line for line in server.log_text().splitlines() if not line.startswith(HARNESS_LINE)]
    entries = [json.loads(line) for line in lines]  # fails on the first line that is not JSON
    assert all(isinstance(e, dict) and {"time", "level", "logger", "message"} <= set(e) for e in entries)
    access = [e for e in entries if e["logger"] == "registry.access"]
    methods = {(e["method"], e["path"].split("/")[-2], e["status"]) for e in access}
    assert ("PUT", "manifests", 201) in methods and ("GET", "manifests", 200) in methods
    assert all(e["request_id"] and e["user_agent"] is not None and e["client"] for e in access)
    assert any(e["user_agent"].startswith("docker/") for e in access)
    assert {"from-the-proxy-7", generated} <= {e["request_id"] for e in access}
    own = {e["logger"] for e in entries}
    assert "registry" in own, "the registry's start-up line"
    assert ("_granian" if server_kind == "granian" else "uvicorn.error") in own, "the server's own lines"
