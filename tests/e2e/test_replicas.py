"""Three replicas on SeaweedFS and PostgreSQL behind a round-robin proxy (nginx), used by the real Docker
engine: push, pull and run work as on one node, with or without redirects of blob downloads to S3."""

from __future__ import annotations

import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.backends import config_yaml, s3_and_postgres
from tests.support.clients import Docker
from tests.support.processes import ServerProcess, free_port
from tests.support.server import RegistryServer
from tests.support.services import Postgres, SeaweedS3, require_service

pytestmark = pytest.mark.e2e

NGINX = """
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log {dir}/access.log;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    upstream replicas {{
{servers}
        keepalive 16;
    }}
    server {{
        listen 127.0.0.1:{port};
        client_max_body_size 0;
        proxy_request_buffering off;
        proxy_buffering off;
        location / {{
            proxy_pass http://replicas;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_read_timeout 300s;
        }}
    }}
}}
"""


class Proxy:
    """nginx sending each request to the next replica."""

    def __init__(self, directory: Path, ports: list[int], redirect: bool):
        self.directory, self.port = directory, free_port()
        self.redirect = redirect  # whether the replicas behind it redirect blob downloads to S3
        servers = "\n".join(f"        server 127.0.0.1:{p};" for p in ports)
        (directory / "nginx.conf").write_text(NGINX.format(dir=directory, servers=servers, port=self.port))
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        self.process = ServerProcess([nginx, "-c", str(directory / "nginx.conf")], log_path=directory / "nginx.log")
        self.process.start()
        self.process.wait_for_port(self.port, timeout=10)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.process.stop()


@pytest.fixture(params=[False, True], ids=["streamed", "redirected"])
def cluster(
    request, tmp_path: Path, seaweed: SeaweedS3, postgres: Postgres
) -> Iterator[tuple[Proxy, list[RegistryServer]]]:
    require_service(shutil.which("nginx") is not None or Path("/usr/sbin/nginx").exists(), "nginx")
    settings = s3_and_postgres(tmp_path, seaweed, postgres)
    config = tmp_path / "config.yaml"
    config.write_text(config_yaml(settings, redirect=request.param))
    replicas = []
    for n in range(3):
        replica = RegistryServer(tmp_path / f"replica{n}", tmp_path / f"replica{n}.log", config=config)
        replica.start()
        replicas.append(replica)
    proxy = Proxy(tmp_path, [r.port for r in replicas], request.param)
    yield proxy, replicas
    proxy.stop()
    for replica in replicas:
        replica.stop()


def served_by(replica: RegistryServer, pattern: str) -> set[str]:
    return set(re.findall(pattern, replica.log_text()))


def test_docker_push_pull_and_run_through_three_replicas(
    docker: Docker, base_image: str, cluster: tuple[Proxy, list[RegistryServer]]
) -> None:
    proxy, replicas = cluster
    reference = f"{proxy.host}/team/app:{uuid.uuid4().hex[:8]}"
    payload = uuid.uuid4().hex.encode()
    image_id = docker.build(
        reference, base_image, {"/data/p.txt": payload, "/data/big.bin": uuid.uuid4().bytes * 65536}
    )
    docker.run("push", reference)
    docker.run("rmi", reference)
    docker.run("pull", reference)
    assert docker.image_id(reference) == image_id
    assert docker.run("run", "--rm", "--network", "none", reference, "cat", "/data/p.txt").stdout.encode() == payload

    # Every replica served some of it, and uploads crossed replicas between their PATCH and their PUT.
    patches = [served_by(r, r"PATCH /v2/team/app/blobs/uploads/([0-9a-f-]+) 202") for r in replicas]
    puts = [served_by(r, r"PUT /v2/team/app/blobs/uploads/([0-9a-f-]+) 201") for r in replicas]
    assert all(served_by(r, r"(?:GET|HEAD|PUT|POST|PATCH) /v2/team/app/\S+ 20\d") for r in replicas)
    assert any(patches[i] & puts[j] for i in range(3) for j in range(3) if i != j)
    downloads = r"GET /v2/team/app/blobs/sha256:[0-9a-f]+ (\d+)"
    statuses = set().union(*(served_by(r, downloads) for r in replicas))
    assert statuses == ({"307"} if proxy.redirect else {"200"})
