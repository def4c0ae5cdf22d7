"""The filtered catalog and `docker search` at scale: a page for a user who may pull one repository
among N, and for an admin who may pull all of them.

Seeds N rows into `repositories` straight into a fresh index (names `uNNNNNNN/app`), on SQLite and on
PostgreSQL (a throw-away cluster, as the tests start one, when its binaries are installed), then
serves the app in process (httpx over ASGI, auth mode htpasswd with the rules of
config.example.yaml) and times `GET /v2/_catalog?n=100` and `GET /v1/search?q=app&n=25`, median
of `--rounds`; also the longest a `GET /healthz` waited while the one-repository user listed
`--rounds` catalog pages (on the same event loop). Prints a table and writes bench/results/catalog_scale.json.

    .venv/bin/python -m bench.catalog_scale                           # 1,000,000 repositories
    .venv/bin/python -m bench.catalog_scale --repositories 100000 --backends sqlite
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench import RESULTS_DIR
from registry.auth.users import Htpasswd
from registry.config import load_settings
from storage.metadata import Connection, open_metadata
from tests.support.app import running_app

RESULTS = RESULTS_DIR / "catalog_scale.json"
PASSWORD = "catalog-scale"
RULES = [
    {"who": "anonymous", "repository": "public/**", "actions": ["pull"]},
    {"who": "group:admins", "repository": "**", "actions": ["*"]},
    {"who": "*", "repository": "{user}/**", "actions": ["*"]},
    {"who": "*", "repository": "public/**", "actions": ["pull"]},
]


def _seed_sql(dialect: str, count: int) -> str:
    if dialect == "postgresql":
        return (
            "INSERT INTO repositories (name, created_at) "
            f"SELECT 'u' || lpad(i::text, 7, '0') || '/app', 0 FROM generate_series(0, {count - 1}) AS i"
        )
    return (
        f"WITH RECURSIVE s(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM s WHERE i < {count - 1}) "
        "INSERT INTO repositories (name, created_at) SELECT printf('u%07d/app', i), 0 FROM s"
    )


async def seed(url: str, count: int) -> None:
    metadata = open_metadata(url)
    await metadata.open()
    try:

        def insert(c: Connection) -> None:
            c.execute(_seed_sql(metadata.db.dialect, count))

        await metadata.db.write(insert)
        if metadata.db.dialect == "postgresql":
            await metadata.db.read(lambda c: c.execute("ANALYZE repositories"))
    finally:
        await metadata.close()


def _basic(user: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{PASSWORD}".encode()).decode()}


async def _timed(
    client: httpx.AsyncClient, url: str, headers: dict[str, str], rounds: int
) -> tuple[float, httpx.Response]:
    """Median milliseconds of `rounds` GETs of `url` (after one not counted), and the last response."""
    response = await client.get(url, headers=headers)
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        response = await client.get(url, headers=headers)
        times.append((time.perf_counter() - start) * 1000)
        assert response.status_code == 200, response.text
    return statistics.median(times), response


async def _healthz_while_listing(client: httpx.AsyncClient, headers: dict[str, str], rounds: int) -> float:
    """The longest a `GET /healthz` waited (ms) while `rounds` catalog pages were listed one after another
    on the same event loop."""
    done = asyncio.Event()

    async def listing() -> None:
        for _ in range(rounds):
            assert (await client.get("/v2/_catalog?n=100", headers=headers)).status_code == 200
        done.set()

    task = asyncio.create_task(listing())
    waits = []
    while not done.is_set():
        start = time.perf_counter()
        await asyncio.sleep(0.001)  # due in 1 ms: a listing that holds the loop delays it
        assert (await client.get("/healthz")).status_code == 200
        waits.append((time.perf_counter() - start) * 1000 - 1)
    await task
    return max(waits)


async def measure(url: str, data_dir: Path, count: int, rounds: int) -> dict[str, Any]:
    one = f"u{count // 2:07d}"
    settings = load_settings(
        env={},
        overrides={
            "data_dir": str(data_dir),
            "index": {"url": url},
            "log": {"access": False},
            "auth": {"mode": "htpasswd", "groups": {"admins": ["admin"]}, "rules": RULES},
        },
    )
    users = Htpasswd(settings.htpasswd_path)
    for user in (one, "admin"):
        users.set_password(user, PASSWORD)
    found: dict[str, Any] = {}
    async with running_app(settings) as (_, client):
        for who in (one, "admin"):
            label = "one repository" if who == one else "admin"
            headers = _basic(who)
            catalog_ms, response = await _timed(client, "/v2/_catalog?n=100", headers, rounds)
            shown = len(response.json()["repositories"])
            search_ms, response = await _timed(client, "/v1/search?q=app&n=25", headers, rounds)
            found[label] = {
                "catalog_ms": round(catalog_ms, 2),
                "catalog_names": shown,
                "search_ms": round(search_ms, 2),
                "search_results": response.json()["num_results"],
            }
        found["healthz_max_wait_ms"] = round(await _healthz_while_listing(client, _basic(one), rounds), 2)
    return found


async def run(backend: str, count: int, rounds: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="catalog-scale-") as tmp:
        if backend == "sqlite":
            url = f"sqlite:///{tmp}/data/index.db"
            start = time.perf_counter()
            await seed(url, count)
            seeded = time.perf_counter() - start
            return {"seed_s": round(seeded, 1), **await measure(url, Path(tmp) / "data", count, rounds)}
        from tests.support.services import Postgres, postgres_bin_dir

        if postgres_bin_dir() is None:
            return {"skipped": "no PostgreSQL binaries (scripts/test-deps.sh installs them)"}
        with Postgres() as pg:
            url = pg.create_database("catalog_scale")
            start = time.perf_counter()
            await seed(url, count)
            seeded = time.perf_counter() - start
            return {"seed_s": round(seeded, 1), **await measure(url, Path(tmp) / "data", count, rounds)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repositories", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--backends", default="sqlite,postgresql")
    args = parser.parse_args()
    results = {}
    for backend in args.backends.split(","):
        results[backend] = asyncio.run(run(backend, args.repositories, args.rounds))
        print(backend, json.dumps(results[backend], indent=1), flush=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"repositories": args.repositories, "results": results}, indent=1) + "\n")


if __name__ == "__main__":
    main()
