"""The Docker engine pushes to and pulls from the registry: round trips keep image IDs, layers are
mounted across repositories, deleted tags stop resolving, and a 200 MiB layer goes both ways."""

from __future__ import annotations

import os
import re
import time
import uuid
from dataclasses import dataclass

import pytest

from tests.support.clients import Docker
from tests.support.server import RegistryServer

pytestmark = pytest.mark.e2e

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
LARGE_LAYER_BYTES = 200 << 20


@dataclass(frozen=True)
class PushedImage:
    reference: str  # 127.0.0.1:<port>/<repository>:<tag>
    image_id: str
    payload: bytes  # the content of /data/payload.txt in the image


@pytest.fixture(scope="module")
def app_image(docker: Docker, base_image: str, module_registry: RegistryServer) -> PushedImage:
    """Image A (the base plus one file layer), built and pushed as team/app:1.0."""
    reference = f"{module_registry.host}/team/app:1.0"
    payload = f"hello from image A {uuid.uuid4().hex}\n".encode()
    files = {"/data/payload.txt": payload, "/data/random.bin": os.urandom(256 << 10)}
    image_id = docker.build(reference, base_image, files, cmd=["cat", "/data/payload.txt"])
    push = docker.run("push", reference)
    assert "Pushed" in push.stdout, push.stdout
    assert "1.0: digest: sha256:" in push.stdout, push.stdout
    return PushedImage(reference, image_id, payload)


def test_pushed_image_pulls_back_with_the_same_id_and_runs(docker: Docker, app_image: PushedImage) -> None:
    """docker push, rmi, pull: the image ID is unchanged and the container prints the file it holds."""
    docker.run("rmi", app_image.reference)
    assert not docker.has_image(app_image.image_id), "rmi left the image behind: the pull would prove nothing"

    docker.run("pull", app_image.reference)

    assert docker.image_id(app_image.reference) == app_image.image_id
    output = docker.run("run", "--rm", "--network", "none", app_image.reference).stdout
    assert output.encode() == app_image.payload


def test_push_to_another_repository_mounts_shared_layers_and_pulls_back(
    docker: Docker, app_image: PushedImage, module_registry: RegistryServer
) -> None:
    """B (FROM A, one more layer) pushed to team/other mounts A's two layers from team/app; A re-pushed
    finds its layers already there; B pulls back with the same image ID."""
    reference = f"{module_registry.host}/team/other:2"
    payload = f"hello from image B {uuid.uuid4().hex}\n".encode()
    image_id = docker.build(reference, app_image.reference, {"/data/b.txt": payload}, cmd=["cat", "/data/b.txt"])

    push = docker.run("push", reference)
    mounted_from = re.findall(r"Mounted from (\S+)", push.stdout)
    assert len(mounted_from) == 2, push.stdout  # the base layer and A's file layer
    assert "team/app" in mounted_from, push.stdout
    assert push.stdout.count("Pushed") == 1, push.stdout

    again = docker.run("push", app_image.reference)
    assert again.stdout.count("Layer already exists") == 2, again.stdout

    docker.run("rmi", reference)
    assert not docker.has_image(image_id)
    docker.run("pull", reference)
    assert docker.image_id(reference) == image_id
    assert docker.run("run", "--rm", "--network", "none", reference).stdout.encode() == payload


def test_deleted_tag_no_longer_pulls_but_its_digest_still_does(
    docker: Docker, base_image: str, module_registry: RegistryServer
) -> None:
    """DELETE /v2/<name>/manifests/<tag> answers 202; then pulling the tag fails, pulling by digest works."""
    repository = f"{module_registry.host}/team/deltest"
    reference = f"{repository}:doomed"
    image_id = docker.build(reference, base_image, {"/data/doomed.bin": os.urandom(64 << 10)})
    docker.run("push", reference)
    with module_registry.client() as client:
        head = client.head("/v2/team/deltest/manifests/doomed", headers={"Accept": DOCKER_MANIFEST})
        assert head.status_code == 200
        digest = head.headers["Docker-Content-Digest"]

        deleted = client.delete("/v2/team/deltest/manifests/doomed")
        assert deleted.status_code == 202, deleted.text
        assert client.head("/v2/team/deltest/manifests/doomed").status_code == 404
    docker.run("rmi", reference)
    assert not docker.has_image(image_id)

    by_tag = docker.run("pull", reference, check=False)
    assert by_tag.returncode != 0, by_tag.stdout
    assert "manifest unknown" in by_tag.stderr.lower() or "not found" in by_tag.stderr.lower(), by_tag.stderr

    by_digest = f"{repository}@{digest}"
    docker.track(by_digest)
    docker.run("pull", by_digest)
    assert docker.image_id(by_digest) == image_id


def test_200_mib_layer_pushes_and_pulls_back_intact(
    docker: Docker, base_image: str, module_registry: RegistryServer
) -> None:
    """A layer of 200 MiB of random data: push, rmi, pull give the same image ID and the same file bytes."""
    reference = f"{module_registry.host}/team/big:1"
    image_id, file_sha256 = docker.build_large(reference, base_image, "/data/big.bin", LARGE_LAYER_BYTES)

    started = time.monotonic()
    push = docker.run("push", reference, timeout=900)
    push_s = time.monotonic() - started
    assert push.stdout.count("Pushed") == 1, push.stdout

    docker.run("rmi", reference)
    assert not docker.has_image(image_id)
    started = time.monotonic()
    docker.run("pull", reference, timeout=900)
    pull_s = time.monotonic() - started
    print(f"\n200 MiB layer: docker push {push_s:.1f}s, docker pull {pull_s:.1f}s")

    assert docker.image_id(reference) == image_id
    output = docker.run("run", "--rm", "--network", "none", reference, "sha256sum", "/data/big.bin").stdout
    assert output.split()[0] == file_sha256


def test_tags_list_and_catalog_list_what_was_pushed(
    docker: Docker, app_image: PushedImage, module_registry: RegistryServer
) -> None:
    """GET /v2/<name>/tags/list and /v2/_catalog name the tags and repositories docker pushed."""
    for tag in ("v1", "v2", "latest"):
        tagged = docker.track(f"{module_registry.host}/team/listed:{tag}")
        docker.run("tag", app_image.reference, tagged)
        docker.run("push", tagged)

    with module_registry.client() as client:
        tags = client.get("/v2/team/listed/tags/list")
        assert tags.status_code == 200, tags.text
        assert tags.json() == {"name": "team/listed", "tags": ["latest", "v1", "v2"]}
        app_tags = client.get("/v2/team/app/tags/list").json()["tags"]
        assert "1.0" in app_tags

        catalog = client.get("/v2/_catalog")
        assert catalog.status_code == 200, catalog.text
        repositories = catalog.json()["repositories"]
        assert {"team/app", "team/listed"} <= set(repositories)
        assert repositories == sorted(repositories)
