"""Container engines of the tests' own, beside the machine's: a second dockerd whose `registry-mirrors` name the
pull-through cache, and a containerd driven with `ctr` and a hosts.toml directory.

What these clients send to a mirror (found with Distribution 2.8's access log, dockerd 20.10, containerd 1.6):

- dockerd takes an `http://` mirror as it is: no `insecure-registries` entry is needed (127.0.0.0/8 is in that
  list by default anyway, and cannot be taken out of it). `docker pull busybox` sends the mirror, in order:
  `GET /v2/`, `HEAD /v2/library/busybox/manifests/latest`, `GET /v2/library/busybox/manifests/<digest>`, then
  `GET /v2/library/busybox/blobs/<digest>` for the config and each layer it does not have; no query string.
  A failing mirror is never fatal to dockerd: on any error of the mirror (connection refused, 404, 503) it goes
  on to registry-1.docker.io, and the error the CLI prints is that last one's. Here that endpoint is sent through
  a proxy address nobody listens on (the daemon's HTTPS_PROXY), so it fails at once without a DNS query; the
  mirror's own error is in the daemon log ("Attempting next endpoint for pull after error: ...").
- `registry-mirrors` is read again on SIGHUP (with `--config-file`), so a running daemon can be pointed at a
  cache started after it (`Dockerd.set_mirrors`).
- `ctr -n NS image pull --plain-http --hosts-dir DIR HOST/NAME:TAG`, with `DIR/HOST/hosts.toml` naming the cache
  as a `[host."http://..."]` with capabilities pull and resolve, sends that host
  `HEAD /v2/NAME/manifests/TAG?ns=HOST`, `GET /v2/NAME/manifests/<digest>?ns=HOST` (and the same for the chosen
  platform's manifest of an index), and `GET /v2/NAME/blobs/<digest>?ns=HOST` per blob: every request carries
  `ns`, the registry host of the reference, URL-escaped (`?ns=127.0.0.1%3A5000`). When the mirror fails, ctr
  goes on to `server`.
- One containerd shares blobs between its namespaces by default (a second namespace pulling the same image
  fetches nothing); ours is configured `content_sharing_policy = "isolated"`, so each namespace fetches for
  itself and request counts do not depend on what another test pulled.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Self

import pytest

from tests.support.clients import Docker
from tests.support.processes import HOST, ServerProcess

START_TIMEOUT_S = 60.0
STOP_GRACE_S = 20.0
# Where the daemons send what is not on this machine (Docker Hub, after a failing mirror): a loopback port
# nobody listens on (discard), so such a request fails at once and never leaves the machine.
NOWHERE_PROXY = f"http://{HOST}:9"


def _short_dir(prefix: str) -> Path:
    """A fresh directory straight under the temp dir: unix socket paths under it stay short (108 bytes max)."""
    return Path(tempfile.mkdtemp(prefix=prefix))


def _unmount_under(root: Path) -> None:
    """Unmount whatever is mounted at or under `root`, deepest first (dockerd bind-mounts its data root)."""
    with open("/proc/mounts") as f:
        points = [line.split()[1] for line in f]
    prefix = str(root)
    for point in sorted((p for p in points if p == prefix or p.startswith(prefix + "/")), reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)


def _daemon_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k.lower() not in ("http_proxy", "https_proxy", "no_proxy")}
    env.update(HTTP_PROXY=NOWHERE_PROXY, HTTPS_PROXY=NOWHERE_PROXY, NO_PROXY=f"{HOST},localhost")
    return env


class DockerOn(Docker):
    """The docker CLI against one daemon: every command runs as `docker -H <host> ...`."""

    def __init__(self, workdir: Path, host: str):
        super().__init__(workdir)
        self.host = host

    def run(
        self, *args: str, check: bool = True, timeout: float = 300, input: str | None = None, config: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        return super().run("-H", self.host, *args, check=check, timeout=timeout, input=input, config=config)


class Dockerd:
    """A second dockerd: its own data root, exec root, pidfile and socket (`<base>/docker.sock`), no bridge and
    no iptables rules (so it never touches the main daemon's network), its own managed containerd under its
    exec root, and a daemon.json of ours holding `registry-mirrors`.

    `start()` returns once the daemon answers; `cli` is the docker CLI against it. `close()` stops it and
    removes everything it made (images pulled into it go with it).
    """

    def __init__(self, mirrors: Sequence[str] = (), base_dir: Path | None = None):
        self.base_dir = base_dir or _short_dir("dockerd-")
        self.mirrors = list(mirrors)
        self.socket = self.base_dir / "docker.sock"
        self.config_file = self.base_dir / "daemon.json"
        command = [
            "dockerd",
            "--data-root", str(self.base_dir / "data"),
            "--exec-root", str(self.base_dir / "exec"),
            "--pidfile", str(self.base_dir / "docker.pid"),
            "-H", f"unix://{self.socket}",
            "--config-file", str(self.config_file),
            "--bridge=none",
            "--iptables=false",
            "--ip6tables=false",
            "--ip-masq=false",
        ]  # fmt: skip
        self.process = ServerProcess(command, log_path=self.base_dir / "dockerd.log", env=_daemon_env(), name="dockerd")
        self.cli = DockerOn(self.base_dir / "cli", f"unix://{self.socket}")
        atexit.register(self._atexit)

    @property
    def containerd_socket(self) -> Path:
        """The socket of the containerd this daemon manages."""
        return self.base_dir / "exec" / "containerd" / "containerd.sock"

    def _write_config(self) -> None:
        self.config_file.write_text(json.dumps({"registry-mirrors": self.mirrors}))

    def _answers(self) -> bool:
        return self.cli.run("version", "-f", "{{.Server.Version}}", check=False, timeout=10).returncode == 0

    def start(self) -> Self:
        """Start the daemon and wait until it answers; raise ProcessError (log tail) if it does not."""
        self.base_dir.mkdir(parents=True, exist_ok=True)
        (self.base_dir / "cli").mkdir(exist_ok=True)
        self._write_config()
        self.process.start()
        self.process.wait_until(self._answers, START_TIMEOUT_S, f"answering on {self.socket}")
        return self

    def info_mirrors(self) -> list[str]:
        """The registry mirrors the running daemon uses (as `docker info` shows them)."""
        out = self.cli.run("info", "-f", "{{json .RegistryConfig.Mirrors}}").stdout
        return list(json.loads(out) or [])

    def set_mirrors(self, mirrors: Sequence[str]) -> None:
        """Point the running daemon at other mirrors: rewrite daemon.json and SIGHUP it (a reload, no restart)."""
        self.mirrors = list(mirrors)
        self._write_config()
        os.kill(self.process.pid, signal.SIGHUP)
        wanted = [m.rstrip("/") + "/" for m in self.mirrors]
        self.process.wait_until(lambda: self.info_mirrors() == wanted, 10, f"using mirrors {wanted}")

    def log_text(self) -> str:
        return self.process.log_text()

    def log_tail(self, lines: int = 60) -> str:
        return self.process.log_tail(lines)

    def stop(self) -> None:
        """A graceful stop (it stops its containerd too), then SIGKILL if it lingers."""
        self.process.stop(STOP_GRACE_S)
        pidfile = self.base_dir / "exec" / "containerd" / "containerd.pid"
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(pidfile.read_text().strip()), signal.SIGKILL)  # only if dockerd left it behind

    def close(self) -> None:
        """Stop it and remove its directory (after unmounting what it left mounted)."""
        self.stop()
        _unmount_under(self.base_dir)
        shutil.rmtree(self.base_dir, ignore_errors=True)

    def _atexit(self) -> None:  # a session that ended without the fixture's teardown leaves no daemon behind
        if self.base_dir.exists():
            with contextlib.suppress(Exception):
                self.close()


CONTAINERD_CONFIG = """version = 2
root = "{base}/root"
state = "{base}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = "{base}/containerd.sock"

[ttrpc]
  address = "{base}/containerd.sock.ttrpc"

[debug]
  address = ""

[metrics]
  address = ""

[plugins."io.containerd.metadata.v1.bolt"]
  content_sharing_policy = "isolated"

[plugins."io.containerd.internal.v1.opt"]
  path = "{base}/opt"
"""


def write_hosts_toml(hosts_dir: Path, host: str, mirror: str, server: str | None = None) -> Path:
    """`hosts_dir/<host>/hosts.toml` sending pulls of `host` to the mirror URL `mirror` (pull and resolve), with
    `server` (default: `http://<host>`) as the fallback; returns `hosts_dir`."""
    folder = hosts_dir / host
    folder.mkdir(parents=True, exist_ok=True)
    text = f'server = "{server or "http://" + host}"\n\n[host."{mirror}"]\n  capabilities = ["pull", "resolve"]\n'
    (folder / "hosts.toml").write_text(text)
    return hosts_dir


class Containerd:
    """A containerd of its own (root, state and sockets under one temp dir; no CRI; namespaces do not share
    blobs), driven with `ctr`."""

    def __init__(self, base_dir: Path | None = None):
        self.base_dir = base_dir or _short_dir("containerd-")
        self.config_path = self.base_dir / "config.toml"
        self.socket = self.base_dir / "containerd.sock"
        self.process = ServerProcess(
            ["containerd", "--config", str(self.config_path)],
            log_path=self.base_dir / "containerd.log",
            env=_daemon_env(),
            name="containerd",
        )
        atexit.register(self._atexit)

    def start(self) -> Self:
        self.config_path.write_text(CONTAINERD_CONFIG.format(base=self.base_dir))
        self.process.start()
        self.process.wait_until(self._answers, START_TIMEOUT_S, f"answering on {self.socket}")
        return self

    def _answers(self) -> bool:
        return self.ctr("version", check=False, timeout=10).returncode == 0

    def ctr(
        self, *args: str, namespace: str = "default", check: bool = True, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        """Run `ctr -a <socket> -n namespace args...`; with `check`, fail the test showing its output on failure."""
        command = ["ctr", "-a", str(self.socket), "-n", namespace, *args]
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
        if check and result.returncode != 0:
            pytest.fail(f"{' '.join(command)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
        return result

    def pull(
        self, reference: str, hosts_dir: Path, namespace: str, platform: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """`ctr image pull --plain-http --hosts-dir hosts_dir reference` into `namespace`."""
        args = ["image", "pull", "--plain-http", "--hosts-dir", str(hosts_dir)]
        if platform:
            args += ["--platform", platform]
        return self.ctr(*args, reference, namespace=namespace, check=check)

    def image_target(self, reference: str, namespace: str) -> str:
        """The digest a pulled image's name points at in `namespace`."""
        out = self.ctr("image", "ls", namespace=namespace).stdout.splitlines()
        for line in out[1:]:
            fields = line.split()
            if fields and fields[0] == reference:
                return next(f for f in fields if f.startswith("sha256:"))
        raise AssertionError(f"{reference} is not in namespace {namespace}: {out}")

    def log_tail(self, lines: int = 60) -> str:
        return self.process.log_tail(lines)

    def stop(self) -> None:
        self.process.stop(STOP_GRACE_S)

    def close(self) -> None:
        self.stop()
        _unmount_under(self.base_dir)
        shutil.rmtree(self.base_dir, ignore_errors=True)

    def _atexit(self) -> None:
        if self.base_dir.exists():
            with contextlib.suppress(Exception):
                self.close()


def engines_available() -> bool:
    """Whether dockerd, containerd and ctr are installed."""
    return all(shutil.which(tool) for tool in ("dockerd", "containerd", "ctr"))
