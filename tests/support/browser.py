"""A real browser for the web UI's tests: Debian's `chromium` driven by Playwright, and the folder its
screenshots go to.

Playwright's own browser download is never used (it is not reachable from the machines the tests run on):
`launch` hands Playwright the chromium binary of the system through `executable_path`, headless, and without
chromium's sandbox when running as root (chromium refuses to start sandboxed as root).

    with sync_playwright() as playwright:
        browser = launch(playwright)
        page = browser.new_page()
        page.goto(f"{server.url}/ui/")
        shots = Screenshots(folder)
        shots.take(page, "repositories")        # <folder>/repositories.png
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from playwright.sync_api import Browser, Page, Playwright

CHROMIUM_ENV = "REGISTRY_TEST_CHROMIUM"  # a chromium binary other than the one on PATH
ARTIFACTS_ENV = "REGISTRY_TEST_ARTIFACTS"  # where screenshots go instead of the pytest session's temp folder
DEBIAN_CHROMIUM = Path("/usr/bin/chromium")
TIMEOUT_MS = 10_000  # how long a page action or assertion waits before failing the test


def chromium_path() -> Path | None:
    """The chromium binary to drive: $REGISTRY_TEST_CHROMIUM when set (and only it), else `chromium` on PATH,
    else Debian's /usr/bin/chromium; None when there is none (scripts/test-deps.sh installs Debian's `chromium`)."""
    named = os.environ.get(CHROMIUM_ENV)
    candidates = [named] if named else [shutil.which("chromium"), str(DEBIAN_CHROMIUM)]
    for candidate in candidates:
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return Path(candidate)
    return None


def launch(playwright: Playwright, executable: Path) -> Browser:
    """Chromium at `executable`, headless (with `--no-sandbox` when running as root)."""
    args = ["--no-sandbox"] if os.geteuid() == 0 else []
    return playwright.chromium.launch(executable_path=str(executable), headless=True, args=args)


def artifacts_folder(session_temp: Path) -> Path:
    """Where this run's screenshots go: $REGISTRY_TEST_ARTIFACTS if set (CI can keep that folder), else
    `ui-artifacts` in the pytest session's temp folder (pytest keeps the last three sessions')."""
    folder = Path(os.environ.get(ARTIFACTS_ENV) or session_temp / "ui-artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


class Screenshots:
    """Screenshots saved as PNG files in `folder`, named by the caller; `taken` lists them in order."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.taken: list[Path] = []

    def take(self, page: Page, name: str, full_page: bool = True) -> Path:
        """Save `page` as it shows now as `<folder>/<name>.png` (the whole page unless `full_page` is False)."""
        path = self.folder / (re.sub(r"[^A-Za-z0-9._-]+", "-", name) + ".png")
        page.screenshot(path=str(path), full_page=full_page)
        self.taken.append(path)
        return path


def horizontal_overflow(page: Page, selector: str = "html") -> int:
    """How many CSS pixels the element at `selector` (the whole document by default) is wider than what it
    shows: more than 0 means the user has to scroll sideways to read it."""
    overflow: int = page.eval_on_selector(selector, "e => e.scrollWidth - e.clientWidth")
    return overflow
