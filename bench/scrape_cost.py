"""What a scrape of /metrics costs the registry's processes: `registry serve` with two workers, after traffic over
every route (so /metrics holds a realistic number of series), scraped `--scrapes` times one after another, on the
API port (one worker merges every worker's files) and on a listener of its own (`metrics.listen`: the main process
does). Prints the CPU seconds (user + system, from /proc) the workers and the main process used per scrape, less
what they used idle over as long, and the size of the scrape; and, for comparison, what a GET /v2/ costs.

Run from the project directory:  .venv/bin/python -m bench.scrape_cost [--scrapes 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import httpx

from bench.metrics import cpu_of, tree_pids
from bench.servers import Server, start_ours
from tests.support.content import digest_of, make_image, push_blob, push_image, push_referrer
from tests.support.processes import HOST, free_port


async def traffic(url: str) -> None:
    """Requests over every route of the API, the UI and docker search, from 16 connections at once (so that
    both workers serve some), with successes and errors."""

    async def one_client(n: int) -> None:
        limits = httpx.Limits(max_connections=1)
        async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:
            name = f"bench/app{n}"
            image = make_image(layers=2)
            await push_image(client, name, image, "1.0")
            await push_referrer(client, name, image.manifest, "application/vnd.example.sbom")
            layer = digest_of(image.layers[0])
            started = await client.post(f"/v2/{name}/blobs/uploads/")
            location = started.headers["Location"]
            await client.patch(location, content=b"x" * 100, headers={"Content-Type": "application/octet-stream"})
            await client.get(location)
            await client.put(location, params={"digest": digest_of(b"x" * 100)})
            cancelled = await client.post(f"/v2/{name}/blobs/uploads")
            await client.delete(cancelled.headers["Location"])
            await push_blob(client, name, b"unlinked %d" % n)
            for _ in range(5):
                await client.get(f"/v2/{name}/manifests/1.0")
                await client.head(f"/v2/{name}/manifests/1.0")
                await client.get(f"/v2/{name}/blobs/{layer}")
                await client.head(f"/v2/{name}/blobs/{layer}")
                await client.get(f"/v2/{name}/manifests/missing")
                await client.get(f"/v2/{name}/blobs/{digest_of(b'missing')}")
            for path in (
                "/v2/",
                f"/v2/{name}/tags/list",
                f"/v2/{name}/referrers/{image.digest}",
                "/v2/_catalog",
                "/v1/_ping",
                "/v1/search?q=app",
                "/healthz",
                "/",
                "/ui/",
                f"/ui/repositories/{name}",
                "/ui/storage",
                "/nowhere",
            ):
                await client.get(path)
            await client.delete(f"/v2/{name}/blobs/{digest_of(b'unlinked %d' % n)}")
            await client.put(f"/v2/{name}/manifests/bad", content=b"{}", headers={"Content-Type": "application/json"})

    await asyncio.gather(*(one_client(n) for n in range(16)))


def cost(server: Server, url: str, scrapes: int) -> tuple[float, float, int, int]:
    """(worker CPU seconds, main process CPU seconds) per scrape of `url`, less idle, the scrape's bytes and
    samples."""
    main, workers = server.pid, [p for p in tree_pids(server.pid) if p != server.pid]
    with httpx.Client() as client:
        body = client.get(url).text
        idle_workers, idle_main = cpu_of(workers), cpu_of([main])
        started = time.perf_counter()
        for _ in range(scrapes):
            assert client.get(url).status_code == 200
        took = time.perf_counter() - started
        busy_workers, busy_main = cpu_of(workers) - idle_workers, cpu_of([main]) - idle_main
        before_workers, before_main = cpu_of(workers), cpu_of([main])
        time.sleep(took)
        idle_w, idle_m = cpu_of(workers) - before_workers, cpu_of([main]) - before_main
    samples = sum(1 for line in body.splitlines() if line and not line.startswith("#"))
    return (busy_workers - idle_w) / scrapes, (busy_main - idle_m) / scrapes, len(body), samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scrapes", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        listen = f"{HOST}:{free_port()}"
        env = {"REGISTRY_HTTP_WORKERS": "2", "REGISTRY_METRICS_LISTEN": listen}
        for where, variables in (("API port", {"REGISTRY_HTTP_WORKERS": "2"}), ("own listener", env)):
            server = start_ours(Path(tmp), variables, directory=where.replace(" ", "-"), access_log=False)
            try:
                url = f"http://{HOST}:{server.port}"
                asyncio.run(traffic(url))
                metrics = f"http://{listen}/metrics" if "REGISTRY_METRICS_LISTEN" in variables else f"{url}/metrics"
                workers, main_process, size, samples = cost(server, metrics, args.scrapes)
                print(
                    f"{where}: {args.scrapes} scrapes of {size} bytes, {samples} samples: "
                    f"workers {workers * 1000:.3f} ms CPU a scrape (both together), "
                    f"main process {main_process * 1000:.3f} ms"
                )
                if where == "API port":  # what any request costs, for comparison
                    plain, _, _, _ = cost(server, f"{url}/v2/", args.scrapes)
                    print(f"  (a GET /v2/ on the same server: workers {plain * 1000:.3f} ms CPU a request)")
            finally:
                server.process.stop(10)


if __name__ == "__main__":
    main()
