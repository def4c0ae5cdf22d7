"""Events (webhooks) of `registry serve` for what the Docker engine does: `docker push`, `docker pull`
and a delete reach a real receiver in Distribution's format; CNCF Distribution 2.8 with notifications
to the same kind of receiver, for the same push, pull and delete, sends events of the same keys and
value types per action. Events outlive a receiver outage and a kill -9 of the lease holder."""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.clients import Docker
from tests.support.receiver import ReceiverThread
from tests.support.server import RegistryServer, start_server
from tests.support.services import require_service
from tests.support.upstreams import Distribution, distribution_available

pytestmark = pytest.mark.e2e

MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
ENVELOPE = "application/vnd.docker.distribution.events.v1+json"


@pytest.fixture
def receiver() -> Iterator[ReceiverThread]:
    hook = ReceiverThread()
    yield hook
    hook.close()


@pytest.fixture
def hooked_registry(tmp_path: Path, receiver: ReceiverThread) -> Iterator[RegistryServer]:
    config = tmp_path / "config.yaml"
    config.write_text(f"events:\n  pulls: true\n  endpoints:\n    - name: hook\n      url: {receiver.url}\n")
    server = start_server(tmp_path, config)
    yield server
    server.stop()


class NotifyingDistribution(Distribution):
    """Distribution 2.8 with a notification endpoint."""

    def __init__(self, directory: Path, hook: str):
        super().__init__(directory)
        self.hook = hook

    def config(self) -> dict[str, object]:
        config = super().config()
        config["notifications"] = {
            "endpoints": [{"name": "hook", "url": self.hook, "timeout": "2s", "threshold": 5, "backoff": "1s"}]
        }
        return config


def _kind(event: dict[str, Any]) -> str:
    """What an event is about: `push manifest`, `pull blob`, `delete manifest`..."""
    target = event["target"]
    if "mediaType" in target:
        what = "blob" if target["mediaType"] == "application/octet-stream" else "manifest"
    else:
        what = "tag" if "tag" in target else "manifest" if "digest" in target else "repository"
    return f"{event['action']} {what}"


def _shape(value: Any) -> Any:
    """The keys and value types of `value`, nested."""
    if isinstance(value, dict):
        return {key: _shape(item) for key, item in value.items()}
    return type(value).__name__


def _shapes(events: list[dict[str, Any]], kind: str) -> set[str]:
    return {json.dumps(_shape(e), sort_keys=True) for e in events if _kind(e) == kind}


def _push_pull_delete(docker: Docker, base_image: str, host: str) -> str:
    """Push an image (two layers on the base) to `host`, pull it back (and its manifest by tag, which
    docker only HEADs: Distribution reports HEADs as pulls, we report GETs only), delete its manifest;
    returns its digest."""
    reference = docker.track(f"{host}/team/app:{uuid.uuid4().hex[:8]}")
    docker.build(reference, base_image, {"/data/payload.bin": os.urandom(64 << 10)})
    push = docker.run("push", reference).stdout
    digest = push.split("digest: ")[1].split()[0]
    docker.run("rmi", reference)
    docker.run("pull", reference)  # a HEAD by tag, then GETs by digest
    tag = reference.rsplit(":", 1)[1]
    r = httpx.get(f"http://{host}/v2/team/app/manifests/{tag}", headers={"Accept": MANIFEST}, timeout=30)
    assert r.status_code == 200, r.text
    r = httpx.delete(f"http://{host}/v2/team/app/manifests/{digest}", timeout=30)
    assert r.status_code == 202, r.text
    return digest


def test_docker_push_pull_and_delete_are_reported_like_distribution(
    docker: Docker, base_image: str, hooked_registry: RegistryServer, receiver: ReceiverThread, tmp_path: Path
) -> None:
    digest = _push_pull_delete(docker, base_image, hooked_registry.host)

    def complete(events: list[dict[str, Any]]) -> bool:
        kinds = {_kind(e) for e in events}
        return {"push blob", "push manifest", "pull manifest", "pull blob", "delete manifest"} <= kinds

    ours = receiver.wait_until(complete)
    assert set(receiver.content_types) == {ENVELOPE}
    (pushed,) = [e for e in ours if _kind(e) == "push manifest"]
    assert pushed["target"]["digest"] == digest and pushed["target"]["mediaType"] == MANIFEST
    assert pushed["target"]["url"] == f"http://{hooked_registry.host}/v2/team/app/manifests/{digest}"
    assert pushed["request"]["useragent"].startswith("docker/") and pushed["request"]["method"] == "PUT"
    blobs = [e for e in ours if _kind(e) == "push blob"]
    assert len(blobs) >= 2  # the config and the layers docker did not find there (mounts aside)
    (deleted,) = [e for e in ours if _kind(e) == "delete manifest"]
    assert deleted["target"] == {"digest": digest, "repository": "team/app"}
    ids = [e["id"] for e in ours]
    assert len(ids) == len(set(ids))  # each once

    require_service(distribution_available(), "CNCF Distribution 2.8 (`docker-registry`)")
    theirs_receiver = ReceiverThread()
    distribution = NotifyingDistribution(tmp_path / "distribution", theirs_receiver.url).start()
    try:
        _push_pull_delete(docker, base_image, distribution.host)
        theirs = theirs_receiver.wait_until(complete)
    finally:
        distribution.stop()
        theirs_receiver.close()
    assert set(theirs_receiver.content_types) == {ENVELOPE}
    # Every shape each kind of event takes (with and without a tag, say), ours against theirs.
    for kind in ("push blob", "push manifest", "pull manifest", "pull blob", "delete manifest"):
        assert _shapes(ours, kind) == _shapes(theirs, kind), kind


def test_events_outlive_a_receiver_outage_and_a_killed_lease_holder(tmp_path: Path, receiver: ReceiverThread) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        "events:\n  endpoints:\n"
        f"    - {{name: hook, url: '{receiver.url}', timeout: 1s, backoff: 0.2s, backoff_max: 0.5s}}\n"
    )
    receiver.status = 503
    server = start_server(tmp_path, config)
    digests = []
    with server.client() as client:
        for i in range(5):
            data = f"layer {i}".encode()
            digests.append("sha256:" + hashlib.sha256(data).hexdigest())
            r = client.post("/v2/team/app/blobs/uploads/", params={"digest": digests[-1]}, content=data)
            assert r.status_code == 201, r.text
    deadline = time.monotonic() + 10
    while receiver.attempts < 2:  # a worker holds the endpoint's lease and retries
        assert time.monotonic() < deadline, "no delivery was attempted"
        time.sleep(0.05)
    server.kill9()  # the holder dies with its lease (30 s) still running
    receiver.status = 200
    server.start()
    try:
        receiver.wait_until(lambda events: len(events) >= 5, timeout_s=60)
        time.sleep(1.5)  # a duplicate would come within the holder's poll
    finally:
        server.stop()
    assert [e["target"]["digest"] for e in receiver.events] == digests
