"""The web UI (registry/ui/) in a real browser: Debian's chromium driven by Playwright (tests/support/browser.py),
against `registry serve` processes.

Screenshots of the main pages go to $REGISTRY_TEST_ARTIFACTS, or `ui-artifacts` in the pytest session's temp
folder; the folder and each file are printed at the end of the run, and a failing test leaves a screenshot of
its page there too (`failed-<test>.png`).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, Playwright, expect, sync_playwright

from tests.support.browser import TIMEOUT_MS, Screenshots, artifacts_folder, chromium_path, launch
from tests.support.server import RegistryServer
from tests.support.services import require_service

pytestmark = pytest.mark.e2e


# ---------------------------------------------------------------------------------------------- the browser


@pytest.fixture(scope="session")
def playwright() -> Iterator[Playwright]:
    """Playwright's driver, once per session."""
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="session")
def browser(playwright: Playwright) -> Iterator[Browser]:
    """Debian's chromium, headless, once per session: skips the tests without it, fails them under CI=true."""
    executable = chromium_path()
    require_service(executable is not None, "chromium (Debian's `chromium` package)")
    assert executable is not None
    browser = launch(playwright, executable)
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


@pytest.fixture
def page(request: pytest.FixtureRequest, browser: Browser, screenshots: Screenshots) -> Iterator[Page]:
    """A fresh page in a browser context of its own (no cookies from other tests), at a desktop size; when the
    test fails, its page is saved as `failed-<test>.png`."""
    failed_before = request.session.testsfailed
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    yield page
    if request.session.testsfailed > failed_before:  # the call's report is logged before this teardown
        screenshots.take(page, f"failed-{request.node.name}")
    context.close()


# ---------------------------------------------------------------------------------------------- the flows


def test_the_browser_reaches_the_registry(
    page: Page, module_registry: RegistryServer, screenshots: Screenshots
) -> None:
    response = page.goto(f"{module_registry.url}/v2/")
    assert response is not None and response.status == 200
    assert response.headers["docker-distribution-api-version"] == "registry/2.0"
    expect(page.locator("body")).to_have_text("{}")
    assert screenshots.take(page, "v2").stat().st_size > 0
