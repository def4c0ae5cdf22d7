"""The web UI (registry/ui/) in a real browser: Debian's chromium driven by Playwright (tests/support/browser.py),
against `registry serve` processes.

Screenshots of the main pages go to $REGISTRY_TEST_ARTIFACTS, or `ui-artifacts` in the pytest session's temp
folder; the folder and each file are printed at the end of the run, and a failing test leaves a screenshot of
its page there too (`failed-<test>.png`).
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, Playwright, expect, sync_playwright

from tests.support.browser import TIMEOUT_MS, Screenshots, artifacts_folder, chromium_path, horizontal_overflow, launch
from tests.support.clients import Docker
from tests.support.content import DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST, digest_of
from tests.support.server import RegistryServer, start_server
from tests.support.services import require_service
from tests.support.upstreams import (
    ChallengeAuth,
    PlatformImage,
    platform_image,
    push_blob,
    push_index,
    push_platform_image,
    put_manifest,
)
from tests.support.users import auth_config, htpasswd_bytes

pytestmark = pytest.mark.e2e

DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 375, "height": 740}


# ---------------------------------------------------------------------------------------------- the browser


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    """Playwright's driver, once for this module. Not longer: its sync API keeps an event loop running on
    the main thread while it lives, and the async tests that follow (anyio) could start none of theirs."""
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    """Debian's chromium, headless, once for this module: skips the tests without it, fails them under CI=true."""
    executable = chromium_path()
    require_service(executable is not None, "chromium (Debian's `chromium` package)")
    assert executable is not None
    browser = launch(playwright, executable)
    expect.set_options(timeout=TIMEOUT_MS)
    yield browser
    browser.close()


@pytest.fixture(scope="session")
def screenshots(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Screenshots]:
    """The run's screenshots; their paths are printed at the end of the session."""
    shots = Screenshots(artifacts_folder(tmp_path_factory.getbasetemp()))
    yield shots
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None or not shots.taken:
        return
    with capture.global_and_fixture_disabled():  # else the lines would go to the captured output
        reporter.write_line(f"\nweb UI screenshots in {shots.folder}:")
        for path in shots.taken:
            reporter.write_line(f"  {path}")


def fresh_page(
    request: pytest.FixtureRequest, browser: Browser, screenshots: Screenshots, **options: Any
) -> Iterator[Page]:
    """A page in a browser context of its own (no cookies from other tests) made with `options`; when the test
    fails, its page is saved as `failed-<test>.png`."""
    failed_before = request.session.testsfailed
    context = browser.new_context(**options)
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    yield page
    if request.session.testsfailed > failed_before:  # the call's report is logged before this teardown
        screenshots.take(page, f"failed-{request.node.name}")
    context.close()


@pytest.fixture
def page(request: pytest.FixtureRequest, browser: Browser, screenshots: Screenshots) -> Iterator[Page]:
    """A fresh page at a desktop size (see fresh_page)."""
    yield from fresh_page(request, browser, screenshots, viewport=DESKTOP)


@pytest.fixture
def phone(request: pytest.FixtureRequest, browser: Browser, screenshots: Screenshots) -> Iterator[Page]:
    """A fresh page at a phone's size (375 x 740 CSS pixels, a touch screen) in the dark color scheme."""
    yield from fresh_page(
        request, browser, screenshots, viewport=PHONE, color_scheme="dark", is_mobile=True, has_touch=True
    )


# ---------------------------------------------------------------------------------------------- the registries

SHOP, MULTI, DOOMED = "public/shop-web", "public/multi", "public/doomed"
ALICE_PRIVATE, BOB_PRIVATE = "alice/private-notes", "bob/secret-plans"
PUBLIC = {SHOP, MULTI, DOOMED}
MANIFEST_TYPES = (DOCKER_MANIFEST, OCI_MANIFEST, OCI_INDEX)
SHOP_ABOUT = "Storefront of the shop"
SIGNATURE = "application/vnd.dev.cosign.artifact.sig.v1+json"
SBOM = "application/spdx+json"
SHOP_DOCKERFILE = f"""FROM {{base}}
ENV APP_MODE=production GREETING="hello world"
WORKDIR /srv/app
RUN echo hello > /srv/app/hello.txt && echo more > /srv/app/more.txt
EXPOSE 8080/tcp 9090/udp
USER 1000:1000
LABEL org.opencontainers.image.title="shop web" com.example.team=payments \\
      org.opencontainers.image.description="{SHOP_ABOUT}"
ENTRYPOINT ["/bin/sh", "-c"]
CMD ["echo serving"]
"""


def password(user: str) -> str:
    return f"{user}-pw"  # as tests.support.users sets them


@dataclass
class Seeded:
    """A registry (in auth mode `server.mode`) holding the repositories of `digests` (repository -> tag ->
    manifest digest), pushed by root, and SHOP's referrers (artifact type -> manifest digest) if any."""

    server: RegistryServer
    digests: dict[str, dict[str, str]]
    referrers: dict[str, str] = field(default_factory=dict)
    docker_config: Path | None = None  # a docker client config folder signed in as root

    def url(self, path: str) -> str:
        return f"{self.server.url}{path}"

    def api(self, user: str = "root") -> httpx.Client:
        """An API client signed in as `user` (Basic in htpasswd mode, the token flow in token mode)."""
        client = self.server.client()
        client.auth = ChallengeAuth(user, password(user))
        return client


@dataclass
class Shop:
    """The image built with every config field docker shows (SHOP_DOCKERFILE): its local reference and what
    `docker inspect` and `docker history` print for it."""

    local: str
    os: str  # docker inspect's .Os
    architecture: str  # docker inspect's .Architecture
    config: dict[str, Any]  # docker inspect's .Config
    layers: list[str]  # docker inspect's .RootFS.Layers (the diff IDs)
    history: list[dict[str, str]]  # docker history --no-trunc, newest first


@pytest.fixture(scope="module")
def shop(docker: Docker, base_image: str, tmp_path_factory: pytest.TempPathFactory) -> Shop:
    """SHOP_DOCKERFILE built on the busybox base image, once for the module."""
    context = tmp_path_factory.mktemp("shop")
    (context / "Dockerfile").write_text(SHOP_DOCKERFILE.format(base=base_image))
    local = docker.track(f"registry-e2e/ui-shop:{uuid.uuid4().hex[:12]}")
    docker.run("build", "--network", "none", "-q", "-t", local, str(context))  # RUN without a network bridge
    inspected = json.loads(docker.run("image", "inspect", local).stdout)[0]
    lines = docker.run("history", "--no-trunc", "--format", "{{json .}}", local).stdout.splitlines()
    return Shop(
        local,
        inspected["Os"],
        inspected["Architecture"],
        inspected["Config"],
        inspected["RootFS"]["Layers"],
        [json.loads(line) for line in lines],
    )


@pytest.fixture(scope="module")
def htpasswd(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The htpasswd file of USERS, hashed once for both registries (bcrypt is slow)."""
    return htpasswd_bytes(tmp_path_factory.mktemp("users"))


def start_registry(directory: Path, mode: str, htpasswd: bytes) -> RegistryServer:
    (directory / "config.yaml").write_text(auth_config(mode))
    (directory / "data").mkdir()
    (directory / "data" / "htpasswd").write_bytes(htpasswd)
    server = start_server(directory, directory / "config.yaml")
    server.mode = mode
    return server


def push_referrer(client: httpx.Client, repository: str, subject: httpx.Response, artifact_type: str) -> str:
    """Push an artifact manifest of `artifact_type` whose subject is the manifest `subject` (a GET's answer)."""
    empty = b"{}"
    push_blob(client, repository, empty)
    body = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": artifact_type,
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": digest_of(empty), "size": 2},
            "layers": [{"mediaType": "application/vnd.oci.empty.v1+json", "digest": digest_of(empty), "size": 2}],
            "subject": {
                "mediaType": subject.headers["content-type"],
                "digest": digest_of(subject.content),
                "size": len(subject.content),
            },
        }
    ).encode()
    return put_manifest(client, repository, digest_of(body), body, OCI_MANIFEST)


def private_image(repository: str) -> PlatformImage:
    return platform_image({"etc/repository": repository.encode()})


def two_platforms() -> list[PlatformImage]:
    return [platform_image({"etc/arch": arch.encode()}, architecture=arch) for arch in ("amd64", "arm64")]


@pytest.fixture(scope="module")
def seeded(
    tmp_path_factory: pytest.TempPathFactory, docker: Docker, base_image: str, shop: Shop, htpasswd: bytes
) -> Iterator[Seeded]:
    """A registry in htpasswd mode holding: SHOP (the docker-built image, with a signature and an SBOM as its
    referrers), MULTI (an index of linux/amd64 and linux/arm64), DOOMED (one image tagged `old` and `keep`),
    and ALICE_PRIVATE and BOB_PRIVATE, which only their owner (and root) may pull."""
    directory = tmp_path_factory.mktemp("ui-htpasswd")
    server = start_registry(directory, "htpasswd", htpasswd)
    config = directory / "docker-config-root"
    config.mkdir()
    docker.run("login", server.host, "-u", "root", "--password-stdin", input=password("root"), config=config)
    digests: dict[str, dict[str, str]] = {}
    for repository, local, tags in ((SHOP, shop.local, ["1.0"]), (DOOMED, base_image, ["old", "keep"])):
        for tag in tags:
            reference = docker.track(f"{server.host}/{repository}:{tag}")
            docker.run("tag", local, reference)
            docker.run("push", reference, config=config)
    seed = Seeded(server, digests, docker_config=config)
    with seed.api() as client:
        for repository, tags in ((SHOP, ["1.0"]), (DOOMED, ["old", "keep"])):
            for tag in tags:
                got = client.get(f"/v2/{repository}/manifests/{tag}", headers={"Accept": DOCKER_MANIFEST})
                digests.setdefault(repository, {})[tag] = digest_of(got.content)
        subject = client.get(f"/v2/{SHOP}/manifests/1.0", headers={"Accept": DOCKER_MANIFEST})
        seed.referrers = {kind: push_referrer(client, SHOP, subject, kind) for kind in (SIGNATURE, SBOM)}
        digests[MULTI] = {"2": push_index(client, MULTI, "2", two_platforms())}
        for repository in (ALICE_PRIVATE, BOB_PRIVATE):
            digests[repository] = {"1": push_platform_image(client, repository, private_image(repository), "1")}
    yield seed
    server.stop()


@pytest.fixture(scope="module")
def token_seeded(tmp_path_factory: pytest.TempPathFactory, htpasswd: bytes) -> Iterator[Seeded]:
    """A registry in token mode holding MULTI and ALICE_PRIVATE, pushed through the token flow."""
    server = start_registry(tmp_path_factory.mktemp("ui-token"), "token", htpasswd)
    seed = Seeded(server, {})
    with seed.api() as client:
        seed.digests[MULTI] = {"2": push_index(client, MULTI, "2", two_platforms())}
        seed.digests[ALICE_PRIVATE] = {
            "1": push_platform_image(client, ALICE_PRIVATE, private_image(ALICE_PRIVATE), "1")
        }
    yield seed
    server.stop()


# ---------------------------------------------------------------------------------------------- page helpers


def sign_in(page: Page, seed: Seeded, user: str) -> None:
    """Sign in as `user` with their password through the sign-in page."""
    page.goto(seed.url("/ui/login"))
    fill_sign_in(page, user, password(user))


def fill_sign_in(page: Page, user: str, secret: str) -> None:
    """Sign in as `user` with `secret` through the form on `page`."""
    page.get_by_label("User", exact=True).fill(user)
    page.get_by_label("Password", exact=True).fill(secret)
    page.get_by_role("button", name="Sign in", exact=True).click()


def listed(page: Page) -> set[str]:
    """The repositories the list on `page` shows."""
    rows = page.locator("#repositories tbody tr[data-repository]")
    return set(rows.evaluate_all("rows => rows.map(row => row.dataset.repository)"))


def texts(page: Page, selector: str) -> list[str]:
    """The text of each element matching `selector`, as in the page's source (not whitespace-collapsed as
    rendered: `docker history` keeps the two spaces after `#(nop)`), without leading or trailing space."""
    return [(text or "").strip() for text in page.locator(selector).all_text_contents()]


def status_of(page: Page, url: str) -> int:
    response = page.goto(url)
    assert response is not None, url
    return response.status


def manifest_of(seed: Seeded, repository: str, reference: str) -> dict[str, Any]:
    with seed.api() as client:
        got = client.get(f"/v2/{repository}/manifests/{reference}", headers={"Accept": ", ".join(MANIFEST_TYPES)})
    assert got.status_code == 200, got.text
    document: dict[str, Any] = got.json()
    return document


def background_luminance(page: Page) -> float:
    """The relative luminance (0 black .. 1 white) of the page body's computed background colour, which must
    be opaque (a transparent one would pass for black)."""
    color = page.evaluate("getComputedStyle(document.body).backgroundColor")
    parts = [float(part) for part in re.findall(r"[\d.]+", color)]
    assert len(parts) == 3 or parts[3] == 1, f"the body's background is not opaque: {color}"
    red, green, blue = (part / 255 for part in parts[:3])
    return 0.2126 * red + 0.7152 * green + 0.0722 * blue


# ---------------------------------------------------------------------------------------------- the flows


def test_anonymous_visitors_see_the_public_repositories_only(
    page: Page, seeded: Seeded, screenshots: Screenshots
) -> None:
    page.goto(seeded.url("/"))
    expect(page).to_have_url(seeded.url("/ui/"))
    expect(page.locator("#nav-user")).to_have_text("anonymous")
    assert listed(page) == PUBLIC
    expect(page.locator("#result-count")).to_have_text("3 repositories")
    shop_row = page.locator(f'#repositories tr[data-repository="{SHOP}"]')
    expect(shop_row.locator(".repository-tags")).to_have_text("1")  # its referrers carry no tag
    expect(shop_row.locator(".description")).to_have_text(SHOP_ABOUT)
    assert int(shop_row.locator(".repository-size").get_attribute("data-bytes") or 0) > 0
    screenshots.take(page, "repositories")
    for private in (ALICE_PRIVATE, BOB_PRIVATE):
        assert status_of(page, seeded.url(f"/ui/repositories/{private}")) == 404
        expect(page.locator("#error-status")).to_have_text("404")
        expect(page.locator("main")).not_to_contain_text(private)
        digest = seeded.digests[private]["1"]
        assert status_of(page, seeded.url(f"/ui/repositories/{private}/manifests/{digest}")) == 404
    page.goto(seeded.url("/ui/storage"))
    shown = set(
        page.locator("#storage tr[data-repository]").evaluate_all("rows => rows.map(r => r.dataset.repository)")
    )
    assert shown == PUBLIC
    screenshots.take(page, "storage")


@pytest.mark.parametrize("mode", ["htpasswd", "token"])
def test_sign_in_and_out(request: pytest.FixtureRequest, page: Page, mode: str, screenshots: Screenshots) -> None:
    seed: Seeded = request.getfixturevalue("seeded" if mode == "htpasswd" else "token_seeded")
    page.goto(seed.url("/ui/"))
    assert ALICE_PRIVATE not in listed(page)
    page.get_by_role("link", name="Sign in").click()
    expect(page).to_have_url(re.compile(r"/ui/login\?next=(/|%2F)ui(/|%2F)$"))  # back to the list afterwards
    fill_sign_in(page, "alice", "not-her-password")
    expect(page.locator("#login-error")).to_have_text("Incorrect username or password.")
    expect(page.locator("#nav-user")).to_have_text("anonymous")
    screenshots.take(page, f"sign-in-failed-{mode}")
    fill_sign_in(page, "alice", password("alice"))
    expect(page.locator("#nav-user")).to_have_text("alice")
    expect(page).to_have_url(seed.url("/ui/"))
    assert ALICE_PRIVATE in listed(page)
    assert status_of(page, seed.url(f"/ui/repositories/{ALICE_PRIVATE}")) == 200
    expect(page.locator('#tags tr[data-tag="1"] .tag-digest a')).to_have_attribute(
        "title", seed.digests[ALICE_PRIVATE]["1"]
    )
    page.get_by_role("button", name="Sign out").click()
    expect(page.locator("#nav-user")).to_have_text("anonymous")
    assert listed(page) == {name for name in seed.digests if name.startswith("public/")}
    assert status_of(page, seed.url(f"/ui/repositories/{ALICE_PRIVATE}")) == 404


def test_another_user_does_not_see_a_private_repository(page: Page, seeded: Seeded) -> None:
    sign_in(page, seeded, "bob")
    expect(page.locator("#nav-user")).to_have_text("bob")
    assert listed(page) == PUBLIC | {BOB_PRIVATE}
    alice_digest = seeded.digests[ALICE_PRIVATE]["1"]
    for path in (
        f"/ui/repositories/{ALICE_PRIVATE}",
        f"/ui/repositories/{ALICE_PRIVATE}/manifests/{alice_digest}",
        f"/ui/delete/{ALICE_PRIVATE}?reference=1",
    ):
        assert status_of(page, seeded.url(path)) == 404, path
    page.goto(seeded.url("/ui/?q=private"))
    expect(page.locator("#no-repositories")).to_be_visible()
    page.goto(seeded.url("/ui/storage"))
    expect(page.locator("#storage")).not_to_contain_text(ALICE_PRIVATE)
    expect(page.locator("#storage")).to_contain_text(BOB_PRIVATE)


def test_search_by_name_and_description(page: Page, seeded: Seeded, screenshots: Screenshots) -> None:
    page.goto(seeded.url("/ui/"))
    search = page.get_by_role("searchbox", name="Search repositories")
    search.fill("MuLtI")
    page.get_by_role("button", name="Search", exact=True).click()
    expect(page).to_have_url(re.compile(r"[?&]q=MuLtI"))
    assert listed(page) == {MULTI}
    expect(page.locator("#result-count")).to_contain_text("1 repository")
    search.fill("storefront")
    search.press("Enter")
    expect(page).to_have_url(re.compile(r"[?&]q=storefront"))
    assert listed(page) == {SHOP}
    screenshots.take(page, "search")
    search.fill("secret")  # BOB_PRIVATE's name: not for anonymous visitors
    search.press("Enter")
    expect(page.locator("#no-repositories")).to_be_visible()
    assert listed(page) == set()


def test_the_search_box_by_keyboard(page: Page, seeded: Seeded) -> None:
    page.goto(seeded.url("/ui/"))
    focused = []
    for _ in range(10):
        page.keyboard.press("Tab")
        focused.append(page.evaluate("document.activeElement.id || document.activeElement.textContent.trim()"))
        if focused[-1] == "search-input":
            break
    assert focused[-1] == "search-input", focused
    page.keyboard.type("shop")
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"[?&]q=shop"))
    assert listed(page) == {SHOP}
    expect(page.get_by_role("searchbox", name="Search repositories")).to_have_value("shop")
    for _ in range(15):  # on through the page to the first result
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.textContent.trim()") == SHOP:
            break
    assert page.evaluate("document.activeElement.textContent.trim()") == SHOP
    page.keyboard.press("Enter")
    expect(page).to_have_url(seeded.url(f"/ui/repositories/{SHOP}"))


def test_the_platforms_of_a_multi_arch_image(page: Page, seeded: Seeded, screenshots: Screenshots) -> None:
    index = manifest_of(seeded, MULTI, "2")
    children = {f"{m['platform']['os']}/{m['platform']['architecture']}": m["digest"] for m in index["manifests"]}
    assert set(children) == {"linux/amd64", "linux/arm64"}
    page.goto(seeded.url(f"/ui/repositories/{MULTI}"))
    row = page.locator('#tags tr[data-tag="2"]')
    assert texts(page, '#tags tr[data-tag="2"] .platform') == sorted(children)
    screenshots.take(page, "repository-multi-arch")
    row.locator(".tag-digest a").click()
    expect(page.locator("#image-digest")).to_have_text(seeded.digests[MULTI]["2"])
    assert texts(page, "#platforms .platform-name") == list(children)
    screenshots.take(page, "image-index")
    page.locator('#platforms tr[data-platform="linux/arm64"] a').click()
    expect(page.locator("#image-digest")).to_have_text(children["linux/arm64"])
    expect(page.locator("#platform")).to_have_text("linux/arm64")


def test_an_image_as_docker_inspect_and_docker_history_show_it(
    page: Page, seeded: Seeded, shop: Shop, screenshots: Screenshots
) -> None:
    page.goto(seeded.url(f"/ui/repositories/{SHOP}"))
    copy = page.locator('#tags tr[data-tag="1.0"] button.copy')
    expect(copy).to_have_attribute("data-copy", f"docker pull {seeded.server.host}/{SHOP}:1.0")
    page.locator('#tags tr[data-tag="1.0"] .tag-digest a').click()
    expect(page.locator("#image-digest")).to_have_text(seeded.digests[SHOP]["1.0"])
    screenshots.take(page, "image")
    config = shop.config
    assert texts(page, "#config-entrypoint li") == config["Entrypoint"]
    assert texts(page, "#config-cmd li") == config["Cmd"]
    assert texts(page, "#config-env li") == config["Env"]
    assert sorted(texts(page, "#config-exposedports code")) == sorted(config["ExposedPorts"])
    expect(page.locator("#config-workingdir")).to_have_text(config["WorkingDir"])
    expect(page.locator("#config-user")).to_have_text(config["User"])
    assert sorted(texts(page, "#config-labels li")) == sorted(f"{k}={v}" for k, v in config["Labels"].items())

    # history: docker history's lines in its order (newest first), the layers' lines with the manifest's sizes
    manifest = manifest_of(seeded, SHOP, "1.0")
    layers = manifest["layers"]
    assert len(layers) == len(shop.layers)  # docker inspect's RootFS.Layers
    lines = page.locator("#history tr.history-line")
    assert texts(page, "#history .created-by") == [line["CreatedBy"] for line in shop.history]
    sized = lines.evaluate_all(
        "rows => rows.map(r => [r.classList.contains('empty'), +r.querySelector('.history-size').dataset.bytes])"
    )
    assert [bytes_ for empty, bytes_ in reversed(sized) if not empty] == [layer["size"] for layer in layers]
    for (empty, bytes_), line in zip(sized, shop.history, strict=True):
        assert not empty or (bytes_ == 0 and line["Size"] == "0B"), line

    assert texts(page, "#layers .layer-type") == [layer["mediaType"] for layer in layers]
    layer_sizes = page.locator("#layers .layer-size").evaluate_all("cells => cells.map(c => +c.dataset.bytes)")
    assert layer_sizes == [layer["size"] for layer in layers]
    titles = page.locator("#layers tr.layer code").evaluate_all("codes => codes.map(c => c.title)")
    assert titles == [layer["digest"] for layer in layers]
    expect(page.locator("#platform")).to_have_text(f"{shop.os}/{shop.architecture}")

    page.locator("#raw-manifest-details summary").click()
    assert json.loads(page.locator("#raw-manifest").inner_text()) == manifest


def test_a_signature_shown_as_a_referrer(page: Page, seeded: Seeded) -> None:
    page.goto(seeded.url(f"/ui/repositories/{SHOP}/manifests/{seeded.digests[SHOP]['1.0']}"))
    types = page.locator("#referrers tr.referrer").evaluate_all("rows => rows.map(r => r.dataset.artifactType)")
    assert sorted(types) == sorted(seeded.referrers)
    page.locator(f'#referrers tr[data-artifact-type="{SIGNATURE}"] a').click()
    expect(page.locator("#image-digest")).to_have_text(seeded.referrers[SIGNATURE])
    expect(page.locator("#artifact-type")).to_have_text(SIGNATURE)
    page.goto(seeded.url(f"/ui/repositories/{DOOMED}/manifests/{seeded.digests[DOOMED]['keep']}"))
    expect(page.locator("#no-referrers")).to_be_visible()


def test_deleting_a_tag_then_docker_pull_of_it_fails(
    page: Page, seeded: Seeded, docker: Docker, screenshots: Screenshots
) -> None:
    page.goto(seeded.url(f"/ui/repositories/{DOOMED}"))
    expect(page.locator('#tags tr[data-tag="old"]')).to_be_visible()
    expect(page.locator("#tags a.delete")).to_have_count(0)  # anonymous visitors may not delete
    sign_in(page, seeded, "root")
    page.goto(seeded.url(f"/ui/repositories/{DOOMED}"))
    page.get_by_role("link", name="Delete tag old").click()
    expect(page.locator("main")).to_contain_text(f"{DOOMED}:old")
    screenshots.take(page, "delete-confirmation")
    with seeded.api() as client:  # nothing is deleted before the confirmation
        assert client.head(f"/v2/{DOOMED}/manifests/old").status_code == 200
        forged = page.request.post(seeded.url(f"/ui/delete/{DOOMED}"), form={"reference": "keep"}, max_redirects=0)
        assert forged.status == 403, forged.status  # no CSRF token: refused
        assert client.head(f"/v2/{DOOMED}/manifests/keep").status_code == 200
        page.get_by_role("button", name="Delete old").click()
        expect(page.locator("#notice")).to_have_text("Deleted old.")
        expect(page.locator('#tags tr[data-tag="old"]')).to_have_count(0)
        expect(page.locator('#tags tr[data-tag="keep"]')).to_have_count(1)
        assert client.head(f"/v2/{DOOMED}/manifests/old").status_code == 404
    # as root: in htpasswd mode the engine sends no request without credentials to a registry that asks for Basic
    pulled = docker.run("pull", f"{seeded.server.host}/{DOOMED}:old", check=False, config=seeded.docker_config)
    assert pulled.returncode != 0 and "not found" in pulled.stderr.lower(), pulled.stderr
    docker.run("pull", f"{seeded.server.host}/{DOOMED}:keep", config=seeded.docker_config)


def test_the_repository_list_on_a_phone_in_the_dark_scheme(
    phone: Page, page: Page, seeded: Seeded, screenshots: Screenshots
) -> None:
    phone.goto(seeded.url("/ui/"))
    assert listed(phone) == PUBLIC
    assert horizontal_overflow(phone) == 0  # no sideways scroll of the page...
    assert horizontal_overflow(phone, ".scroll:has(#repositories)") == 0  # ...nor of the list in it
    assert background_luminance(phone) < 0.1
    screenshots.take(phone, "repositories-phone-dark")
    page.emulate_media(color_scheme="light")
    page.goto(seeded.url("/ui/"))
    assert background_luminance(page) > 0.9


# (page, who signs in first, its path): the pages a phone shows without sideways scrolling
PHONE_PAGES = {
    "tags": ("root", f"/ui/repositories/{SHOP}"),  # root: with the delete column
    "image": (None, f"/ui/repositories/{SHOP}/manifests/{{shop}}"),
    "storage": ("root", "/ui/storage"),
    "delete": ("root", f"/ui/delete/{DOOMED}?reference=keep"),
    "sign-in": (None, "/ui/login"),
}


@pytest.mark.parametrize(
    "view",
    [
        "tags",
        "image",
        "storage",
        "delete",
        "sign-in",
    ],
)
def test_each_page_fits_a_phone(phone: Page, seeded: Seeded, view: str, screenshots: Screenshots) -> None:
    user, path = PHONE_PAGES[view]
    if user is not None:
        sign_in(phone, seeded, user)
        expect(phone.locator("#nav-user")).to_have_text(user)
    assert status_of(phone, seeded.url(path.format(shop=seeded.digests[SHOP]["1.0"]))) == 200
    screenshots.take(phone, f"{view}-phone-dark")
    assert horizontal_overflow(phone) == 0
