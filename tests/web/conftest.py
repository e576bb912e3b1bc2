"""Browser fixtures: Debian's Chromium driven by Playwright, one fresh context per test.

Playwright's own browser download cannot run offline, so the system Chromium is launched
directly. The async API shares pytest-asyncio's session loop with the rest of the suite (the
sync API would hold its own loop open in the main thread and break every async test after it).

Screenshots are written under each test's tmp_path; the last one is attached to the report: a junit `<property name="screenshot">` and a `[[ATTACHMENT|path]]` line in the test's
captured output (shown by `-rP`, and in junit `system-out` with `-o junit_logging=system-out`,
where Jenkins and GitLab pick it up as an attachment).
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

INTEGRATION_DIR = Path(__file__).resolve().parents[1] / "integration"
CHROMIUM = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="session")
async def chromium():
    if not Path(CHROMIUM).exists():
        message = f"Chromium not found at {CHROMIUM} (apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        await browser.close()


class Screenshots:
    """Numbered full-page screenshots of one test, the last attached to the report."""

    def __init__(self, page, directory: Path, node) -> None:
        self.page = page
        self.directory = directory
        self.node = node
        self.paths: list[Path] = []

    async def take(self, name: str) -> Path:
        path = self.directory / f"{len(self.paths) + 1:02d}-{name}.png"
        await self.page.screenshot(path=str(path), full_page=True)
        self.paths.append(path)
        return path

    def attach_last(self) -> None:
        if self.paths:
            # user_properties rather than record_property: valid under junit_family xunit2 too.
            self.node.user_properties.append(("screenshot", str(self.paths[-1])))


@pytest.fixture
async def page(chromium) -> AsyncIterator:
    """A fresh browser context (empty sessionStorage) that fails the test on page errors."""
    context = await chromium.new_context(viewport={"width": 1280, "height": 900},
                                         accept_downloads=True)
    page = await context.new_page()
    page.set_default_timeout(20_000)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(f"uncaught: {exc}"))
    page.on(
        "console",
        lambda msg: errors.append(f"console.error: {msg.text}")
        if msg.type == "error" and "Failed to load resource" not in msg.text
        else None,
    )
    page.js_errors = errors
    yield page
    await context.close()
    assert not errors, f"the page reported errors: {errors}"


@pytest.fixture
def screenshots(page, tmp_path, request) -> Iterator[Screenshots]:
    shots = Screenshots(page, tmp_path / "screenshots", request.node)
    shots.directory.mkdir()
    yield shots
    # Attach even when the test failed: the last screen shows where it stopped.
    shots.attach_last()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when == "teardown":
        shots = [value for name, value in item.user_properties if name == "screenshot"]
        if shots:
            lines = "\n".join(f"[[ATTACHMENT|{path}]]" for path in shots)
            report.sections.append(("Captured stdout screenshots", lines))


@pytest.fixture(scope="session")
def service_url(request) -> Iterator[str]:
    """Base URL of the running service under test.

    SERVICE_URL, when set, points the tests at an existing deployment. Otherwise the suite's
    shared Ray Serve instance (`serve_instance`) when that fixture is registered for the whole
    suite, else a Ray Serve instance of this session's own, started the same way.
    """
    if os.environ.get("SERVICE_URL"):
        yield os.environ["SERVICE_URL"].rstrip("/")
        return
    try:
        instance = request.getfixturevalue("serve_instance")
    except pytest.FixtureLookupError:
        instance = None
    if instance is not None:
        yield instance.url
        return
    sys.path.insert(0, str(INTEGRATION_DIR))
    from serve_stack import start_serve

    with start_serve(database="sqlite") as own_instance:
        yield own_instance.url


@pytest.fixture(scope="session")
def ui_url(service_url) -> str:
    return f"{service_url}/ui/"
