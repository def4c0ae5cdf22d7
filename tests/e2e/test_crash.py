"""kill -9 of the registry at the worst moments: mid blob upload, mid manifest PUT, and at random moments
under concurrent pushes. After a restart nothing half-written is visible, everything acknowledged is
there and intact, and every push can be redone."""

from __future__ import annotations

import hashlib
import json
import os
import random
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import RegistryServer

pytestmark = pytest.mark.e2e

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
MIB = 1 << 20
WAIT_S = 30.0


class BodyAbandoned(Exception):
    """Raised by a request body once the server was killed: the client stops sending."""


def sha256(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


@dataclass(frozen=True)
class Image:
    """A small OCI image: a config blob, one layer blob, and the manifest naming them."""

    config: bytes
    layer: bytes
    manifest: bytes

    @property
    def digest(self) -> str:
        return sha256(self.manifest)


def make_image(layer_size: int = 16 << 10, rng: random.Random | None = None) -> Image:
    layer = rng.randbytes(layer_size) if rng else os.urandom(layer_size)
    config = json.dumps(
        {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [sha256(layer)]}}
    ).encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": sha256(config), "size": len(config)},
        "layers": [{"mediaType": OCI_LAYER, "digest": sha256(layer), "size": len(layer)}],
    }
    return Image(config, layer, json.dumps(manifest, indent=2).encode())


def push_blob_monolithic(client: httpx.Client, repository: str, data: bytes) -> None:
    """`POST /v2/<name>/blobs/uploads/?digest=` with the whole blob as the body."""
    response = client.post(
        f"/v2/{repository}/blobs/uploads/",
        params={"digest": sha256(data)},
        content=data,
        headers={"Content-Type": "application/octet-stream"},
    )
    assert response.status_code == 201, f"monolithic upload: {response.status_code} {response.text}"


def push_blob_chunked(client: httpx.Client, repository: str, data: bytes) -> None:
    """`POST` to open an upload, `PATCH` the bytes, `PUT ?digest=` to close it (as docker pushes)."""
    started = client.post(f"/v2/{repository}/blobs/uploads/")
    assert started.status_code == 202, f"upload start: {started.status_code} {started.text}"
    location = started.headers["Location"]
    patched = client.patch(location, content=data, headers={"Content-Type": "application/octet-stream"})
    assert patched.status_code == 202, f"upload PATCH: {patched.status_code} {patched.text}"
    finished = client.put(patched.headers["Location"], params={"digest": sha256(data)})
    assert finished.status_code == 201, f"upload PUT: {finished.status_code} {finished.text}"
    assert finished.headers["Docker-Content-Digest"] == sha256(data)


def put_manifest(client: httpx.Client, repository: str, reference: str, body: bytes) -> httpx.Response:
    return client.put(f"/v2/{repository}/manifests/{reference}", content=body, headers={"Content-Type": OCI_MANIFEST})


def get_manifest(client: httpx.Client, repository: str, reference: str) -> httpx.Response:
    return client.get(f"/v2/{repository}/manifests/{reference}", headers={"Accept": OCI_MANIFEST})


def files_under(directory: Path) -> Iterator[Path]:
    return (path for path in directory.rglob("*") if path.is_file())


def wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting until {what}")
        time.sleep(0.02)


def test_kill_during_blob_upload_leaves_no_blob_and_the_upload_can_be_redone(registry_server: RegistryServer) -> None:
    """A 64 MiB PATCH killed halfway: after restart the blob answers 404, no file under storage/blobs holds
    it, and POST + PATCH + PUT ?digest= then store it intact."""
    repository = "crash/upload"
    data = os.urandom(64 * MIB)
    digest = sha256(data)
    halfway, killed = threading.Event(), threading.Event()

    def slow_body() -> Iterator[bytes]:
        for offset in range(0, len(data), MIB):
            if offset == len(data) // 2:
                halfway.set()
                killed.wait(WAIT_S)
                raise BodyAbandoned
            yield data[offset : offset + MIB]
            time.sleep(0.01)

    storage = registry_server.storage_dir
    with registry_server.client() as client, ThreadPoolExecutor(1) as pool:
        started = client.post(f"/v2/{repository}/blobs/uploads/")
        assert started.status_code == 202, started.text
        location = started.headers["Location"]
        patch = pool.submit(client.patch, location, content=slow_body())
        assert halfway.wait(WAIT_S), "the PATCH body never got halfway"

        def partial_file_written() -> bool:
            return any(
                f.stat().st_size >= 16 * MIB for f in files_under(storage) if f.relative_to(storage).parts[0] != "blobs"
            )

        wait_until(partial_file_written, WAIT_S, "the server has written part of the PATCH body")
        registry_server.kill9()
        killed.set()
        with pytest.raises((httpx.TransportError, BodyAbandoned)):
            patch.result(WAIT_S)

    registry_server.restart()
    assert not any(
        f.name == digest.removeprefix("sha256:") or sha256(f.read_bytes()) == digest
        for f in files_under(storage / "blobs")
    ), "a file under storage/blobs holds the interrupted blob"
    with registry_server.client() as client:
        assert client.head(f"/v2/{repository}/blobs/{digest}").status_code == 404
        interrupted = client.get(location)
        assert interrupted.status_code in (204, 404), interrupted.text
        if interrupted.status_code == 204:
            assert interrupted.headers["Range"] == "0-0", "a partial chunk was kept as if committed"

        push_blob_chunked(client, repository, data)
        blob = client.get(f"/v2/{repository}/blobs/{digest}")
        assert blob.status_code == 200
        assert sha256(blob.content) == digest
        assert blob.content == data


def test_kill_during_manifest_put_leaves_no_manifest_and_the_put_can_be_redone(
    registry_server: RegistryServer,
) -> None:
    """A manifest PUT killed after half its declared Content-Length: after restart neither the tag nor the
    digest resolves, and redoing the PUT stores the exact bytes."""
    repository, tag = "crash/manifest", "v1"
    image = make_image()
    half = len(image.manifest) // 2
    halfway, killed = threading.Event(), threading.Event()

    def slow_body() -> Iterator[bytes]:
        yield image.manifest[:half]
        halfway.set()
        killed.wait(WAIT_S)
        raise BodyAbandoned

    with registry_server.client() as client, ThreadPoolExecutor(1) as pool:
        push_blob_monolithic(client, repository, image.config)
        push_blob_monolithic(client, repository, image.layer)
        headers = {"Content-Type": OCI_MANIFEST, "Content-Length": str(len(image.manifest))}
        put = pool.submit(client.put, f"/v2/{repository}/manifests/{tag}", content=slow_body(), headers=headers)
        assert halfway.wait(WAIT_S), "the manifest body was never sent"
        time.sleep(0.5)  # let the server read the first half and wait for the rest
        registry_server.kill9()
        killed.set()
        with pytest.raises((httpx.TransportError, BodyAbandoned)):
            put.result(WAIT_S)

    registry_server.restart()
    with registry_server.client() as client:
        assert get_manifest(client, repository, tag).status_code == 404
        assert get_manifest(client, repository, image.digest).status_code == 404
        tags = client.get(f"/v2/{repository}/tags/list")
        assert tags.status_code == 200, tags.text
        assert tag not in (tags.json()["tags"] or [])

        redone = put_manifest(client, repository, tag, image.manifest)
        assert redone.status_code == 201, redone.text
        assert redone.headers["Docker-Content-Digest"] == image.digest
        fetched = get_manifest(client, repository, tag)
        assert fetched.status_code == 200
        assert fetched.headers["Content-Type"] == OCI_MANIFEST
        assert fetched.content == image.manifest


# -- kill -9 under concurrent pushes -----------------------------------------------------------------

ROUNDS = 10
PUSHERS = 4
REPOSITORIES = ("crash/loop-a", "crash/loop-b")


@dataclass(frozen=True)
class Push:
    repository: str
    tag: str
    image: Image


@dataclass
class Ledger:
    """What the pushers attempted and what the registry acknowledged (answered 201 for)."""

    attempted: list[Push] = field(default_factory=list)
    acknowledged_tags: list[Push] = field(default_factory=list)
    acknowledged_blobs: list[tuple[str, str]] = field(default_factory=list)  # (repository, digest)
    errors: list[str] = field(default_factory=list)  # answers that were wrong while the server was up
    lock: threading.Lock = field(default_factory=threading.Lock)


def push_image(client: httpx.Client, push: Push, chunked: bool, ledger: Ledger | None = None) -> None:
    """Push the config, the layer and the manifest under its tag, recording each acknowledgement."""
    upload = push_blob_chunked if chunked else push_blob_monolithic
    for blob in (push.image.config, push.image.layer):
        upload(client, push.repository, blob)
        if ledger is not None:
            with ledger.lock:
                ledger.acknowledged_blobs.append((push.repository, sha256(blob)))
    response = put_manifest(client, push.repository, push.tag, push.image.manifest)
    assert response.status_code == 201, f"manifest PUT: {response.status_code} {response.text}"
    assert response.headers["Docker-Content-Digest"] == push.image.digest
    if ledger is not None:
        with ledger.lock:
            ledger.acknowledged_tags.append(push)


def pusher(server: RegistryServer, ledger: Ledger, name: str, rng: random.Random, stop: threading.Event) -> None:
    """Push small images one after the other until the server goes away (or `stop`)."""
    with server.client(timeout=10.0) as client:
        for i in range(10_000):
            if stop.is_set():
                return
            push = Push(rng.choice(REPOSITORIES), f"{name}-{i}", make_image(rng.randrange(1, 64 << 10), rng))
            with ledger.lock:
                ledger.attempted.append(push)
            try:
                push_image(client, push, chunked=rng.random() < 0.5, ledger=ledger)
            except httpx.TransportError:
                return  # killed
            except AssertionError as e:
                if not stop.is_set():
                    with ledger.lock:
                        ledger.errors.append(f"{push.repository}:{push.tag}: {e}")
                return


def check_invariants(client: httpx.Client, ledger: Ledger, context: str) -> int:
    """Every listed tag resolves to bytes hashing to its digest, whose blobs are all readable and intact;
    everything acknowledged is there. Returns the number of tags checked."""
    catalog = client.get("/v2/_catalog", params={"n": 1000})
    assert catalog.status_code == 200, catalog.text
    checked_blobs: set[str] = set()
    count = 0
    for repository in catalog.json()["repositories"]:
        tags = client.get(f"/v2/{repository}/tags/list")
        assert tags.status_code == 200, f"{context}: tags/list of {repository}: {tags.text}"
        for tag in tags.json()["tags"] or []:
            manifest = get_manifest(client, repository, tag)
            assert manifest.status_code == 200, f"{context}: listed tag {repository}:{tag} does not resolve"
            digest = manifest.headers["Docker-Content-Digest"]
            assert sha256(manifest.content) == digest, f"{context}: {repository}:{tag} bytes do not match"
            document = json.loads(manifest.content)
            for descriptor in [document["config"], *document["layers"]]:
                if (repository, descriptor["digest"]) in checked_blobs:
                    continue
                blob = client.get(f"/v2/{repository}/blobs/{descriptor['digest']}")
                where = f"{context}: blob {descriptor['digest']} of {repository}:{tag}"
                assert blob.status_code == 200, f"{where} answers {blob.status_code}"
                assert sha256(blob.content) == descriptor["digest"], f"{where} is corrupt"
                assert len(blob.content) == descriptor["size"], f"{where} has the wrong size"
                checked_blobs.add((repository, descriptor["digest"]))
            count += 1
    for push in ledger.acknowledged_tags:
        manifest = get_manifest(client, push.repository, push.tag)
        assert manifest.status_code == 200, f"{context}: acknowledged {push.repository}:{push.tag} is lost"
        assert manifest.content == push.image.manifest, f"{context}: {push.repository}:{push.tag} changed"
    for repository, digest in ledger.acknowledged_blobs:
        head = client.head(f"/v2/{repository}/blobs/{digest}")
        assert head.status_code == 200, f"{context}: acknowledged blob {digest} in {repository} is lost"
    return count


def test_kill_at_random_moments_under_concurrent_pushes_keeps_the_registry_consistent(
    registry_server: RegistryServer,
) -> None:
    """Ten rounds of concurrent pushes cut by kill -9 at a random moment: after each restart every listed
    tag resolves to intact bytes with intact blobs and nothing acknowledged is lost; at the end every
    image, interrupted or not, can be pushed again."""
    seed = int(os.environ.get("E2E_CRASH_SEED", random.randrange(1 << 32)))
    print(f"\ncrash loop seed {seed} (set E2E_CRASH_SEED to replay)")
    rng = random.Random(seed)
    ledger = Ledger()
    for round_number in range(ROUNDS):
        context = f"seed {seed}, round {round_number}"
        stop = threading.Event()
        threads = [
            threading.Thread(
                target=pusher,
                args=(registry_server, ledger, f"r{round_number}-p{p}", random.Random(rng.random()), stop),
                daemon=True,
            )
            for p in range(PUSHERS)
        ]
        for thread in threads:
            thread.start()
        time.sleep(rng.uniform(0.05, 0.6))
        registry_server.kill9()
        stop.set()
        for thread in threads:
            thread.join(WAIT_S)
            assert not thread.is_alive(), f"{context}: a pusher hangs"
        assert not ledger.errors, f"{context}: wrong answers before the kill: {ledger.errors}"

        registry_server.restart()
        with registry_server.client() as client:
            tags = check_invariants(client, ledger, context)
        print(f"round {round_number}: {len(ledger.attempted)} pushes attempted, {tags} tags consistent")

    interrupted = len(ledger.attempted) - len(ledger.acknowledged_tags)
    assert len(ledger.acknowledged_tags) > 0, "no push ever completed: the kills came too early to test anything"
    with registry_server.client() as client:
        for push in ledger.attempted:
            push_image(client, push, chunked=rng.random() < 0.5)
            fetched = get_manifest(client, push.repository, push.tag)
            assert fetched.status_code == 200
            assert fetched.content == push.image.manifest
        check_invariants(client, ledger, f"seed {seed}, after re-pushing")
    print(f"re-pushed {len(ledger.attempted)} images ({interrupted} of them interrupted by a kill)")
