"""Token auth with the real Docker engine and skopeo: login, allowed and denied pushes, anonymous pulls."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.clients import Docker, Skopeo
from tests.support.layouts import build_oci_layout
from tests.support.server import RegistryServer, registry_command, start_server
from tests.support.users import auth_config

pytestmark = pytest.mark.e2e

PASSWORDS = {"alice": "alice-secret", "root": "root-secret"}


def start_secured(directory: Path, mode: str) -> RegistryServer:
    """A registry in `mode` with users alice and root, added through `registry user add`."""
    config = directory / "config.yaml"
    config.write_text(auth_config(mode))
    data = directory / "data"
    for user, password in PASSWORDS.items():
        subprocess.run(
            [
                *registry_command(),
                "user",
                "add",
                user,
                "--password-stdin",
                "--config",
                str(config),
                "--data-dir",
                str(data),
            ],
            input=password + "\n",
            text=True,
            check=True,
            capture_output=True,
        )
    return start_server(directory, config)


@pytest.fixture(scope="module", params=["token", "htpasswd"])
def secured(request, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    server = start_secured(tmp_path_factory.mktemp(f"secured-{request.param}"), request.param)
    server.mode = request.param
    yield server
    server.stop()


def login(docker: Docker, server: RegistryServer, user: str, password: str, config: Path, check: bool = True):
    return docker.run("login", server.host, "-u", user, "--password-stdin", input=password, config=config, check=check)


def test_login_with_a_wrong_password_fails_with_a_clear_message(
    docker: Docker, secured: RegistryServer, client_config: Path
) -> None:
    result = login(docker, secured, "alice", "not-her-password", client_config, check=False)
    assert result.returncode != 0
    # token mode: our message through the token service; htpasswd mode: docker's own words for the 401
    assert "incorrect username or password" in result.stderr or "401 Unauthorized" in result.stderr, result.stderr
    assert login(docker, secured, "alice", PASSWORDS["alice"], client_config).returncode == 0


def test_user_pushes_to_their_namespace_and_pulls_back(
    docker: Docker, base_image: str, secured: RegistryServer, client_config: Path
) -> None:
    login(docker, secured, "alice", PASSWORDS["alice"], client_config)
    reference = f"{secured.host}/alice/app:{uuid.uuid4().hex[:8]}"
    image_id = docker.build(reference, base_image, {"/data/a.txt": uuid.uuid4().bytes})
    docker.run("push", reference, config=client_config)
    docker.run("rmi", reference)
    docker.run("pull", reference, config=client_config)
    assert docker.image_id(reference) == image_id


def test_push_outside_the_rules_is_denied(
    docker: Docker, base_image: str, secured: RegistryServer, client_config: Path
) -> None:
    login(docker, secured, "alice", PASSWORDS["alice"], client_config)
    reference = docker.track(f"{secured.host}/team-b/app:1")
    docker.run("tag", base_image, reference)
    result = docker.run("push", reference, config=client_config, check=False)
    assert result.returncode != 0
    assert "denied: requested access to the resource is denied" in result.stderr, result.stderr


def test_anonymous_pull_where_a_rule_allows_it_after_logout(
    docker: Docker, base_image: str, secured: RegistryServer, client_config: Path
) -> None:
    """Anonymous docker pulls need token mode: given a Basic challenge, docker refuses to go on without
    credentials. In htpasswd mode an anonymous client without docker's scruples (curl) can still pull."""
    login(docker, secured, "root", PASSWORDS["root"], client_config)
    public = f"{secured.host}/public/base:{uuid.uuid4().hex[:8]}"
    private = f"{secured.host}/root/private:1"
    public_id = docker.build(public, base_image, {"/data/p.txt": uuid.uuid4().bytes})
    docker.build(private, base_image, {"/data/q.txt": uuid.uuid4().bytes})
    docker.run("push", public, config=client_config)
    docker.run("push", private, config=client_config)
    docker.run("logout", secured.host, config=client_config)
    docker.run("rmi", public, private)

    if secured.mode == "htpasswd":
        repository, tag = public.split("/", 1)[1].rsplit(":", 1)
        with secured.client() as http:
            assert http.get(f"/v2/{repository}/manifests/{tag}").status_code == 200
            assert http.get("/v2/root/private/manifests/1").status_code == 401
        return
    docker.run("pull", public, config=client_config)
    assert docker.image_id(public) == public_id
    result = docker.run("pull", private, config=client_config, check=False)
    assert result.returncode != 0
    push = docker.run("push", public, config=client_config, check=False)
    assert push.returncode != 0


def test_skopeo_with_credentials(skopeo: Skopeo, secured: RegistryServer, tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    source = f"docker://{secured.host}/alice/skopeo:1"
    root_creds = f"root:{PASSWORDS['root']}"
    build_oci_layout(tmp_path / "source", "v1")
    skopeo.run("copy", "--dest-tls-verify=false", "--dest-creds", root_creds, f"oci:{tmp_path / 'source'}:v1", source)
    skopeo.run(
        "copy", "--src-tls-verify=false", "--src-creds", f"alice:{PASSWORDS['alice']}", source, f"oci:{layout}:v1"
    )
    assert (layout / "index.json").exists()
    wrong = skopeo.run(
        "copy", "--src-tls-verify=false", "--src-creds", "alice:wrong", source, f"oci:{tmp_path / 'x'}:v1", check=False
    )
    assert wrong.returncode != 0
    anonymous = skopeo.run("inspect", "--tls-verify=false", source, check=False)
    assert anonymous.returncode != 0
