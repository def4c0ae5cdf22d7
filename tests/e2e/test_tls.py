"""HTTPS served by the registry itself (granian, then uvicorn), used as Docker users deploy it: a registry on
a non-loopback address of this machine with a certificate of a private CA, that CA in
`/etc/docker/certs.d/HOST:PORT/ca.crt`, then `docker login`, push and pull; without the CA file docker
refuses the certificate, so the test shows that docker verified it."""

from __future__ import annotations

import os
import shutil
import ssl
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.support.clients import Docker
from tests.support.server import RegistryServer
from tests.support.services import require_service
from tests.support.tls import ServerCertificate, make_server_certificate, non_loopback_ipv4
from tests.support.users import auth_config, htpasswd_bytes

pytestmark = pytest.mark.e2e

DOCKER_CERTS = Path("/etc/docker/certs.d")


@pytest.fixture(scope="module")
def address() -> str:
    """A non-loopback IPv4 address of this machine: docker insists on verified TLS there (127.0.0.0/8 is
    an insecure registry to it by default)."""
    found = non_loopback_ipv4()
    require_service(found is not None, "a non-loopback IPv4 address of this machine")
    assert found is not None
    return found


@pytest.fixture(scope="module", params=["granian", "uvicorn"])
def https_registry(
    request: pytest.FixtureRequest, address: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[RegistryServer, ServerCertificate]]:
    """A registry in htpasswd mode (tests/support/users.py) serving HTTPS on `address` with `http.server`
    granian, then uvicorn, and the certificate files it serves (SAN: the address)."""
    directory = tmp_path_factory.mktemp(f"https-{request.param}")
    pair = make_server_certificate(directory / "certs", address)
    settings = yaml.safe_load(auth_config("htpasswd"))
    settings["http"] = {
        "server": request.param,
        "workers": 2,
        "tls_certificate": str(pair.certificate),
        "tls_key": str(pair.key),
    }
    config = directory / "config.yaml"
    config.write_text(yaml.safe_dump(settings))
    (directory / "data").mkdir()
    (directory / "data" / "htpasswd").write_bytes(htpasswd_bytes(directory))
    server = RegistryServer(directory / "data", directory / "registry.log", config=config, address=address, ca=pair.ca)
    server.mode = "htpasswd"
    server.start()
    yield server, pair
    server.stop()


@pytest.fixture
def trusted(https_registry: tuple[RegistryServer, ServerCertificate]) -> Iterator[Path]:
    """The registry's CA in /etc/docker/certs.d/HOST:PORT/ca.crt, where the Docker engine looks for it on
    each connection; removed afterwards (with certs.d itself when this made it and it is empty)."""
    require_service(os.access("/etc/docker", os.W_OK), "write access to /etc/docker (the tests run as root)")
    server, pair = https_registry
    made_certs_dir = not DOCKER_CERTS.exists()
    folder = DOCKER_CERTS / server.host
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(pair.ca, folder / "ca.crt")
    try:
        yield folder / "ca.crt"
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        if made_certs_dir:
            with_others = list(DOCKER_CERTS.iterdir()) if DOCKER_CERTS.exists() else []
            if not with_others:
                DOCKER_CERTS.rmdir()


def login(docker: Docker, server: RegistryServer, config: Path, check: bool = True):
    return docker.run(
        "login", server.host, "-u", "alice", "--password-stdin", input="alice-pw", config=config, check=check
    )


def test_without_the_ca_docker_refuses_the_certificate(
    docker: Docker, https_registry: tuple[RegistryServer, ServerCertificate], client_config: Path
) -> None:
    server, _ = https_registry
    assert not (DOCKER_CERTS / server.host).exists()
    result = login(docker, server, client_config, check=False)
    assert result.returncode != 0
    assert "x509: certificate signed by unknown authority" in result.stderr, result.stderr
    assert "Login Succeeded" not in result.stdout


def test_docker_logs_in_pushes_and_pulls_over_https(
    docker: Docker,
    base_image: str,
    https_registry: tuple[RegistryServer, ServerCertificate],
    trusted: Path,
    client_config: Path,
) -> None:
    server, _ = https_registry
    assert "Login Succeeded" in login(docker, server, client_config).stdout
    tag = f"{server.host}/alice/https:{uuid.uuid4().hex[:12]}"
    image_id = docker.build(tag, base_image, {"hello.txt": b"served over TLS\n"})
    docker.run("push", tag, config=client_config)
    docker.run("rmi", tag)
    assert not docker.has_image(tag)
    docker.run("pull", tag, config=client_config)
    assert docker.image_id(tag) == image_id
    ran = docker.run("run", "--rm", "--network", "none", tag, "cat", "/hello.txt")
    assert ran.stdout == "served over TLS\n"
    docker.run("logout", server.host, config=client_config)


def test_urls_and_challenges_name_https_and_plain_http_is_not_served(
    https_registry: tuple[RegistryServer, ServerCertificate],
) -> None:
    server, _ = https_registry
    with server.client() as client:
        challenge = client.get("/v2/")
        assert challenge.status_code == 401 and challenge.headers["www-authenticate"].startswith("Basic realm=")
        started = client.post("/v2/alice/urls/blobs/uploads/", auth=("alice", "alice-pw"))
        assert started.status_code == 202, started.text
        location = started.headers["location"]
        followed = client.get(httpx.URL(server.url).join(location), auth=("alice", "alice-pw"))
        assert followed.status_code == 204 and str(followed.url).startswith(f"https://{server.host}/")
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://{server.host}/v2/", timeout=5).raise_for_status()


def test_tls_1_2_is_served_and_1_1_is_not(https_registry: tuple[RegistryServer, ServerCertificate]) -> None:
    server, pair = https_registry
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        context = ssl.create_default_context(cafile=str(pair.ca))
        context.minimum_version = context.maximum_version = version
        assert httpx.get(f"{server.url}/v2/", verify=context, timeout=5).status_code == 401, version
    old = ssl.create_default_context(cafile=str(pair.ca))
    old.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    old.maximum_version = ssl.TLSVersion.TLSv1_1
    old.set_ciphers("DEFAULT:@SECLEVEL=0")
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{server.url}/v2/", verify=old, timeout=5)


@pytest.mark.parametrize("server_kind", ["granian", "uvicorn"])
def test_token_challenges_name_the_https_realm(address: str, tmp_path: Path, server_kind: str) -> None:
    pair = make_server_certificate(tmp_path / "certs", address)
    settings = yaml.safe_load(auth_config("token"))
    settings["http"] = {"server": server_kind, "workers": 1, "tls_certificate": str(pair.certificate)}
    settings["http"]["tls_key"] = str(pair.key)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(settings))
    server = RegistryServer(tmp_path / "data", tmp_path / "registry.log", config=config, address=address, ca=pair.ca)
    server.start()
    try:
        with server.client() as client:
            challenge = client.get("/v2/").headers["www-authenticate"]
    finally:
        server.stop()
    assert challenge.startswith(f'Bearer realm="https://{server.host}/auth/token"'), challenge
