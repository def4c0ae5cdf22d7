"""skopeo copies images between the registry and OCI layouts, in OCI and Docker schema2 formats, and
between repositories of the registry by mounting blobs."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support.clients import Skopeo
from tests.support.content import DOCKER_MANIFEST, OCI_CONFIG, OCI_LAYER, OCI_MANIFEST, digest_of
from tests.support.layouts import build_oci_layout
from tests.support.server import RegistryServer

pytestmark = pytest.mark.e2e

DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
ACCEPT = {"Accept": f"{OCI_MANIFEST}, {DOCKER_MANIFEST}"}

# skopeo's --format, and the media types of the manifest, config and layers it must produce.
FORMATS = {
    "oci": (OCI_MANIFEST, OCI_CONFIG, OCI_LAYER),
    "v2s2": (DOCKER_MANIFEST, DOCKER_CONFIG, DOCKER_LAYER),
}


@dataclass(frozen=True)
class Manifest:
    digest: str  # Docker-Content-Digest
    content_type: str
    body: bytes

    @property
    def document(self) -> dict:
        return json.loads(self.body)

    @property
    def layer_digests(self) -> list[str]:
        return [layer["digest"] for layer in self.document["layers"]]


def get_manifest(client: httpx.Client, repository: str, reference: str) -> Manifest:
    response = client.get(f"/v2/{repository}/manifests/{reference}", headers=ACCEPT)
    assert response.status_code == 200, response.text
    digest = response.headers["Docker-Content-Digest"]
    assert digest_of(response.content) == digest
    return Manifest(digest, response.headers["Content-Type"], response.content)


@pytest.fixture(scope="module")
def sources(skopeo: Skopeo, module_registry: RegistryServer, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The source image pushed by skopeo from an OCI layout: format -> `repository:tag` in the registry."""
    layout = tmp_path_factory.mktemp("source-layout")
    build_oci_layout(layout, "src")
    pushed = {}
    for fmt in FORMATS:
        reference = f"skopeo/src-{fmt}:1"
        destination = f"docker://{module_registry.host}/{reference}"
        skopeo.run("copy", "--dest-tls-verify=false", "--format", fmt, f"oci:{layout}:src", destination)
        pushed[fmt] = reference
    return pushed


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_copy_to_oci_layout_and_back_stores_the_requested_manifest_format(
    fmt: str, skopeo: Skopeo, module_registry: RegistryServer, sources: dict, tmp_path: Path
) -> None:
    """registry -> oci: layout -> registry (--format oci | v2s2): the stored manifest has that format's media
    types, keeps the layer digests, and `skopeo inspect` reads it back."""
    manifest_type, config_type, layer_type = FORMATS[fmt]
    host = module_registry.host
    layout = tmp_path / "layout"
    skopeo.run("copy", "--src-tls-verify=false", f"docker://{host}/{sources['v2s2']}", f"oci:{layout}:copy")
    target = f"skopeo/via-layout-{fmt}"
    skopeo.run("copy", "--dest-tls-verify=false", "--format", fmt, f"oci:{layout}:copy", f"docker://{host}/{target}:1")

    with module_registry.client() as client:
        source = get_manifest(client, *sources["v2s2"].split(":"))
        stored = get_manifest(client, target, "1")
        assert stored.content_type == manifest_type
        document = stored.document
        assert document["mediaType"] == manifest_type
        assert document["config"]["mediaType"] == config_type
        assert [layer["mediaType"] for layer in document["layers"]] == [layer_type]
        assert stored.layer_digests == source.layer_digests
        for descriptor in [document["config"], *document["layers"]]:
            blob = client.get(f"/v2/{target}/blobs/{descriptor['digest']}")
            assert blob.status_code == 200
            assert digest_of(blob.content) == descriptor["digest"]
            assert len(blob.content) == descriptor["size"]

    inspect = skopeo.run("inspect", "--tls-verify=false", f"docker://{host}/{target}:1")
    inspected = json.loads(inspect.stdout)
    assert inspected["Digest"] == stored.digest
    assert inspected["Layers"] == stored.layer_digests
    assert (inspected["Os"], inspected["Architecture"]) == ("linux", "amd64")


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_copy_between_repositories_mounts_layers_and_keeps_the_manifest_digest(
    fmt: str, skopeo: Skopeo, module_registry: RegistryServer, sources: dict
) -> None:
    """docker:// -> docker:// within the registry: layers are mounted from the source repository (POST
    answered 201, no PATCH of them) and the destination manifest is byte-identical (same digest)."""
    host = module_registry.host
    source_repository, source_tag = sources[fmt].split(":")
    target = f"skopeo/copied-{fmt}"
    log_start = len(module_registry.log_text())

    skopeo.run(
        "copy",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        "--format",
        fmt,
        f"docker://{host}/{sources[fmt]}",
        f"docker://{host}/{target}:1",
    )

    with module_registry.client() as client:
        source = get_manifest(client, source_repository, source_tag)
        copied = get_manifest(client, target, "1")
        assert copied.digest == source.digest
        assert copied.body == source.body
        for digest in copied.layer_digests:
            assert client.head(f"/v2/{target}/blobs/{digest}").status_code == 200

    log = module_registry.wait_for_log(rf"PUT /v2/{re.escape(target)}/manifests/1 201 ", log_start)
    mounts = re.findall(rf"POST /v2/{re.escape(target)}/blobs/uploads/? 201 ", log)
    assert len(mounts) >= len(copied.layer_digests), f"no cross-repository mount in:\n{log}"
    uploaded = re.findall(rf"PATCH /v2/{re.escape(target)}/blobs/uploads/\S+ 202 ", log)
    config_uploads = 1  # skopeo uploads the (small) config blob rather than mounting it
    assert len(uploaded) <= config_uploads, f"layers were uploaded, not mounted:\n{log}"
