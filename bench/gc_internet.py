"""Garbage collection at internet scale: up to 1,000,000 repositories / 16.4M blobs, SQLite and PostgreSQL.

Seeds the index straight into the database (no HTTP, no blob bytes) with the shape below, keeps the seeded copy
(a SQLite file; a PostgreSQL template database in a cluster of its own) so that later runs do not seed again, and
measures on a fresh working copy of it:

- `registry gc --full --dry-run --json` (today's code has no --full: `registry gc --dry-run`) in a subprocess:
  wall time, peak RSS (the child's rusage), microseconds per blob;
- a server (`registry serve`, htpasswd auth) on the working copy: the filtered catalog page
  (`/v2/_catalog?n=100`) of a user whose one rule names 1 repository in all of them, median of 20;
- push latency (manifest PUTs by tag over 4 connections, blobs pushed beforehand) idle, then while the collector
  runs: the bench deletes 1% of the tags through `Metadata.delete_tag` (the store's method, so whatever the store
  queues with a delete is queued), then runs `registry gc` (today's code: `registry gc --delete-untagged`, its
  full collection) in a subprocess: its wall time, peak RSS, the longest write transaction of the collector and
  of the server meanwhile (the database layer's opt-in METADATA_WRITE_TIMINGS record), p50/p99 of the PUTs during
  the collection against idle (the PUTs of an idle window before the deletes and of one as long after the
  collection, together), and whether all the garbage the deletes made is gone (the manifests the deleted tags
  named and the blobs only they used), and that nothing else went.

Shape: per repository 5 tags (v0..v4) on 5 manifests; each manifest names 5 blobs: its config (its own), 2 of the
20 base layers shared by every repository (base[(r+i) % 20], base[(r+i+1) % 20]) and 2 layers of the repository
(L_i, L_i+1: successive images share one), except that in 2 of every 5 repositories the last image has 2 layers
of its own (L_6, L_7). Blobs: 5 manifests + 5 configs + 6 or 7 repository layers = 16.4 per repository on
average, plus the 20 base layers: 164,020 at 10k repositories, 16,400,020 at 1M; 5 manifest_references and about
4.5 repository_blobs rows per manifest. Blob bytes are not stored: the local driver treats deleting a missing key
as done, and the storage sweep finds nothing to list.

    .venv/bin/python -m bench.gc_internet --repos 10000,100000 --backends sqlite,postgresql
    .venv/bin/python -m bench.gc_internet --repos 1000000 --backends sqlite --seed-only
    .venv/bin/python -m bench.gc_internet --repos 1000000 --data /work/bench-data --skip push

Writes bench/results/gc_internet.json (each run's rows merged by backend and size) and prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import io
import json
import os
import pwd
import random
import resource
import shutil
import signal
import sqlite3
import statistics
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import HOST, MIB, PROJECT_DIR, RESULTS_DIR, BenchError, command_line
from bench.client import OCI_CONFIG, OCI_LAYER, OCI_MANIFEST, Connection, expect, sha256_digest
from bench.metrics import peaks_kib, reset_peaks
from bench.servers import OURS_BIN, Server, started, stop
from storage.metadata import Metadata, SQLiteDatabase
from storage.metadata.database import WRITE_TIMINGS_ENV, one
from storage.metadata.postgres import PostgresDatabase
from tests.support.processes import ServerProcess, free_port

RESULTS = RESULTS_DIR / "gc_internet.json"
GNU_TIME = "/usr/bin/time"  # Debian package time
INITDB_LOCALE = ["--encoding=UTF8", "--locale=C.UTF-8", "--no-instructions"]
BASE_LAYERS = 20
TAGS = 5
CHUNK = 20_000  # repositories a seeding transaction (SQLite) or COPY batch (PostgreSQL) holds
GRACE_S = 10.0  # gc.grace of the server and the collector (REGISTRY_GC_GRACE below)
AGE_S = 30 * 86400  # the seeded content is a month old: far beyond any grace period
DELETED_SHARE = 0.01
PUSHERS = 4
CATALOG_USER, CATALOG_PASSWORD = "alice", "alice-pw"
ADMIN, ADMIN_PASSWORD = "root", "root-pw"
CONFIG = b'{"architecture":"amd64","os":"linux"}'
# Tables the seed fills, in order; their secondary indexes are dropped while seeding and built again after.
TABLES = ("repositories", "blobs", "repository_blobs", "manifests", "manifest_references", "tags")
Rows = dict[str, list[tuple[Any, ...]]]


# -- the shape


def repository_name(r: int) -> str:
    """Names sort in the order of `r`, so the seed inserts them in key order."""
    return f"org{r // 100:05d}/app{r % 100:02d}"


def digest_of(*parts: object) -> str:
    return "sha256:" + hashlib.sha256(":".join(map(str, parts)).encode()).hexdigest()


def base_layer(k: int) -> str:
    return digest_of("base", k)


def repository_layers(r: int, i: int) -> tuple[int, int]:
    """The numbers of the 2 layers of repository `r` that image `i` uses."""
    if i == TAGS - 1 and r % 5 < 2:
        return (TAGS + 1, TAGS + 2)
    return (i, i + 1)


def garbage_of(r: int, deleted: set[int]) -> tuple[list[str], list[str]]:
    """(manifests, blobs) that become garbage in repository `r` when the images `deleted` lose their tag."""
    manifests = [digest_of("manifest", r, i) for i in sorted(deleted)]
    blobs = manifests + [digest_of("config", r, i) for i in sorted(deleted)]
    kept_layers = {n for i in range(TAGS) if i not in deleted for n in repository_layers(r, i)}
    doomed = {n for i in deleted for n in repository_layers(r, i)} - kept_layers
    return manifests, blobs + [digest_of("layer", r, n) for n in sorted(doomed)]


def generate(first: int, last: int, now: float) -> Rows:
    """The rows of repositories first..last-1 (and of the base layers with the first chunk)."""
    t = now - AGE_S
    rows: Rows = {table: [] for table in TABLES}
    if first == 0:
        rows["blobs"] += [(base_layer(k), 30 * MIB + k, "present", t, t) for k in range(BASE_LAYERS)]
    for r in range(first, last):
        name = repository_name(r)
        rows["repositories"].append((name, t))
        linked: dict[str, None] = {}
        layers: dict[int, str] = {}
        for i in range(TAGS):
            manifest, config = digest_of("manifest", r, i), digest_of("config", r, i)
            children = [config, base_layer((r + i) % BASE_LAYERS), base_layer((r + i + 1) % BASE_LAYERS)]
            for n in repository_layers(r, i):
                if n not in layers:
                    layers[n] = digest_of("layer", r, n)
                    rows["blobs"].append((layers[n], 2 * MIB + n, "present", t, t))
                children.append(layers[n])
            rows["blobs"] += [(manifest, 1100, "present", t, t), (config, 1500 + i, "present", t, t)]
            rows["manifests"].append((name, manifest, OCI_MANIFEST, 1100, t))
            rows["manifest_references"] += [(name, manifest, child, "blob") for child in children]
            rows["tags"].append((name, f"v{i}", manifest, t))
            linked.update(dict.fromkeys([manifest, *children]))
        rows["repository_blobs"] += [(name, d, t) for d in linked]
    return rows


COLUMNS = {
    "repositories": "name, created_at",
    "blobs": "digest, size, state, created_at, last_used_at",
    "repository_blobs": "repository, digest, linked_at",
    "manifests": "repository, digest, media_type, size, created_at",
    "manifest_references": "repository, manifest, child, kind",
    "tags": "repository, name, digest, updated_at",
}


def chunks(repos: int) -> Iterator[tuple[int, int]]:
    for first in range(0, repos, CHUNK):
        yield first, min(repos, first + CHUNK)


# -- seeding and copies


@dataclass
class Seeded:
    """What seeding made and how long it took (kept next to the seeded copy as seed.json)."""

    backend: str
    repos: int
    blobs: int
    manifests: int
    tags: int
    seconds: float
    bytes: int
    where: str


def migrate_sqlite(path: Path) -> None:
    async def run() -> None:
        metadata = Metadata(SQLiteDatabase(str(path)))
        await metadata.open()
        await metadata.close()

    asyncio.run(run())


def seed_sqlite(path: Path, repos: int) -> None:
    """Fill a new SQLite index at `path`: the registry's migrations, then the rows without secondary indexes (in
    big transactions, no journal), then the indexes built again, back in WAL mode."""
    migrate_sqlite(path)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=OFF")
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("PRAGMA cache_size=-2000000")
    marks = ",".join("?" * len(TABLES))
    indexes = conn.execute(
        f"SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL AND tbl_name IN ({marks})",
        TABLES,
    ).fetchall()
    for name, _ in indexes:
        conn.execute(f"DROP INDEX {name}")
    now = time.time()
    for first, last in chunks(repos):
        rows = generate(first, last, now)
        conn.execute("BEGIN")
        for table in TABLES:
            columns = COLUMNS[table]
            values = ",".join("?" * len(columns.split(",")))
            conn.executemany(f"INSERT INTO {table} ({columns}) VALUES ({values})", rows[table])
        conn.execute("COMMIT")
        progress("sqlite", last, repos)
    for _, sql in indexes:
        conn.execute(sql)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.close()


def progress(backend: str, done: int, total: int) -> None:
    if done == total or done % (10 * CHUNK) == 0:
        print(f"  seeding {backend}: {done:,}/{total:,} repositories", flush=True)


class Cluster:
    """A PostgreSQL cluster of the benchmark's own in `root` that outlives a run (its template databases are the
    seeded copies): initdb on first use, started on a free port, stopped at the end. As root, it runs as the
    `postgres` account. WAL-minimal (COPY into a table truncated in the same transaction writes no WAL); fsync and
    synchronous commit stay on, as in production."""

    def __init__(self, root: Path):
        self.root, self.data = root, root / "data"
        self.user = self.group = None
        if os.geteuid() == 0:
            account = pwd.getpwnam("postgres")
            self.user, self.group = account.pw_uid, account.pw_gid
        self.port = free_port()
        bins = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
        if not bins:
            raise BenchError("PostgreSQL server binaries are missing (Debian package postgresql)")
        self.bin = bins[-1].parent
        self.process: ServerProcess | None = None

    def _as_owner(self, command: list[str]) -> None:
        ids: dict[str, Any] = {} if self.user is None else {"user": self.user, "group": self.group}
        subprocess.run(command, check=True, capture_output=True, env=self.env(), cwd=self.root, **ids)

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        return {**env, "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}

    def start(self) -> Cluster:
        self.root.mkdir(parents=True, exist_ok=True)
        if self.user is not None:
            os.chown(self.root, self.user, self.group or -1)
        if not (self.data / "PG_VERSION").exists():
            self._as_owner(
                [str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", *INITDB_LOCALE]
            )
        settings = {
            "listen_addresses": HOST,
            "unix_socket_directories": str(self.root),
            "max_connections": "200",
            "shared_buffers": "512MB",
            "maintenance_work_mem": "1GB",
            "work_mem": "64MB",
            "wal_level": "minimal",
            "max_wal_senders": "0",
            "max_wal_size": "8GB",
            "log_min_messages": "warning",
        }
        command = [str(self.bin / "postgres"), "-D", str(self.data), "-p", str(self.port)]
        command += [f"--{k.replace('_', '-')}={v}" for k, v in settings.items()]
        self.process = ServerProcess(
            command, log_path=self.root / "postgres.log", env=self.env(), cwd=self.root, name="PostgreSQL",
            user=self.user, group=self.group,
        )  # fmt: skip
        self.process.start()
        self.process.wait_until(self._ready, 120.0, "accepting connections")
        return self

    def _ready(self) -> bool:
        import psycopg

        try:
            psycopg.connect(self.dsn("postgres"), connect_timeout=2).close()
        except psycopg.OperationalError:
            return False
        return True

    def dsn(self, database: str) -> str:
        return f"postgresql://postgres@{HOST}:{self.port}/{database}"

    def sql(self, statement: str) -> list[tuple[Any, ...]]:
        import psycopg

        with psycopg.connect(self.dsn("postgres"), autocommit=True) as conn:
            cursor = conn.execute(statement)
            return cursor.fetchall() if cursor.description else []

    def exists(self, database: str) -> bool:
        return bool(self.sql(f"SELECT 1 FROM pg_database WHERE datname = '{database}'"))

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop(60.0, signal.SIGINT)  # SIGINT: a fast shutdown, with a checkpoint


def seed_postgres(cluster: Cluster, database: str, repos: int) -> None:
    """Create `database` with the registry's migrations, then in one transaction truncate the tables, drop their
    indexes and keys, COPY the rows (FREEZE), build keys and indexes again; then ANALYZE."""
    import psycopg

    cluster.sql(f"CREATE DATABASE {database}")

    async def migrate() -> None:
        metadata = Metadata(PostgresDatabase(cluster.dsn(database), max_connections=2))
        await metadata.open()
        await metadata.close()

    asyncio.run(migrate())
    now = time.time()
    with psycopg.connect(cluster.dsn(database)) as conn:
        conn.execute("SET maintenance_work_mem = '1GB'")
        conn.execute(f"TRUNCATE {', '.join(TABLES)}")
        tables = ",".join(f"'{t}'" for t in TABLES)
        keys = conn.execute(
            "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint "
            f"WHERE contype = 'p' AND conrelid::regclass::text IN ({tables})"
        ).fetchall()
        indexes = conn.execute(
            f"SELECT indexname, indexdef FROM pg_indexes WHERE tablename IN ({tables}) "
            "AND indexname NOT IN (SELECT conname FROM pg_constraint)"
        ).fetchall()
        for name, _ in indexes:
            conn.execute(f"DROP INDEX {name}")
        for table, name, _ in keys:
            conn.execute(f"ALTER TABLE {table} DROP CONSTRAINT {name}")
        for first, last in chunks(repos):
            rows = generate(first, last, now)
            for table in TABLES:
                buffer = io.StringIO()
                for row in rows[table]:
                    buffer.write("\t".join(map(str, row)))
                    buffer.write("\n")
                copy = f"COPY {table} ({COLUMNS[table]}) FROM STDIN (FREEZE)"
                with conn.cursor().copy(copy) as sink:
                    sink.write(buffer.getvalue())
            progress("postgresql", last, repos)
        for table, name, definition in keys:
            conn.execute(f"ALTER TABLE {table} ADD CONSTRAINT {name} {definition}")
        for _, definition in indexes:
            conn.execute(definition)
        conn.commit()
    with psycopg.connect(cluster.dsn(database), autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE)")


def database_bytes(cluster: Cluster, database: str) -> int:
    return int(cluster.sql(f"SELECT pg_database_size('{database}')")[0][0])


def seeded(backend: str, repos: int, data: Path, cluster: Cluster | None) -> Seeded:
    """The seeded copy for (`backend`, `repos`), seeding it first when missing."""
    record = data / f"seed-{backend}-{repos}.json"
    if record.exists():
        return Seeded(**json.loads(record.read_text()))
    started_at = time.perf_counter()
    print(f"seeding {repos:,} repositories into {backend}", flush=True)
    if backend == "sqlite":
        path = data / f"sqlite-{repos}" / "index.db"
        shutil.rmtree(path.parent, ignore_errors=True)
        path.parent.mkdir(parents=True)
        seed_sqlite(path, repos)
        size, where = path.stat().st_size, str(path)
    else:
        assert cluster is not None
        database = f"seed_{repos}"
        if cluster.exists(database):
            cluster.sql(f"DROP DATABASE {database}")
        seed_postgres(cluster, database, repos)
        size, where = database_bytes(cluster, database), f"{cluster.data} database {database}"
    blobs = BASE_LAYERS + sum(10 + (7 if r % 5 < 2 else 6) for r in range(repos))
    result = Seeded(
        backend, repos, blobs, TAGS * repos, TAGS * repos, round(time.perf_counter() - started_at, 1), size, where
    )
    record.write_text(json.dumps(result.__dict__, indent=2))
    print(f"  seeded in {result.seconds:.0f}s, {size / MIB:,.0f} MiB", flush=True)
    return result


@dataclass
class Working:
    """A working copy of a seeded index: the environment that points the registry at it."""

    backend: str
    env: dict[str, str]
    data_dir: Path
    url: str

    def metadata(self) -> Metadata:
        """The index, its changes queueing reviews due after the grace the collector is given (10 s)."""
        if self.backend == "sqlite":
            return Metadata(SQLiteDatabase(self.url.removeprefix("sqlite:///")), GRACE_S)
        return Metadata(PostgresDatabase(self.url), GRACE_S)


def working_copy(seed: Seeded, data: Path, cluster: Cluster | None) -> Working:
    """A fresh copy of the seeded index (SQLite: a file copy; PostgreSQL: a database from the template)."""
    work = data / f"work-{seed.backend}-{seed.repos}"
    shutil.rmtree(work, ignore_errors=True)
    (work / "data").mkdir(parents=True)
    if seed.backend == "sqlite":
        index = work / "index.db"
        shutil.copyfile(seed.where, index)
        url = f"sqlite:///{index}"
    else:
        assert cluster is not None
        database = f"work_{seed.repos}"
        cluster.sql(f"DROP DATABASE IF EXISTS {database}")
        cluster.sql(f"CREATE DATABASE {database} TEMPLATE seed_{seed.repos} STRATEGY FILE_COPY")
        url = cluster.dsn(database)
    return Working(seed.backend, {"REGISTRY_INDEX_URL": url}, work / "data", url)


def in_place(seed: Seeded, data: Path, cluster: Cluster | None) -> Working:
    """The seeded copy itself as the working copy (when the disk cannot hold a second one)."""
    work = data / f"work-{seed.backend}-{seed.repos}"
    (work / "data").mkdir(parents=True, exist_ok=True)
    if seed.backend == "sqlite":
        url = f"sqlite:///{seed.where}"
    else:
        assert cluster is not None
        url = cluster.dsn(f"seed_{seed.repos}")
    return Working(seed.backend, {"REGISTRY_INDEX_URL": url}, work / "data", url)


def drop_working_copy(working: Working, cluster: Cluster | None) -> None:
    shutil.rmtree(working.data_dir.parent, ignore_errors=True)
    if working.backend == "postgresql" and cluster is not None:
        cluster.sql(f"DROP DATABASE IF EXISTS {working.url.rsplit('/', 1)[1]}")


# -- measuring


@dataclass
class Child:
    """A finished subprocess: wall time, peak RSS, exit status, output."""

    seconds: float
    peak_rss_mib: float
    returncode: int
    stdout: str


def registry_env(working: Working, timings: Path | None = None, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_") and k != WRITE_TIMINGS_ENV}
    env.update(working.env)
    env["REGISTRY_DATA_DIR"] = str(working.data_dir)
    if timings is not None:
        env[WRITE_TIMINGS_ENV] = str(timings)
    return {**env, **(extra or {})}


def run_child(command: list[str], env: dict[str, str], memory_limit: int, where: Path) -> Child:
    """Run `command` to its end, its address space capped at `memory_limit` bytes (a collector that would take the
    shared machine's memory fails with MemoryError instead). Its peak RSS comes from GNU time, which forks it from
    its own small process: a child forked from this one would count this process's memory as its own."""

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (memory_limit, memory_limit))

    peak = where / "peak-rss-kib"
    started_at = time.perf_counter()
    result = subprocess.run(
        [GNU_TIME, "-f", "%M", "-o", str(peak), *command],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=PROJECT_DIR, preexec_fn=cap, check=False,
    )  # fmt: skip
    seconds = time.perf_counter() - started_at
    kib = int(peak.read_text().strip().splitlines()[-1])
    return Child(seconds, kib / 1024, result.returncode, result.stdout.decode(errors="replace"))


def has_full_flag() -> bool:
    """Whether this code's `registry gc` takes --full (plain `registry gc` then works the review queues)."""
    out = subprocess.run([str(OURS_BIN), "gc", "--help"], capture_output=True, text=True, check=False).stdout
    return "--full" in out


@dataclass
class Timings:
    """The write transactions one file recorded: the longest, its name, how many."""

    count: int = 0
    longest_ms: float = 0.0
    longest: str = ""
    over_50ms: int = 0
    over_50ms_by: dict[str, int] = field(default_factory=dict)  # by what the transaction ran

    @classmethod
    def read(cls, path: Path) -> Timings:
        found = cls()
        if not path.exists():
            return found
        for line in path.read_text().splitlines():
            seconds, _, names = line.partition(" ")
            ms = float(seconds) * 1000
            found.count += 1
            if ms > 50:
                found.over_50ms += 1
                found.over_50ms_by[names[:80]] = found.over_50ms_by.get(names[:80], 0) + 1
            if ms > found.longest_ms:
                found.longest_ms, found.longest = round(ms, 1), names[:200]
        return found


def dry_run(working: Working, options: Options) -> dict[str, Any]:
    timings = working.data_dir.parent / "dry-run.timings"
    command = [str(OURS_BIN), "gc", *(["--full"] if options.full else []), "--dry-run", "--json"]
    child = run_child(command, registry_env(working, timings), options.memory_limit, working.data_dir.parent)
    if child.returncode != 0:
        return {"command": " ".join(command[1:]), "failed": child.stdout[-2000:], "seconds": round(child.seconds, 1),
                "peak_rss_mib": round(child.peak_rss_mib), "memory_limit_gib": options.memory_limit >> 30}  # fmt: skip
    report = json.loads(child.stdout.strip().splitlines()[-1])
    blobs = report["blobs_kept"] + report["blobs_removed"]
    return {
        "command": "registry " + " ".join(command[1:]),
        "seconds": round(child.seconds, 2),
        "peak_rss_mib": round(child.peak_rss_mib, 1),
        "blobs": blobs,
        "s_per_million_blobs": round(child.seconds / blobs * 1e6, 2),
        "longest_write_ms": Timings.read(timings).longest_ms,
    }


# -- the server, pushes and the catalog


def start_server(working: Working, timings: Path, extra: dict[str, str]) -> Server:
    from registry.auth.users import Htpasswd

    htpasswd = working.data_dir / "htpasswd"
    users = Htpasswd(str(htpasswd))
    users.set_password(CATALOG_USER, CATALOG_PASSWORD)
    users.set_password(ADMIN, ADMIN_PASSWORD)
    rules = [
        {"who": [CATALOG_USER], "repository": catalog_repository(working), "actions": ["pull"]},
        {"who": ["group:admins"], "repository": "**", "actions": ["*"]},
    ]
    port = free_port()
    env = registry_env(working, timings)
    env.update(
        {
            "REGISTRY_LOG_ACCESS": "false",
            "REGISTRY_AUTH_MODE": "htpasswd",
            "REGISTRY_AUTH_GROUPS": json.dumps({"admins": [ADMIN]}),
            "REGISTRY_AUTH_RULES": json.dumps(rules),
            **extra,
        }
    )
    command = [str(OURS_BIN), "serve", "--host", HOST, "--port", str(port), "--data-dir", str(working.data_dir)]
    log = working.data_dir.parent / "server.log"
    return started(
        Server("ours", port, ServerProcess(command, log_path=log, env=env, name="registry")), "/healthz", 120
    )


def catalog_repository(working: Working) -> str:
    repos = int(working.data_dir.parent.name.rsplit("-", 1)[1])
    return repository_name(repos // 2)


def basic(user: str, password: str) -> dict[str, str]:
    import base64

    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


async def catalog_page(port: int, expected: str) -> dict[str, Any]:
    """The filtered catalog's first page as the user with one repository: median and p90 of 20, after warm-up."""
    connection, times = Connection(port), []
    try:
        for n in range(25):
            started_at = time.perf_counter()
            reply = await connection.request("GET", "/v2/_catalog?n=100", headers=basic(CATALOG_USER, CATALOG_PASSWORD))
            elapsed = time.perf_counter() - started_at
            expect(reply, 200, "GET /v2/_catalog")
            if json.loads(reply.body)["repositories"] != [expected]:
                raise BenchError(f"the catalog of {CATALOG_USER}: {reply.body[:200]!r}, expected [{expected!r}]")
            if n >= 5:
                times.append(elapsed * 1000)
    finally:
        await connection.close()
    times.sort()
    return {"median_ms": round(statistics.median(times), 2), "p90_ms": round(times[int(len(times) * 0.9)], 2)}


@dataclass
class Pusher:
    """Manifest PUTs by tag from PUSHERS connections, each into a repository of its own (pushes to one repository
    conflict with each other on PostgreSQL); the config and layer are pushed once."""

    port: int
    interval_s: float = 0.0  # each connection starts a PUT this often (0: as soon as the last one ends)
    config: str = ""
    layer: str = ""
    counter: int = 0

    @staticmethod
    def repository(k: int) -> str:
        return f"bench/push{k}"

    async def prepare(self) -> None:
        connection = Connection(self.port)
        auth = basic(ADMIN, ADMIN_PASSWORD)
        try:
            for k in range(PUSHERS):
                self.layer = await push_blob_auth(connection, self.repository(k), b"L" * 2048, auth)
                self.config = await push_blob_auth(connection, self.repository(k), CONFIG, auth)
        finally:
            await connection.close()

    def manifest(self) -> bytes:
        self.counter += 1
        return json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "digest": self.config, "size": len(CONFIG)},
                "layers": [{"mediaType": OCI_LAYER, "digest": self.layer, "size": 2048}],
                "annotations": {"n": str(self.counter), "run": str(os.getpid()), "at": str(time.time())},
            }
        ).encode()

    async def push_until(self, done: asyncio.Event) -> list[float]:
        """PUT manifests from PUSHERS connections until `done`; the latency of each in ms."""
        latencies: list[float] = []
        auth = {**basic(ADMIN, ADMIN_PASSWORD), "Content-Type": OCI_MANIFEST}

        async def one_connection(k: int) -> None:
            connection, name = Connection(self.port), self.repository(k)
            try:
                while not done.is_set():
                    body = self.manifest()
                    tag = f"t{self.counter % 100}"
                    started_at = time.perf_counter()
                    reply = await connection.request("PUT", f"/v2/{name}/manifests/{tag}", body, auth)
                    latencies.append((time.perf_counter() - started_at) * 1000)
                    expect(reply, 201, f"PUT manifest {name}:{tag}")
                    await asyncio.sleep(max(0.0, started_at + self.interval_s - time.perf_counter()))
            finally:
                await connection.close()

        await asyncio.gather(*(one_connection(k) for k in range(PUSHERS)))
        return latencies


async def push_blob_auth(connection: Connection, name: str, data: bytes, auth: dict[str, str]) -> str:
    digest = sha256_digest(data)
    reply = expect(await connection.request("POST", f"/v2/{name}/blobs/uploads/", headers=auth), 202, "POST upload")
    location = reply.headers["location"]
    target = location.split(f"{HOST}:{connection.port}", 1)[-1]
    target += ("&" if "?" in target else "?") + f"digest={digest}"
    expect(await connection.request("PUT", target, data, {**auth, "Content-Type": "application/octet-stream"}), 201,
           "PUT upload")  # fmt: skip
    return digest


def percentiles(latencies: list[float]) -> dict[str, float]:
    ordered = sorted(latencies)
    if not ordered:
        return {"count": 0}
    return {
        "count": len(ordered),
        "p50_ms": round(ordered[len(ordered) // 2], 2),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 2),
        "max_ms": round(ordered[-1], 2),
    }


async def idle_pushes(pusher: Pusher, seconds: float) -> list[float]:
    done = asyncio.Event()
    asyncio.get_running_loop().call_later(seconds, done.set)
    return await pusher.push_until(done)


async def delete_tags(working: Working, repos: int) -> tuple[dict[int, set[int]], float]:
    """Delete 1% of the tags (a random sample) through `Metadata.delete_tag`, many at once; which, and how long."""
    rng = random.Random(15)
    chosen = rng.sample(range(repos * TAGS), int(repos * TAGS * DELETED_SHARE))
    deleted: dict[int, set[int]] = {}
    for n in chosen:
        deleted.setdefault(n // TAGS, set()).add(n % TAGS)
    metadata = working.metadata()
    await metadata.open()
    started_at = time.perf_counter()
    try:
        pairs = [(r, i) for r, images in deleted.items() for i in images]
        for at in range(0, len(pairs), 256):
            done = await asyncio.gather(
                *(metadata.delete_tag(repository_name(r), f"v{i}") for r, i in pairs[at : at + 256])
            )
            if not all(done):
                raise BenchError("a seeded tag was not there to delete")
    finally:
        await metadata.close()
    return deleted, time.perf_counter() - started_at


async def garbage_left(working: Working, deleted: dict[int, set[int]]) -> dict[str, int]:
    """How much of the garbage the deletes made is still there, and how many blobs of a sample of the untouched
    content are missing (must be 0)."""
    metadata = working.metadata()
    await metadata.open()
    manifests, blobs, kept = [], [], []
    for r, images in deleted.items():
        m, b = garbage_of(r, images)
        manifests += [(repository_name(r), d) for d in m]
        blobs += b
        kept += [digest_of("config", r, i) for i in range(TAGS) if i not in images]
    kept = kept[:20000] + [base_layer(k) for k in range(BASE_LAYERS)]

    async def counted(sql: str, values: list[str]) -> int:
        total = 0
        for at in range(0, len(values), 500):
            part = values[at : at + 500]
            query = sql.format(",".join("?" * len(part)))
            total += await metadata.db.scan(lambda c, q=query, p=part: one(c.execute(q, p))[0])  # type: ignore[misc]
        return total

    try:
        manifest_digests = [d for _, d in manifests]
        return {
            "garbage_manifests": len(manifests),
            "garbage_blobs": len(blobs),
            "manifests_left": await counted("SELECT COUNT(*) FROM manifests WHERE digest IN ({})", manifest_digests),
            "blobs_left": await counted("SELECT COUNT(*) FROM blobs WHERE digest IN ({})", blobs),
            "kept_sample": len(kept),
            "kept_missing": len(kept) - await counted("SELECT COUNT(*) FROM blobs WHERE digest IN ({})", kept),
        }
    finally:
        await metadata.close()


# -- one measurement


@dataclass
class Options:
    full: bool
    skip: set[str]
    idle_s: float
    push_interval_s: float
    collector_env: dict[str, str]
    server_env: dict[str, str]
    keep_work: bool
    in_place: bool
    memory_limit: int
    by_server: bool
    settle_s: float
    collectors: int | None


async def collection_under_pushes(
    working: Working, repos: int, options: Options, server: Server, server_timings: Path
) -> dict[str, Any]:
    """Delete 1% of the tags, then run the collector while pushes go on; what it cost and what it left."""
    deleted, delete_s = await delete_tags(working, repos)
    await asyncio.sleep(float(options.collector_env.get("BENCH_WAIT_S", "12")))  # past the grace (10s)
    timings = working.data_dir.parent / "collector.timings"
    command = [str(OURS_BIN), "gc", "--json", "--delete-untagged"]
    command += [] if options.collectors is None else ["--collectors", str(options.collectors)]
    env = registry_env(working, timings, {k: v for k, v in options.collector_env.items() if k != "BENCH_WAIT_S"})
    offset = server_timings.stat().st_size if server_timings.exists() else 0
    pusher = Pusher(server.port, options.push_interval_s)
    await pusher.prepare()
    done = asyncio.Event()
    pushes = asyncio.create_task(pusher.push_until(done))
    try:
        child = await asyncio.to_thread(run_child, command, env, options.memory_limit, working.data_dir.parent)
    finally:
        done.set()
    during = await pushes
    server_lines = server_timings.read_bytes()[offset:] if server_timings.exists() else b""
    during_file = working.data_dir.parent / "server-during.timings"
    during_file.write_bytes(server_lines)
    collector, served = Timings.read(timings), Timings.read(during_file)
    result: dict[str, Any] = {
        "command": "registry " + " ".join(command[1:]),
        "tags_deleted": sum(len(v) for v in deleted.values()),
        "delete_tags_s": round(delete_s, 1),
        "seconds": round(child.seconds, 1),
        "peak_rss_mib": round(child.peak_rss_mib, 1),
        "exit": child.returncode,
        "collector_writes": collector.__dict__,
        "server_writes_meanwhile": served.__dict__,
        "push_during": percentiles(during),
    }
    if child.returncode != 0:
        result["output"] = child.stdout[-2000:]
    result.update(await garbage_left(working, deleted))
    return result


async def collection_by_the_server(working: Working, repos: int, options: Options, server: Server) -> dict[str, Any]:
    """Delete 1% of the tags, then leave the collection to the server's workers while pushes go on: how long until
    the garbage is gone (checked every 5 s, for at most --settle-seconds), the workers' peak RSS meanwhile."""
    reset_peaks(server.pid)
    deleted, delete_s = await delete_tags(working, repos)
    started_at = time.perf_counter()
    pusher = Pusher(server.port, options.push_interval_s)
    await pusher.prepare()
    done = asyncio.Event()
    pushes = asyncio.create_task(pusher.push_until(done))
    left: dict[str, int] = {}
    try:
        while time.perf_counter() - started_at < options.settle_s:
            await asyncio.sleep(5)
            left = await garbage_left(working, deleted)
            if left["manifests_left"] + left["blobs_left"] == 0:
                break
    finally:
        done.set()
    seconds = time.perf_counter() - started_at
    during = await pushes
    peaks = peaks_kib(server.pid)
    return {
        "collector": "the server's workers",
        "tags_deleted": sum(len(v) for v in deleted.values()),
        "delete_tags_s": round(delete_s, 1),
        "seconds_until_clean": round(seconds, 1),
        "peak_rss_mib": round(max(peaks.values()) / 1024, 1),
        "push_during": percentiles(during),
        **left,
    }


def measure(backend: str, repos: int, data: Path, cluster: Cluster | None, options: Options) -> dict[str, Any]:
    seed = seeded(backend, repos, data, cluster)
    row: dict[str, Any] = {"backend": backend, "repos": repos, "blobs": seed.blobs, "seed": seed.__dict__}
    copy_started = time.perf_counter()
    working = in_place(seed, data, cluster) if options.in_place else working_copy(seed, data, cluster)
    row["working_copy_s"] = round(time.perf_counter() - copy_started, 1)
    if options.in_place and "push" not in options.skip:
        (data / f"seed-{backend}-{repos}.json").unlink()  # the collection changes it: no longer a seeded copy
    try:
        if "dry-run" not in options.skip:
            print(f"  {backend} {repos:,}: gc dry run", flush=True)
            row["dry_run"] = dry_run(working, options)
            print(f"    {row['dry_run']}", flush=True)
        if {"catalog", "push"} <= options.skip:
            return row
        server_timings = working.data_dir.parent / "server.timings"
        server = start_server(working, server_timings, options.server_env)
        try:
            if "catalog" not in options.skip:
                row["catalog"] = asyncio.run(catalog_page(server.port, catalog_repository(working)))
                print(f"    catalog {row['catalog']}", flush=True)
            if "push" not in options.skip:
                pusher = Pusher(server.port, options.push_interval_s)
                row["push_interval_ms"] = options.push_interval_s * 1000
                asyncio.run(pusher.prepare())
                asyncio.run(idle_pushes(pusher, 2.0))  # warm-up: every worker has checked the password
                idle_before = asyncio.run(idle_pushes(pusher, options.idle_s))
                row["push_idle_before"] = percentiles(idle_before)
                print(f"    push idle {row['push_idle_before']}", flush=True)
                print(f"  {backend} {repos:,}: deleting 1% of the tags, then the collector under pushes", flush=True)
                offset = server_timings.stat().st_size if server_timings.exists() else 0
                if options.by_server:
                    row["collection"] = asyncio.run(collection_by_the_server(working, repos, options, server))
                    meanwhile = working.data_dir.parent / "server-during.timings"
                    meanwhile.write_bytes(server_timings.read_bytes()[offset:] if server_timings.exists() else b"")
                    row["collection"]["server_writes_meanwhile"] = Timings.read(meanwhile).__dict__
                else:
                    row["collection"] = asyncio.run(
                        collection_under_pushes(working, repos, options, server, server_timings)
                    )
                print(f"    {row['collection']}", flush=True)
                # Idle again once it is over, as long: the idle p99 of one window alone moved from 15 to
                # 38 ms between runs of the same collection, the one while it collects by 3 ms.
                idle_after = asyncio.run(idle_pushes(pusher, options.idle_s))
                row["push_idle_after"] = percentiles(idle_after)
                row["push_idle"] = percentiles(idle_before + idle_after)
                print(f"    push idle after {row['push_idle_after']}; both {row['push_idle']}", flush=True)
                idle, during = row["push_idle"].get("p99_ms"), row["collection"]["push_during"].get("p99_ms")
                if idle and during:
                    row["push_p99_ratio"] = round(during / idle, 2)
        finally:
            stop(server)
    finally:
        if not options.keep_work and not options.in_place:
            drop_working_copy(working, cluster)
    return row


# -- report


def table(rows: list[dict[str, Any]]) -> str:
    head = (
        f"{'backend':<10} {'repos':>9} {'blobs':>11} {'seed s':>7} {'seed MiB':>9} | {'dry s':>6} {'s/Mblob':>7} "
        f"{'dry RSS':>8} | {'gc s':>6} {'gc RSS':>7} {'max write ms':>12} {'srv write':>9} {'left':>6} | "
        f"{'push p99 idle':>13} {'during':>7} {'ratio':>5} {'max during':>10} | {'catalog ms':>10}"
    )
    lines = [head, "-" * len(head)]
    for row in rows:
        d, c = row.get("dry_run", {}), row.get("collection", {})
        left = c.get("manifests_left", 0) + c.get("blobs_left", 0) if c else ""
        gc_s = c.get("seconds", c.get("seconds_until_clean", ""))
        lines.append(
            f"{row['backend']:<10} {row['repos']:>9,} {row['blobs']:>11,} {row['seed']['seconds']:>7.0f} "
            f"{row['seed']['bytes'] / MIB:>9,.0f} | {d.get('seconds', ''):>6} {d.get('s_per_million_blobs', ''):>7} "
            f"{d.get('peak_rss_mib', ''):>8} | {gc_s:>6} {c.get('peak_rss_mib', ''):>7} "
            f"{c.get('collector_writes', {}).get('longest_ms', ''):>12} "
            f"{c.get('server_writes_meanwhile', {}).get('longest_ms', ''):>9} {left:>6} | "
            f"{row.get('push_idle', {}).get('p99_ms', ''):>13} {c.get('push_during', {}).get('p99_ms', ''):>7} "
            f"{row.get('push_p99_ratio', ''):>5} {c.get('push_during', {}).get('max_ms', ''):>10} | "
            f"{row.get('catalog', {}).get('median_ms', ''):>10}"
        )
    return "\n".join(lines)


def save(rows: list[dict[str, Any]]) -> None:
    """Merge `rows` into the results file, one entry per backend and size (the newest run's)."""
    kept: dict[str, Any] = {}
    if RESULTS.exists():
        kept = json.loads(RESULTS.read_text()).get("rows", {})
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=PROJECT_DIR)
    for row in rows:
        row["when"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        row["commit"] = commit.stdout.strip()
        row["command"] = command_line()
        kept[f"{row['backend']}-{row['repos']}"] = row
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({"rows": kept}, indent=2) + "\n")


def env_pairs(values: list[str]) -> dict[str, str]:
    pairs = {}
    for value in values:
        key, sep, val = value.partition("=")
        if not sep:
            raise SystemExit(f"expected KEY=VALUE, got {value!r}")
        pairs[key] = val
    return pairs


def main(argv: list[str] | None = None) -> None:
    """Seed what is missing, measure each backend and size, save and print the table."""
    parser = argparse.ArgumentParser(prog="python -m bench.gc_internet", description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--repos", default="10000,100000", help="sizes, comma-separated (default 10000,100000)")
    parser.add_argument("--backends", default="sqlite,postgresql", help="sqlite, postgresql or both")
    parser.add_argument(
        "--data", type=Path, default=Path("/var/tmp/registry-gc-internet"),
        help="where the seeded copies (and the PostgreSQL cluster) stay between runs",
    )  # fmt: skip
    parser.add_argument("--seed-only", action="store_true", help="seed what is missing, measure nothing")
    parser.add_argument("--skip", default="", help="leave out some of: dry-run, catalog, push (push: the collection)")
    parser.add_argument("--idle-seconds", type=float, default=10.0, help="how long idle push latency is measured")
    parser.add_argument(
        "--push-interval-ms", type=float, default=0.0,
        help="each of the pushing connections starts a PUT this often (default 0: back to back, which keeps the "
        "server's CPU busy, so the collector's own CPU shows in the push latency)",
    )  # fmt: skip
    parser.add_argument("--collector-env", action="append", default=[], metavar="KEY=VALUE",
                        help="environment of `registry gc`, e.g. REGISTRY_GC_GRACE=10s (the default)")  # fmt: skip
    parser.add_argument("--server-env", action="append", default=[], metavar="KEY=VALUE",
                        help="environment of the server, e.g. REGISTRY_HTTP_WORKERS=2")  # fmt: skip
    parser.add_argument("--keep-work", action="store_true", help="keep the working copies (for a look afterwards)")
    parser.add_argument(
        "--in-place", action="store_true",
        help="measure on the seeded copy itself, no working copy (it is used up by the collection step)",
    )  # fmt: skip
    parser.add_argument("--memory-limit-gib", type=int, default=8, help="address-space cap of `registry gc` (8)")
    parser.add_argument(
        "--collector", choices=["cli", "server"], default="cli",
        help="cli: `registry gc` collects after the deletes (the server's own collection off); server: the server's "
        "workers do (gc.reviews), timed until the garbage is gone",
    )  # fmt: skip
    parser.add_argument("--settle-seconds", type=float, default=600.0, help="--collector server: how long to wait")
    parser.add_argument("--collectors", type=int, help="--collector cli: `registry gc --collectors N`")
    parser.add_argument("--reseed", action="store_true", help="seed again even when a seeded copy exists")
    args = parser.parse_args(argv)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    if not set(backends) <= {"sqlite", "postgresql"}:
        parser.error("--backends: sqlite and/or postgresql")
    sizes = [int(n) for n in args.repos.split(",")]
    # Settings the code before incremental collection does not know are ignored by it.
    grace = {"REGISTRY_GC_GRACE": f"{GRACE_S:g}s", "REGISTRY_GC_DELETE_UNTAGGED": "true"}
    own_collection = {"REGISTRY_GC_REVIEWS": str(args.collector == "server").lower(), "REGISTRY_GC_POLL": "1s"}
    options = Options(
        full=has_full_flag(),
        skip={s.strip() for s in args.skip.split(",") if s.strip()},
        idle_s=args.idle_seconds,
        push_interval_s=args.push_interval_ms / 1000,
        collector_env={**grace, **env_pairs(args.collector_env)},
        server_env={**grace, "REGISTRY_GC_INTERVAL": "0", **own_collection, **env_pairs(args.server_env)},
        keep_work=args.keep_work,
        in_place=args.in_place,
        memory_limit=args.memory_limit_gib << 30,
        by_server=args.collector == "server",
        settle_s=args.settle_seconds,
        collectors=args.collectors,
    )
    args.data.mkdir(parents=True, exist_ok=True)
    print(f"data in {args.data} ({shutil.disk_usage(args.data).free / MIB / 1024:.0f} GiB free); "
          f"`registry gc --full` {'exists' if options.full else 'does not exist (today)'}", flush=True)  # fmt: skip
    if args.reseed:
        for backend in backends:
            for repos in sizes:
                (args.data / f"seed-{backend}-{repos}.json").unlink(missing_ok=True)
    cluster = Cluster(args.data / "pg").start() if "postgresql" in backends else None
    rows = []
    try:
        for backend in backends:
            for repos in sizes:
                if args.seed_only:
                    print(seeded(backend, repos, args.data, cluster), flush=True)
                    continue
                rows.append(measure(backend, repos, args.data, cluster, options))
                save(rows[-1:])
    finally:
        if cluster is not None:
            cluster.stop()
    if rows:
        print(table(rows))


if __name__ == "__main__":
    main()
