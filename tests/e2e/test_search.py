"""`docker search HOST/term` with the real Docker engine, in each auth mode: the repositories the caller may
pull whose name or description holds the term (ignoring case), `--limit`, `--filter` and `--no-trunc`.

What the engine sends (20.10): `GET /v1/_ping`, then `GET /v1/search?q=TERM&n=LIMIT` with no credentials
when signed out, Basic after a `docker login` to an htpasswd registry, and in token mode a Bearer token for
`registry:catalog:search` got with the refresh token `docker login` stored. Filters are applied by the daemon.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.clients import Docker, Skopeo
from tests.support.content import digest_of
from tests.support.layouts import build_oci_layout
from tests.support.server import RegistryServer, start_server
from tests.support.users import USERS, auth_config, htpasswd_bytes

pytestmark = pytest.mark.e2e

DESCRIPTION = "org.opencontainers.image.description"
WEB_ABOUT = "Frontend Web server of the shop, with a description longer than a table shows"
NOTES_ABOUT = "Quarterly LEDGER figures"
WEB, ALICE_APP, BOB_APP, NOTES = "public/search-web", "alice/search-private", "bob/search-secret", "alice/notes"
# repository -> its description: WEB from its image's LABEL, NOTES from its manifest's annotation
ABOUT = {WEB: WEB_ABOUT, ALICE_APP: "", BOB_APP: "", NOTES: NOTES_ABOUT}
TABLE_WIDTH = 45  # the docker CLI shows a longer description as its first 44 characters and "…"


def password(user: str) -> str:
    return f"{user}-pw"  # as tests.support.users sets them


@dataclass
class Searched:
    """A registry holding the repositories of ABOUT, and a docker client config folder per caller: each
    user's signed in (in mode none too, where signing in changes nothing), None's signed out."""

    server: RegistryServer
    configs: dict[str | None, Path]

    @property
    def secured(self) -> bool:
        return self.server.mode != "none"


def annotate(layout: Path, annotations: dict[str, str]) -> None:
    """Give the manifest of the one image of OCI layout `layout` `annotations` (a new manifest blob)."""
    index = json.loads((layout / "index.json").read_text())
    entry = index["manifests"][0]
    blobs = layout / "blobs" / "sha256"
    manifest = json.loads((blobs / entry["digest"].removeprefix("sha256:")).read_bytes())
    data = json.dumps({**manifest, "annotations": annotations}).encode()
    (blobs / digest_of(data).removeprefix("sha256:")).write_bytes(data)
    entry.update(digest=digest_of(data), size=len(data))
    (layout / "index.json").write_text(json.dumps(index))


@pytest.fixture(scope="module")
def images(docker: Docker, base_image: str) -> dict[str, str]:
    """Local images to push: WEB's with the description LABEL, the others the plain base image."""
    web = docker.track(f"registry-e2e/search-web:{uuid.uuid4().hex[:12]}")
    dockerfile = f"FROM {base_image}\nLABEL {DESCRIPTION}={json.dumps(WEB_ABOUT)}\n"
    docker.run("build", "-q", "-t", web, "-", input=dockerfile)
    return {WEB: web, ALICE_APP: base_image, BOB_APP: base_image}


@pytest.fixture(scope="module")
def notes_layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An OCI layout of one image whose manifest carries NOTES' description as an annotation."""
    layout = tmp_path_factory.mktemp("notes") / "layout"
    build_oci_layout(layout, "1")
    annotate(layout, {DESCRIPTION: NOTES_ABOUT})
    return layout


@pytest.fixture(scope="module")
def htpasswd(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The htpasswd file of USERS, hashed once for every registry of the module (bcrypt is slow)."""
    return htpasswd_bytes(tmp_path_factory.mktemp("users"))


@pytest.fixture(scope="module", params=["none", "htpasswd", "token"])
def searched(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    docker: Docker,
    skopeo: Skopeo,
    images: dict[str, str],
    notes_layout: Path,
    htpasswd: bytes,
) -> Iterator[Searched]:
    """A registry in auth mode `request.param` with USERS, the repositories of ABOUT pushed by root."""
    mode = request.param
    directory = tmp_path_factory.mktemp(f"search-{mode}")
    (directory / "config.yaml").write_text(auth_config(mode))
    (directory / "data").mkdir()
    (directory / "data" / "htpasswd").write_bytes(htpasswd)
    server = start_server(directory, directory / "config.yaml")
    server.mode = mode
    configs: dict[str | None, Path] = {}
    for user in (None, *USERS):
        configs[user] = directory / f"docker-config-{user or 'anonymous'}"
        configs[user].mkdir()
        if user is not None:
            docker.run("login", server.host, "-u", user, "--password-stdin", input=password(user), config=configs[user])
    for repository, local in images.items():
        reference = docker.track(f"{server.host}/{repository}:1")
        docker.run("tag", local, reference)
        docker.run("push", reference, config=configs["root"])
    creds = ["--dest-creds", f"root:{password('root')}"] if mode != "none" else []
    skopeo.run("copy", "--dest-tls-verify=false", *creds, f"oci:{notes_layout}:1", f"docker://{server.host}/{NOTES}:1")
    yield Searched(server, configs)
    server.stop()


def search(
    docker: Docker, searched: Searched, term: str, *flags: str, user: str | None = None, config: Path | None = None
) -> dict[str, str]:
    """`docker search [flags] HOST/term` as `user` (None: signed out), or with client config folder `config`:
    repository -> description, in the order shown."""
    result = docker.run(
        "search",
        "--no-trunc",
        "--format",
        "{{json .}}",
        *flags,
        f"{searched.server.host}/{term}",
        config=config or searched.configs[user],
    )
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    return {row["Name"]: row["Description"] for row in rows}


def password_only(directory: Path, server: RegistryServer, user: str, secret: str) -> Path:
    """A docker client config folder holding `user`'s password for `server` and no identity token, as
    clients other than `docker login` to a token-mode registry write it."""
    directory.mkdir()
    auth = base64.b64encode(f"{user}:{secret}".encode()).decode()
    (directory / "config.json").write_text(json.dumps({"auths": {server.host: {"auth": auth}}}))
    return directory


def visible(searched: Searched, user: str | None) -> set[str]:
    """The repositories of ABOUT `user` may pull under tests.support.users.RULES (everyone everything in mode none)."""
    if not searched.secured or user == "root":
        return set(ABOUT)
    return {WEB} | {name for name in ABOUT if user is not None and name.startswith(f"{user}/")}


def test_each_caller_finds_only_what_they_may_pull(docker: Docker, searched: Searched) -> None:
    if searched.server.mode == "token":  # so the engine takes the Bearer path: a token for registry:catalog:search
        stored = json.loads((searched.configs["alice"] / "config.json").read_text())
        assert "identitytoken" in stored["auths"][searched.server.host]
    for user in (None, "alice", "bob", "root"):
        found = search(docker, searched, "search", user=user)
        assert set(found) == visible(searched, user) & {WEB, ALICE_APP, BOB_APP}, (user, found)
    assert (BOB_APP in search(docker, searched, "bob", user="alice")) != searched.secured


def test_name_matches_any_substring_ignoring_case(docker: Docker, searched: Searched) -> None:
    assert set(search(docker, searched, "SeArCh-W")) == {WEB}
    assert set(search(docker, searched, "CH-PRIV", user="alice")) == {ALICE_APP}
    assert set(search(docker, searched, "ic/search", user="bob")) == {WEB}
    assert search(docker, searched, "no-such-repository", user="root") == {}


def test_description_from_the_label_and_from_the_annotation(docker: Docker, searched: Searched) -> None:
    assert search(docker, searched, "frontend WEB") == {WEB: WEB_ABOUT}
    assert search(docker, searched, "ledger", user="alice") == {NOTES: NOTES_ABOUT}
    assert search(docker, searched, "ledger", user="bob") == ({} if searched.secured else {NOTES: NOTES_ABOUT})
    assert search(docker, searched, "", user="root") == ABOUT  # an empty term: every repository


def test_limit_and_filters(docker: Docker, searched: Searched) -> None:
    assert list(search(docker, searched, "search", "--limit", "2", user="root")) == [ALICE_APP, BOB_APP]
    assert list(search(docker, searched, "search", "--limit", "5", user="root")) == [ALICE_APP, BOB_APP, WEB]
    assert search(docker, searched, "search", "--filter", "is-official=true", user="root") == {}
    assert search(docker, searched, "search", "--filter", "stars=1", user="root") == {}
    assert set(search(docker, searched, "search", "--filter", "stars=0", user="root")) == {WEB, ALICE_APP, BOB_APP}


def test_the_table_cuts_long_descriptions_unless_no_trunc(docker: Docker, searched: Searched) -> None:
    term = f"{searched.server.host}/search-web"
    table = docker.run("search", term, config=searched.configs[None]).stdout
    assert WEB in table and WEB_ABOUT[: TABLE_WIDTH - 1] + "…" in table and WEB_ABOUT not in table, table
    full = docker.run("search", "--no-trunc", term, config=searched.configs[None]).stdout
    assert WEB_ABOUT in full, full


def test_a_stored_password_without_identity_token_is_checked(
    docker: Docker, searched: Searched, tmp_path: Path
) -> None:
    """The engine then sends Basic credentials, in token mode too: right ones search as their user, wrong ones
    fail the search (the engine shows the 401) rather than searching signed out."""
    right = password_only(tmp_path / "right", searched.server, "alice", password("alice"))
    found = search(docker, searched, "search", config=right)
    assert set(found) == visible(searched, "alice") & {WEB, ALICE_APP, BOB_APP}, found
    wrong = password_only(tmp_path / "wrong", searched.server, "alice", "not-her-password")
    result = docker.run("search", f"{searched.server.host}/search", config=wrong, check=False)
    if searched.secured:
        assert result.returncode != 0 and "401" in result.stderr, (result.stdout, result.stderr)
    else:
        assert WEB in result.stdout and BOB_APP in result.stdout, result.stdout
