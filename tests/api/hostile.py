"""The hostile-request matrix's shared parts: cases, a seeded registry, raw requests, stored-state checks.

A case is one request a client should never send (or may send by mistake) and the answer it must get.
Requests go straight to the ASGI app, not through httpx, so that paths reach the router exactly as a
server would hand them over (httpx would resolve `..` and refuse control characters). Each case is
checked three ways: the status is the expected one and never 5xx; an error answer (other than to
`HEAD`) is an OCI error body with the expected code; and nothing stored changed, in the index's
tables or the driver's objects.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import pytest
from starlette.applications import Starlette

from registry.config import Settings
from tests.support.app import running_app
from tests.support.backends import backend_settings
from tests.support.content import (
    OCI_INDEX,
    Image,
    digest_of,
    index_of,
    make_image,
    push_blob,
    push_image,
    push_referrer,
)

ANY_CODE = "*"  # an error body is required, whatever its code
# The metadata content tables: what a request may change. (Login counters and collector leases are not content.)
CONTENT_TABLES = (
    "repositories",
    "blobs",
    "repository_blobs",
    "manifests",
    "manifest_references",
    "tags",
    "uploads",
    "upload_chunks",
)
REPO, OTHER = "hostile/app", "hostile/other"


@dataclass(frozen=True)
class Expect:
    """An acceptable answer: `status`, and for an error answer with a body, the OCI `code`."""

    status: int
    code: str | None = None


Value = str | bytes | Callable[["Seeded"], str | bytes]


@dataclass(frozen=True)
class Case:
    """One hostile request and its acceptable answers.

    `target` is the path and query as a client writes them on the request line (percent-escapes
    included); placeholders such as `<repo>` or `<layer>` are filled from the seeded registry.
    `headers` and `body` may be callables of the seeded registry. With `cut`, the client goes away
    halfway through the body.
    """

    id: str
    method: str
    target: str
    expect: tuple[Expect, ...]
    headers: tuple[tuple[str, Value], ...] = ()
    body: Value = b""
    cut: bool = False

    def param(self) -> Any:
        return pytest.param(self, id=self.id)


def case(
    id: str,
    method: str,
    target: str,
    status: int,
    code: str | None = None,
    *,
    headers: Iterable[tuple[str, Value]] = (),
    body: Value = b"",
    also: Iterable[Expect] = (),
    cut: bool = False,
) -> Case:
    """A case whose answer must be `status` with error `code` (or one of `also`)."""
    return Case(id, method, target, (Expect(status, code), *also), tuple(headers), body, cut)


def params(cases: Sequence[Case] | Sequence[Scenario]) -> list[Any]:
    """The cases as pytest params; ids must be unique."""
    ids = [c.id for c in cases]
    duplicates = {i for i in ids if ids.count(i) > 1}
    assert not duplicates, f"duplicate case ids: {sorted(duplicates)}"
    return [c.param() for c in cases]


@dataclass
class Seeded:
    """A registry with content to attack: in REPO an image tagged `v1`, an index tagged `multi`, a
    referrer of the image, and an open upload; in OTHER an open upload of its own."""

    app: Starlette
    settings: Settings
    image: Image
    index: bytes
    referrer: str
    upload: str
    other_upload: str
    extra: dict[str, str] = field(default_factory=dict)
    # What was stored after the last case; the next case starts from it (only cases change the state).
    stored: dict[str, list[str]] | None = None

    @property
    def layer(self) -> bytes:
        return self.image.layers[0]

    def placeholders(self) -> dict[str, str]:
        return {
            "<repo>": REPO,
            "<other>": OTHER,
            "<image>": self.image.digest,
            "<index>": digest_of(self.index),
            "<config>": digest_of(self.image.config),
            "<layer>": digest_of(self.layer),
            "<layer_size>": str(len(self.layer)),
            "<referrer>": self.referrer,
            "<upload>": self.upload,
            "<other_upload>": self.other_upload,
            **self.extra,
        }

    def fill(self, text: str) -> str:
        for key, value in self.placeholders().items():
            text = text.replace(key, value)
        return text


def module_settings(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, backend: str) -> Settings:
    """Settings of a registry for one test module, on `backend` (disk+sqlite or s3+postgresql)."""
    return backend_settings(backend, tmp_path_factory.mktemp("hostile"), request)


@asynccontextmanager
async def seeded_registry(settings: Settings, prepare: Callable[[Any], Any] | None = None) -> AsyncIterator[Seeded]:
    """A running registry built from `settings`, seeded as `Seeded` says. `prepare(client)` may set
    the client up first (credentials, for instance)."""
    async with running_app(settings) as (app, client):
        if prepare is not None:
            await prepare(client)
        image = make_image(layers=1)
        await push_image(client, REPO, image, "v1")
        index = index_of(image)
        r = await client.put(f"/v2/{REPO}/manifests/multi", content=index, headers={"Content-Type": OCI_INDEX})
        assert r.status_code == 201, r.text
        referrer = await push_referrer(client, REPO, image.manifest, "application/vnd.example.sbom")
        other_blob = await push_blob(client, OTHER, os.urandom(32))
        uploads = []
        for repository in (REPO, OTHER):
            r = await client.post(f"/v2/{repository}/blobs/uploads/")
            assert r.status_code == 202, r.text
            uploads.append(r.headers["Docker-Upload-UUID"])
        yield Seeded(app, settings, image, index, referrer, uploads[0], uploads[1], {"<other_blob>": other_blob})


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    raised: str | None  # an exception that escaped the app

    def describe(self) -> str:
        text = self.body[:300].decode("utf-8", "replace")
        return f"{self.status} {text!r}" + (f" (raised {self.raised})" if self.raised else "")


def _bytes(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode("latin-1", "strict")


async def send(
    app: Starlette,
    method: str,
    target: str,
    headers: Sequence[tuple[str, str | bytes]] = (),
    body: bytes = b"",
    cut: bool = False,
) -> Answer:
    """Send one request to `app` as an HTTP server would hand it over: `target` is the request line's
    path and query (percent-decoded into `path` as servers do), `headers` go as given (a Host is added
    unless one is given, and a Content-Length unless one is given), `body` in one piece, or with `cut`
    its first half and then the client's disconnection."""
    raw_path, _, query = target.partition("?")
    raw = [(name.lower().encode("latin-1"), _bytes(value)) for name, value in headers]
    names = {name for name, _ in raw}
    if b"host" not in names:
        raw.insert(0, (b"host", b"registry.test"))
    if b"content-length" not in names and b"transfer-encoding" not in names and (body or method in ("PUT", "POST")):
        raw.append((b"content-length", str(len(body)).encode()))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": unquote(raw_path),
        "raw_path": raw_path.encode("utf-8"),
        "query_string": query.encode("utf-8"),
        "root_path": "",
        "headers": raw,
        "client": ("127.0.0.1", 40000),
        "server": ("registry.test", 80),
        "state": {},
    }
    done = asyncio.Event()
    sent_body = False
    status, response_headers, chunks = 0, {}, []

    async def receive() -> dict:
        nonlocal sent_body
        if not sent_body:
            sent_body = True
            if cut:
                return {"type": "http.request", "body": body[: len(body) // 2], "more_body": True}
            return {"type": "http.request", "body": body, "more_body": False}
        if not cut:
            await done.wait()
        return {"type": "http.disconnect"}

    async def send_message(message: dict) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
            for name, value in message.get("headers", []):
                response_headers[name.decode("latin-1").lower()] = value.decode("latin-1")
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                done.set()

    raised = None
    try:
        await app(scope, receive, send_message)
    except Exception as e:  # the app's own 500 handler re-raises after answering
        raised = f"{type(e).__name__}: {str(e)[:200]}"
    finally:
        done.set()
    return Answer(status, response_headers, b"".join(chunks), raised)


def problems(case: Case, method: str, answer: Answer) -> list[str]:
    """What is wrong with `answer` to `case` (empty: nothing)."""
    found = []
    if answer.raised is not None:
        found.append(f"an exception escaped the app: {answer.raised}")
    if answer.status >= 500 or answer.status == 0:
        found.append(f"answered {answer.status}")
    matching = [e for e in case.expect if e.status == answer.status]
    if not matching:
        wanted = " or ".join(f"{e.status} {e.code or ''}".strip() for e in case.expect)
        found.append(f"expected {wanted}, got {answer.describe()}")
        return found
    if case.target.startswith("/v2") and answer.headers.get("docker-distribution-api-version") != "registry/2.0":
        found.append("no Docker-Distribution-API-Version: registry/2.0 header")
    if answer.status == 401 and "www-authenticate" not in answer.headers:
        found.append("a 401 without a WWW-Authenticate challenge")
    codes = {e.code for e in matching}
    if method == "HEAD" or answer.status < 400 or codes == {None}:
        return found
    try:
        errors = json.loads(answer.body)["errors"]
        code, message = errors[0]["code"], errors[0]["message"]
        assert isinstance(code, str) and code and isinstance(message, str)
    except Exception:
        found.append(f"not an OCI error body: {answer.describe()}")
        return found
    if not answer.headers.get("content-type", "").startswith("application/json"):
        found.append(f"an error body of type {answer.headers.get('content-type')!r}, not application/json")
    if ANY_CODE not in codes and code not in codes:
        found.append(f"expected code {' or '.join(sorted(c for c in codes if c))}, got {answer.describe()}")
    return found


Snapshot = dict[str, list[str]]


async def snapshot(app: Starlette) -> Snapshot:
    """Every row of the metadata content tables and every stored object (key and size)."""
    registry = app.state.registry

    def read(conn) -> Snapshot:
        return {
            t: sorted(repr(tuple(r)) for r in conn.execute(f"SELECT * FROM {t}").fetchall()) for t in CONTENT_TABLES
        }

    tables = await registry.metadata.db.read(read)
    tables["objects"] = sorted([f"{e.key} {e.size}" async for e in registry.driver.list("")])
    return tables


def changes(before: Snapshot, after: Snapshot) -> list[str]:
    """What differs between two snapshots, one line per added or removed row or object."""
    found = []
    for name in before:
        old, new = set(before[name]), set(after[name])
        found += [f"{name}: added {row[:200]}" for row in sorted(new - old)]
        found += [f"{name}: removed {row[:200]}" for row in sorted(old - new)]
    return found


def resolve(seeded: Seeded, value: Value) -> str | bytes:
    return value(seeded) if callable(value) else value


async def check(seeded: Seeded, case: Case) -> None:
    """Send `case` to the seeded registry and assert its answer and that nothing stored changed."""
    before = seeded.stored or await snapshot(seeded.app)
    seeded.stored = None
    answer = await attempt(seeded, case)
    after = seeded.stored = await snapshot(seeded.app)
    found = problems(case, case.method, answer) + [f"stored state changed: {c}" for c in changes(before, after)]
    assert not found, f"{case.method} {seeded.fill(case.target)[:200]}:\n  " + "\n  ".join(found)


async def attempt(seeded: Seeded, case: Case) -> Answer:
    """Send `case` to the seeded registry; its answer."""
    headers = []
    for name, value in case.headers:
        resolved = resolve(seeded, value)
        headers.append((name, seeded.fill(resolved) if isinstance(resolved, str) else resolved))
    body = resolve(seeded, case.body)
    body = seeded.fill(body) if isinstance(body, str) else body
    return await send(seeded.app, case.method, seeded.fill(case.target), headers, _bytes_utf8(body), case.cut)


def _bytes_utf8(value: str | bytes) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else value


@dataclass(frozen=True)
class Step:
    """One request of a sequence. A `hostile` step is the point of the sequence: nothing stored may
    change from just before the first hostile step to just after the last one."""

    method: str
    target: str
    expect: tuple[Expect, ...]
    headers: tuple[tuple[str, Value], ...] = ()
    body: Value = b""
    hostile: bool = False
    cut: bool = False


def step(
    method: str,
    target: str,
    status: int,
    code: str | None = None,
    *,
    hostile: bool = False,
    headers: Iterable[tuple[str, Value]] = (),
    body: Value = b"",
    also: Iterable[Expect] = (),
    cut: bool = False,
) -> Step:
    return Step(method, target, (Expect(status, code), *also), tuple(headers), body, hostile, cut)


@dataclass(frozen=True)
class Scenario:
    """Requests in order; `<new>` in a target stands for the upload the last `POST` opened. With
    `undone`, the hostile steps must also undo the setup steps (an upload refused is cancelled):
    stored state afterwards is the state before the sequence began."""

    id: str
    steps: tuple[Step, ...]
    undone: bool = False

    def param(self) -> Any:
        return pytest.param(self, id=self.id)


async def check_scenario(seeded: Seeded, scenario: Scenario) -> None:
    """Run `scenario`; assert every answer, and that the hostile steps changed nothing stored."""
    found: list[str] = []
    start = seeded.stored or await snapshot(seeded.app)
    seeded.stored = None  # the steps after the last hostile one change it
    before = after = None
    new_upload = ""
    last_hostile = max(i for i, s in enumerate(scenario.steps) if s.hostile)
    for i, current in enumerate(scenario.steps):
        if current.hostile and before is None:
            before = start if scenario.undone else await snapshot(seeded.app)
        as_case = Case(
            f"{scenario.id}[{i}]",
            current.method,
            current.target.replace("<new>", new_upload),
            current.expect,
            current.headers,
            current.body,
            current.cut,
        )
        answer = await attempt(seeded, as_case)
        found += [
            f"step {i} {current.method} {as_case.target[:150]}: {p}" for p in problems(as_case, current.method, answer)
        ]
        if current.method == "POST" and "docker-upload-uuid" in answer.headers:
            new_upload = answer.headers["docker-upload-uuid"]
        if i == last_hostile:
            after = await snapshot(seeded.app)
    assert before is not None and after is not None
    found += [f"stored state changed: {c}" for c in changes(before, after)]
    assert not found, f"{scenario.id}:\n  " + "\n  ".join(found)


USERS = {"alice": "alice-pw", "root": "root-pw"}  # root is an admin; alice owns alice/**


def with_auth(settings: Settings, mode: str) -> Settings:
    """`settings` in auth `mode` (htpasswd or token): USERS, admins in group `admins`, anonymous pull on
    `public/**`, the matrix's peer a trusted proxy; login limits high enough that the matrix's failed
    logins never reach them."""
    import bcrypt

    from registry.config import RuleSettings

    settings.auth.mode = mode
    settings.auth.rules = [
        RuleSettings(["anonymous"], "public/**", ["pull"]),
        RuleSettings(["*"], "{user}/**", ["*"]),
        RuleSettings(["group:admins"], "**", ["*"]),
    ]
    settings.auth.groups = {"admins": ["root"]}
    settings.http.trusted_proxies = ["127.0.0.0/8"]  # the matrix's requests come from 127.0.0.1
    for limit in ("login_attempts", "login_attempts_per_user", "login_attempts_per_address"):
        if hasattr(settings.auth, limit):
            setattr(settings.auth, limit, 100_000)
    os.makedirs(settings.data_dir, exist_ok=True)
    # Hashed at bcrypt's lowest cost: the matrix checks hundreds of passwords, and what it tests is
    # the handling of the credentials, not the hash.
    with open(settings.htpasswd_path, "wb") as f:
        for user, password in USERS.items():
            f.write(user.encode() + b":" + bcrypt.hashpw(password.encode(), bcrypt.gensalt(4)) + b"\n")
    return settings


def basic(user: str, password: str) -> str:
    """An HTTP Basic `Authorization` value."""
    import base64

    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    """One event loop per hostile module, so that its module-scoped registry serves every case."""
    return "asyncio"


def seeded_fixture(backend: str = "disk+sqlite") -> Any:
    """A module-scoped fixture: a registry on `backend`, seeded once for every case of the module."""

    @pytest.fixture(scope="module")
    async def seeded(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Seeded]:
        async with seeded_registry(module_settings(request, tmp_path_factory, backend)) as registry:
            yield registry

    return seeded
