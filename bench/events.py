"""What events (webhooks) cost a push, and how fast they are delivered.

In process (the app through httpx's ASGI transport, disk and SQLite, as the API tests run it): the
latency of manifest PUTs (each with a new tag, its blobs pushed beforehand) with no endpoint, with one
endpoint and with one endpoint that is down (events pile up in the outbox); then the delivery
throughput of one endpoint to a local receiver (aiohttp.web on loopback) from a full outbox. Prints
the numbers and writes bench/results/events.json.

    .venv/bin/python -m bench.events
    .venv/bin/python -m bench.events --puts 2000 --events 20000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench import RESULTS_DIR
from registry.config import EventEndpointSettings, Settings, load_settings
from registry.events import Delivery
from storage.metadata import OutboxEvent, open_metadata
from tests.support.app import running_app
from tests.support.content import make_image, push_blob
from tests.support.receiver import Receiver

RESULTS = RESULTS_DIR / "events.json"


def _settings(directory: Path, url: str | None) -> Settings:
    settings = load_settings(env={}, overrides={"data_dir": str(directory), "log": {"access": False}})
    if url is not None:
        settings.events.endpoints = [EventEndpointSettings(name="hook", url=url, backoff="1s", backoff_max="1s")]
    return settings


async def _put_latencies(settings: Settings, puts: int) -> dict[str, float]:
    """Manifest PUT latencies (ms): p50, p99 and mean."""
    async with running_app(settings) as (_, client):
        image = make_image()
        for blob in [image.config, *image.layers]:
            await push_blob(client, "bench/app", blob)
        took = []
        for i in range(puts + 50):
            started = time.perf_counter()
            r = await client.put(
                f"/v2/bench/app/manifests/t{i}", content=image.manifest, headers={"Content-Type": image.media_type}
            )
            if i >= 50:  # warm-up left out
                took.append((time.perf_counter() - started) * 1000)
            assert r.status_code == 201, r.text
    took.sort()
    return {
        "p50_ms": round(statistics.median(took), 3),
        "p99_ms": round(took[int(len(took) * 0.99) - 1], 3),
        "mean_ms": round(statistics.fmean(took), 3),
    }


async def _throughput(directory: Path, count: int) -> dict[str, float]:
    """Events per second from a full outbox of `count` events (bodies as a manifest push writes) to a
    receiver on loopback, in envelopes of up to 100."""
    metadata = open_metadata(f"sqlite:///{directory}/index.db")
    await metadata.open()
    body = json.dumps(
        {
            "id": "2d3e3c8a-6a07-4d1c-9f0b-5c9a1b0f6a11",
            "timestamp": "2026-12-01T00:00:00.123456Z",
            "action": "push",
            "target": {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "size": 474,
                "digest": "sha256:" + "a" * 64,
                "length": 474,
                "repository": "bench/app",
                "url": "http://registry.test/v2/bench/app/manifests/sha256:" + "a" * 64,
                "tag": "1",
            },
            "request": {"id": "r", "addr": "127.0.0.1", "host": "h", "method": "PUT", "useragent": "docker/27"},
            "actor": {"name": "ci"},
            "source": {"addr": "h:5000", "instanceID": "i"},
        }
    )
    for start in range(0, count, 1000):
        await metadata.events.enqueue([OutboxEvent("hook", body)] * min(1000, count - start))
    async with Receiver() as receiver, aiohttp.ClientSession() as session:
        endpoint = EventEndpointSettings(name="hook", url=receiver.url)
        delivery = Delivery(endpoint, metadata.events, metadata.leases, asyncio.Event())
        started = time.perf_counter()
        sent = 0
        while sent < count:
            sent += await delivery.step(session)
        took = time.perf_counter() - started
    await metadata.close()
    assert len(receiver.events) == count
    return {"events": count, "seconds": round(took, 3), "events_per_s": round(count / took)}


async def run(puts: int, events: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        results["put_no_endpoint"] = await _put_latencies(_settings(base / "none", None), puts)
        async with Receiver() as receiver:
            results["put_one_endpoint"] = await _put_latencies(_settings(base / "one", receiver.url), puts)
            delivered = len(receiver.events)
        results["put_one_endpoint"]["delivered_meanwhile"] = delivered
        results["put_endpoint_down"] = await _put_latencies(_settings(base / "down", "http://127.0.0.1:9/"), puts)
        (base / "throughput").mkdir()
        results["delivery"] = await _throughput(base / "throughput", events)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--puts", type=int, default=1000, help="manifest PUTs timed per case")
    parser.add_argument("--events", type=int, default=10000, help="events delivered for the throughput")
    args = parser.parse_args()
    results = asyncio.run(run(args.puts, args.events))
    print(json.dumps(results, indent=2))
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
