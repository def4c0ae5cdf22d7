"""kill -9 of the registry at the worst moments: at each step of a push (mid PATCH, between PATCH and PUT,
mid final PUT, mid manifest PUT, mid monolithic POST) on disk and on S3 + PostgreSQL, and at random
moments under concurrent pushes. After a restart nothing half-written is visible, everything
acknowledged is there and intact, every push can be redone, and once the collector ran nothing the
killed writes left stays in storage."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest

from registry.layout import blob_key
from tests.support.backends import BACKENDS, config_yaml, s3_and_postgres
from tests.support.server import RegistryServer, registry_command

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


# -- the crash matrix: kill -9 at each step of a push, on each backend ---------------------------------

LAYER_MIB = 24  # a streamed write passes one S3 part (16 MiB), so a killed one leaves a multipart upload
UNSENT = 4 * MIB  # what a streamed body keeps back (its sender waits for the kill)
FIRST_CHUNK = 4 * MIB  # the acknowledged PATCH before a final PUT that carries the rest


@dataclass
class Backend:
    """Where a crash-matrix registry keeps its data: the `registry` CLI over it and a probe of its storage."""

    name: str
    data_dir: Path
    config: Path | None = None
    s3: Any = None  # a boto3 client of the bucket, on S3
    bucket: str = ""
    prefix: str = ""

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """`registry ARGS` over this backend, with a grace period of 0 (what is not in use is garbage)."""
        command = [*registry_command(), *args, "--data-dir", str(self.data_dir)]
        if self.config is not None:
            command += ["--config", str(self.config)]
        environment = {**os.environ, "REGISTRY_GC_GRACE": "0"}
        return subprocess.run(command, capture_output=True, text=True, timeout=120, env=environment, check=False)

    def partial_write_seen(self, at_least: int) -> bool:
        """Whether the server stored part of a write it has not finished: on disk a file outside blobs/ of
        `at_least` bytes, on S3 a multipart upload with a part."""
        if self.s3 is None:
            storage = self.data_dir / "storage"
            sizes = []
            for path in files_under(storage):
                with contextlib.suppress(FileNotFoundError):
                    if path.relative_to(storage).parts[0] != "blobs":
                        sizes.append(path.stat().st_size)
            return any(size >= at_least for size in sizes)
        return self._multipart_with_parts(self.prefix)

    def blob_being_placed(self, digest: str) -> bool:
        """Whether the final PUT has started to store the blob itself: on disk its file is in place (its
        index row may not be yet), on S3 a multipart upload of it has a part."""
        if self.s3 is None:
            return self.blob_stored(digest)
        return self._multipart_with_parts(self.prefix + blob_key(digest))

    def blob_stored(self, digest: str) -> bool:
        """Whether bytes are stored under the blob's key (known to the index or not)."""
        if self.s3 is None:
            return (self.data_dir / "storage" / blob_key(digest)).exists()
        found = self.s3.list_objects_v2(Bucket=self.bucket, Prefix=self.prefix + blob_key(digest))
        return bool(found.get("Contents"))

    def _multipart_with_parts(self, prefix: str) -> bool:
        uploads = self.s3.list_multipart_uploads(Bucket=self.bucket, Prefix=prefix).get("Uploads", [])
        for upload in uploads:
            with contextlib.suppress(self.s3.exceptions.NoSuchUpload):
                parts = self.s3.list_parts(Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"])
                if parts.get("Parts"):
                    return True
        return False


@pytest.fixture(params=BACKENDS)
def crash_backend(request, tmp_path: Path) -> Iterator[tuple[RegistryServer, Backend]]:
    """A registry process on disk and SQLite, or on SeaweedFS and PostgreSQL, to kill and restart."""
    data_dir = tmp_path / "data"
    backend = Backend(request.param, data_dir)
    if request.param == "s3+postgresql":
        seaweed, postgres = request.getfixturevalue("seaweed"), request.getfixturevalue("postgres")
        settings = s3_and_postgres(tmp_path, seaweed, postgres)
        s3 = settings.storage.s3
        backend.config = tmp_path / "config.yaml"
        backend.config.write_text(config_yaml(settings))
        backend.s3, backend.bucket, backend.prefix = seaweed.client(), s3.bucket, s3.prefix
    server = RegistryServer(data_dir, tmp_path / "registry.log", config=backend.config)
    server.start()
    yield server, backend
    server.stop()


def kill_mid_request(
    server: RegistryServer,
    send: Callable[[Iterator[bytes]], httpx.Response],
    data: bytes,
    written: Callable[[], bool],
    unsent: int = UNSENT,
) -> None:
    """Send `data` as a streamed body through `send`, stop `unsent` bytes short of its end, kill -9 the
    server once `written()`, and start it again."""
    reached, killed = threading.Event(), threading.Event()

    def body() -> Iterator[bytes]:
        end = len(data) - unsent
        for offset in range(0, end, MIB):
            yield data[offset : min(end, offset + MIB)]
        reached.set()
        killed.wait(WAIT_S)
        raise BodyAbandoned

    with ThreadPoolExecutor(1) as pool:
        sent = pool.submit(send, body())
        assert reached.wait(WAIT_S), "the body was never sent"
        wait_until(written, WAIT_S, "the server has stored part of the body")
        server.kill9()
        killed.set()
        with pytest.raises((httpx.TransportError, BodyAbandoned)):
            sent.result(WAIT_S)
    server.restart()


def start_upload(client: httpx.Client, repository: str) -> str:
    started = client.post(f"/v2/{repository}/blobs/uploads/")
    assert started.status_code == 202, started.text
    return started.headers["Location"]


def upload_size(client: httpx.Client, location: str) -> int | None:
    """The size of an upload after a restart, or None when the registry forgot it (BLOB_UPLOAD_UNKNOWN)."""
    status = client.get(location)
    if status.status_code == 404:
        assert status.json()["errors"][0]["code"] == "BLOB_UPLOAD_UNKNOWN", status.text
        return None
    assert status.status_code == 204, status.text
    end = int(status.headers["Range"].split("-")[1])
    return 0 if end == 0 else end + 1  # chunks here are MiBs: "0-0" is an empty upload


def blob_present(client: httpx.Client, backend: Backend, repository: str, data: bytes) -> bool:
    """Whether the blob is there, asserting that it is then whole (and, absent, that no blob file on disk
    holds part of it: bytes under its key, unknown to the index, are whole)."""
    blob = client.get(f"/v2/{repository}/blobs/{sha256(data)}")
    if blob.status_code == 200:
        assert blob.content == data, "a blob is visible with other bytes than its digest's"
        return True
    assert blob.status_code == 404, blob.text
    if backend.s3 is None:
        name = sha256(data).removeprefix("sha256:")
        for path in files_under(backend.data_dir / "storage" / "blobs"):
            assert path.name != name or path.read_bytes() == data, "part of a blob is stored under its key"
    return False


def patch_all(client: httpx.Client, location: str, data: bytes) -> str:
    patched = client.patch(location, content=data, headers={"Content-Type": "application/octet-stream"})
    assert patched.status_code == 202, patched.text
    return patched.headers["Location"]


def put_digest(client: httpx.Client, location: str, data: bytes, body: bytes | None = None) -> None:
    finished = client.put(location, params={"digest": sha256(data)}, content=body)
    assert finished.status_code == 201, finished.text


def crash_mid_patch(server: RegistryServer, backend: Backend, image: Image, repository: str) -> str:
    with server.client() as client:
        location = start_upload(client, repository)
        send = partial(client.patch, location, headers={"Content-Length": str(len(image.layer))})
        kill_mid_request(
            server, lambda body: send(content=body), image.layer, lambda: backend.partial_write_seen(8 * MIB)
        )
    with server.client() as client:
        assert not blob_present(client, backend, repository, image.layer)
        size = upload_size(client, location)
        if size is None:
            push_blob_chunked(client, repository, image.layer)
            return "upload unknown after restart; pushed again"
        assert size == 0, "a chunk cut by the kill was kept as if committed"
        put_digest(client, patch_all(client, location, image.layer), image.layer)
        return "upload kept at 0 bytes; the same upload restarted from 0 and finished"


def crash_between_patch_and_put(server: RegistryServer, backend: Backend, image: Image, repository: str) -> str:
    with server.client() as client:
        location = patch_all(client, start_upload(client, repository), image.layer)
    server.kill9()
    server.restart()
    with server.client() as client:
        assert not blob_present(client, backend, repository, image.layer)
        assert upload_size(client, location) == len(image.layer), "the acknowledged PATCH was lost"
        put_digest(client, location, image.layer)
    return "upload resumed: the PUT finished it"


def crash_mid_final_put(server: RegistryServer, backend: Backend, image: Image, repository: str) -> str:
    first, rest = image.layer[:FIRST_CHUNK], image.layer[FIRST_CHUNK:]
    with server.client() as client:
        location = patch_all(client, start_upload(client, repository), first)
        url = f"{location}{'&' if '?' in location else '?'}digest={sha256(image.layer)}"
        send = partial(client.put, url, headers={"Content-Length": str(len(rest))})
        kill_mid_request(
            server, lambda body: send(content=body), rest, lambda: backend.partial_write_seen(FIRST_CHUNK + 8 * MIB)
        )
    with server.client() as client:
        assert not blob_present(client, backend, repository, image.layer)
        assert upload_size(client, location) == len(first), "the acknowledged PATCH was lost"
        put_digest(client, location, image.layer, body=rest)
    return "upload resumed from its acknowledged chunk: the PUT with the rest finished it"


def crash_while_the_final_put_joins(server: RegistryServer, backend: Backend, image: Image, repository: str) -> str:
    """The PUT without a body that makes the chunks the blob: on S3 chunks under 5 MiB are joined through
    the registry (a multipart upload of the blob, seen and cut); on disk the chunks are one file, fsync'ed
    and renamed, so the kill lands before, inside or after the few ms between the rename and the index row."""
    with server.client() as client:
        location = start_upload(client, repository)
        step = MIB // 4  # small chunks: on S3 a join long enough to be cut
        for offset in range(0, len(image.layer), step):
            location = patch_all(client, location, image.layer[offset : offset + step])
        with ThreadPoolExecutor(1) as pool:
            put = pool.submit(client.put, location, params={"digest": sha256(image.layer)})
            deadline = time.monotonic() + WAIT_S
            while not (put.done() or backend.blob_being_placed(sha256(image.layer))):  # polled tight: ms count
                assert time.monotonic() < deadline, "the PUT never ran"
                time.sleep(0.001)
            server.kill9()
            with contextlib.suppress(httpx.TransportError):
                put.result(WAIT_S)
    server.restart()
    with server.client() as client:
        present = blob_present(client, backend, repository, image.layer)
        size = upload_size(client, location)
        if size is None:
            assert present, "the upload is gone but its blob is not there"
            return "killed after the PUT had finished"
        assert size == len(image.layer), "an acknowledged PATCH was lost"
        outcome = "killed mid-join (no blob)"
        if not present and backend.blob_stored(sha256(image.layer)):
            # Killed between placing the bytes and writing their row: an orphan, kept for the retried PUT.
            assert "1 orphans" in check_output(backend)
            collected = json.loads(backend.cli("gc", "--full", "--json").stdout)
            assert collected["orphans_removed"] == 0, "the collector took the bytes the upload was finishing into"
            outcome = "killed between placing the blob and its index row (an orphan the collector kept)"
        put_digest(client, location, image.layer)
        return f"{outcome}; the PUT retried finished the upload"


def read_meanwhile() -> bool:
    """Half a second for the server to read what was sent and wait for the rest."""
    time.sleep(0.5)
    return True


def crash_mid_manifest_put(server: RegistryServer, backend: Backend, image: Image, repository: str) -> str:
    with server.client() as client:
        push_blob_monolithic(client, repository, image.config)
        push_blob_chunked(client, repository, image.layer)
        headers = {"Content-Type": OCI_MANIFEST, "Content-Length": str(len(image.manifest))}
        send = partial(client.put, f"/v2/{repository}/manifests/v1", headers=headers)
        kill_mid_request(
            server, lambda body: send(content=body), image.manifest, read_meanwhile, len(image.manifest) // 2
        )
    with server.client() as client:
        assert get_manifest(client, repository, "v1").status_code == 404
        assert get_manifest(client, repository, image.digest).status_code == 404
        tags = client.get(f"/v2/{repository}/tags/list")
        assert tags.status_code == 200 and "v1" not in (tags.json()["tags"] or []), tags.text
        assert blob_present(client, backend, repository, image.layer), "an acknowledged blob was lost"
        assert blob_present(client, backend, repository, image.config), "an acknowledged blob was lost"
    return "no manifest, blobs whole; the manifest PUT redone"


def crash_mid_monolithic_post(server: RegistryServer, backend: Backend, image: Image, repository: str) -> str:
    with server.client() as client:
        url = f"/v2/{repository}/blobs/uploads/?digest={sha256(image.layer)}"
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(len(image.layer))}
        send = partial(client.post, url, headers=headers)
        kill_mid_request(
            server, lambda body: send(content=body), image.layer, lambda: backend.partial_write_seen(8 * MIB)
        )
    with server.client() as client:
        assert not blob_present(client, backend, repository, image.layer)
        push_blob_monolithic(client, repository, image.layer)
    return "no blob; the POST redone"


CRASH_STEPS = {
    "mid-PATCH": crash_mid_patch,
    "between-PATCH-and-PUT": crash_between_patch_and_put,
    "mid-final-PUT": crash_mid_final_put,
    "final-PUT-joining": crash_while_the_final_put_joins,
    "mid-manifest-PUT": crash_mid_manifest_put,
    "mid-monolithic-POST": crash_mid_monolithic_post,
}


def check_output(backend: Backend) -> str:
    checked = backend.cli("check")
    assert checked.returncode == 0, f"registry check: {checked.stdout}{checked.stderr}"
    return checked.stdout


@pytest.mark.parametrize("step", list(CRASH_STEPS))
def test_kill_at_each_step_of_a_push_then_redo_and_collect_leaves_nothing_behind(
    crash_backend: tuple[RegistryServer, Backend], step: str
) -> None:
    """kill -9 at `step`: after the restart the blob is whole or absent, the manifest complete or absent,
    the upload resumes or is unknown; the push then completes, and once the collector ran, `registry
    check` finds no problem, no orphan and no leftover of the killed write."""
    server, backend = crash_backend
    repository, image = "crash/matrix", make_image(LAYER_MIB * MIB)
    outcome = CRASH_STEPS[step](server, backend, image, repository)
    with server.client() as client:
        if not blob_present(client, backend, repository, image.config):
            push_blob_monolithic(client, repository, image.config)
        assert blob_present(client, backend, repository, image.layer)
        pushed = put_manifest(client, repository, "v1", image.manifest)
        assert pushed.status_code == 201, pushed.text
        fetched = get_manifest(client, repository, "v1")
        assert fetched.status_code == 200 and fetched.content == image.manifest
    collected = backend.cli("gc", "--full", "--json")
    assert collected.returncode == 0, f"registry gc: {collected.stdout}{collected.stderr}"
    report = json.loads(collected.stdout)
    after = check_output(backend)
    assert "problem:" not in after and "index and storage agree" in after, after
    assert after.splitlines()[-1].endswith("; 0 orphans, 0 leftovers of abandoned writes"), after
    with server.client() as client:
        fetched = get_manifest(client, repository, "v1")
        assert fetched.status_code == 200 and fetched.content == image.manifest
        assert blob_present(client, backend, repository, image.layer)
    print(
        f"\n[crash matrix] {backend.name} / {step}: {outcome}; then the collector removed "
        f"{report['orphans_removed']} orphans, {report['leftovers_removed']} leftovers, {report['blobs_removed']} blobs"
    )


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
