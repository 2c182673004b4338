"""What the browser tests share: where Chromium is, its arguments, the browser fixture, watched pages.

Importing this module never skips anything (playwright is imported only when a browser is started), so a module
that holds browser tests beside others keeps the others running where playwright or Chromium is absent: only the
tests that use a browser (the ``browser_context`` fixture, or :func:`playwright_api`) are skipped, with the reason.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
NEEDS_BROWSER = [  # the marks of a browser test (or a module of them)
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium: run .ci/install-browser.sh"),
]


def playwright_api() -> ModuleType:
    """playwright.sync_api; the calling test is skipped, with the reason, where the package is absent."""
    return pytest.importorskip("playwright.sync_api", reason="needs the playwright package: run .ci/install-browser.sh",
                              exc_type=ImportError)


def launch(folder: Path, playwright: object, **options: object) -> object:
    """A persistent headless Chromium context on the system's Chromium (never playwright's own download)."""
    return playwright.chromium.launch_persistent_context(str(folder), executable_path=str(CHROMIUM), headless=True,
                                                         args=ARGS, **options)


@pytest.fixture(scope="module")
def browser_context(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A headless Chromium context, offline, for reports opened from files."""
    with playwright_api().sync_playwright() as playwright:
        context = launch(tmp_path_factory.mktemp("chromium-profile"), playwright,
                         viewport={"width": 1400, "height": 900}, offline=True)
        yield context
        context.close()


@pytest.fixture
def artifacts(tmp_path: Path) -> Path:
    """Where screenshots go: $WHEREFROM_ARTIFACTS, else the test's tmp folder (never committed)."""
    folder = Path(os.environ.get("WHEREFROM_ARTIFACTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def watched_page(context, address: str):  # noqa: ANN001, ANN201 - playwright objects
    """The page loaded from ``address`` and the problems it reports: console errors and warnings, uncaught errors,
    dialogs."""
    page = context.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type in ("error", "warning")
            else None)
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on("dialog", lambda dialog: (problems.append(f"dialog: {dialog.message}"), dialog.dismiss()))
    page.goto(address, wait_until="load")
    return page, problems


def open_report(context, path: Path):  # noqa: ANN001, ANN201 - playwright objects
    """The loaded report and the problems it reported."""
    return watched_page(context, path.as_uri())
