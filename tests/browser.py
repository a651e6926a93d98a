"""The dashboard's browser-test machinery: finding the system's Chromium (skipping, or
failing under CI, without it), launching it headless, watching every page's console,
reading the DOM contract's fields (docs: the dashboard contract's `data-testid` and
`data-field` attributes), checking the layout's width, and taking each page's
screenshot: into PROCORCH_SCREENSHOTS if set (`PROCORCH_SCREENSHOTS=docs/screenshots`
refreshes the README's), else into a temporary folder, so a test run leaves the
repository as it was."""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")  # Debian's; no browser is ever downloaded
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOTS = Path(
    os.environ.get("PROCORCH_SCREENSHOTS") or Path(tempfile.gettempdir()) / "procorch-screenshots"
)
WIDTHS = (1280, 390)  # a laptop and a phone (an iPhone 12 to 15's CSS width)
HEIGHTS = {1280: 800, 390: 844}
POLL = 1.0  # seconds between a page's polls, as the contract says


def require_chromium() -> None:
    """Skip the calling test module when the system's Chromium or the `playwright`
    package is missing, with one line; under CI (env CI set) fail instead: CI must
    always run the browser tests."""
    missing = None
    if not os.access(CHROMIUM, os.X_OK):
        missing = f"no Chromium at {CHROMIUM} (Debian: apt-get install chromium)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            missing = "the playwright package is missing (pip install -e '.[test]')"
    if missing is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the dashboard's browser tests: {missing}", pytrace=False)
    pytest.skip(missing, allow_module_level=True)


def new_context(browser: Any) -> Any:
    """A fresh browser context (its own cookies) whose actions give up after 10 s, not
    playwright's 30: every page here answers within a poll or two."""
    context = browser.new_context()
    context.set_default_timeout(10_000)
    return context


def launch(playwright: Any) -> Any:
    """The system's Chromium, headless, without its background traffic."""
    return playwright.chromium.launch(
        executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
    )


class Dashboard:
    """Pages of a browser context that holds the dashboard's session cookie. Every
    console error and uncaught exception of every page it opens is kept in `errors`
    (CSP violations and failed requests are console errors in Chromium)."""

    def __init__(self, context: Any, url: str) -> None:
        self.context = context
        self.url = url
        self.errors: list[str] = []
        self.pages: list[Any] = []
        self.expected: list[str] = []  # console messages a test provokes on purpose

    def expect_refusal(self, status: int) -> None:
        """Let the console's one line for a request refused with `status` pass (Chromium
        logs every 4xx answer): for a test that makes the page ask for what is refused."""
        self.expected.append(f"the server responded with a status of {status} ")

    def watch(self, page: Any) -> Any:
        def console(message: Any) -> None:
            if message.type == "error" and not any(e in message.text for e in self.expected):
                self.errors.append(f"{page.url}: console: {message.text}")

        def page_error(error: Any) -> None:
            self.errors.append(f"{page.url}: uncaught: {error}")

        page.on("console", console)
        page.on("pageerror", page_error)
        return page

    def open(self, route: str = "#/", width: int = 1280) -> Any:
        """A new page at `/ui` + `route` (a hash route such as `#/jobs`), `width` px wide."""
        page = self.watch(self.context.new_page())
        page.set_viewport_size({"width": width, "height": HEIGHTS.get(width, 800)})
        self.pages.append(page)
        page.goto(f"{self.url}/ui{route}")
        return page

    def close(self) -> None:
        for page in self.pages:
            page.close()
        self.pages.clear()


def until(
    page: Any, probe: Callable[[], Any], timeout: float, what: str, interval: float = 0.05
) -> Any:
    """Poll `probe()` until it is truthy and return that; fail after `timeout` seconds
    naming `what` and the last value seen. Waits through the page, so its console
    events keep being delivered meanwhile."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what} within {timeout}s (last seen: {value!r})", pytrace=False)
        page.wait_for_timeout(interval * 1000)


# The visible elements matching a selector: a single-page app may keep other views in
# the DOM, hidden; what the user sees is what counts.
_VISIBLE = "(e) => !!(e.offsetWidth || e.offsetHeight || e.getClientRects().length)"


def replica_fields(page: Any, service: str, replica: int) -> dict[str, str] | None:
    """The text of each `data-field` cell of the visible `replica` element of `service`
    and `replica` (None when there is none), read in one go so the cells agree."""
    return page.evaluate(
        f"""([service, replica]) => {{
            const visible = {_VISIBLE};
            const scope = [...document.querySelectorAll(
                `[data-testid="replica"][data-service="${{service}}"][data-replica="${{replica}}"]`
            )].find(visible);
            if (!scope) return null;
            const fields = {{}};
            for (const cell of scope.querySelectorAll("[data-field]"))
                fields[cell.dataset.field] = cell.textContent.trim();
            return fields;
        }}""",
        [service, replica],
    )


def visible_attributes(page: Any, testid: str, attribute: str) -> list[str]:
    """The `attribute` of every visible element with data-testid `testid`, in order."""
    return page.evaluate(
        f"""([testid, attribute]) => [...document.querySelectorAll(`[data-testid="${{testid}}"]`)]
            .filter({_VISIBLE}).map((e) => e.getAttribute(attribute))""",
        [testid, attribute],
    )


def visible_texts(page: Any, testid: str) -> list[str]:
    """The text of every visible element with data-testid `testid`, in order."""
    return page.evaluate(
        f"""(testid) => [...document.querySelectorAll(`[data-testid="${{testid}}"]`)]
            .filter({_VISIBLE}).map((e) => e.textContent.trim())""",
        testid,
    )


def job_counts(page: Any) -> dict[str, int]:
    """The jobs page's `job-count` elements: {status: the count in its text}."""
    counts = page.evaluate(
        f"""() => Object.fromEntries([...document.querySelectorAll('[data-testid="job-count"]')]
            .filter({_VISIBLE}).map((e) => [e.dataset.status, e.textContent]))"""
    )
    return {status: digits(text) for status, text in counts.items()}


def digits(text: str | None) -> int:
    """The number written in `text` (thousands separators allowed); -1 when there is none."""
    number = "".join(c for c in text or "" if c.isdigit())
    return int(number) if number else -1


def overflow(page: Any) -> str | None:
    """Why the page scrolls sideways (its width against the window's), or None."""
    scroll, inner = page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
    return None if scroll <= inner else f"the page is {scroll}px wide in a {inner}px window"


def screenshot(page: Any, name: str, width: int) -> Path:
    """The whole page as NAME-WIDTH.png in SCREENSHOTS."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}-{width}.png"
    page.screenshot(path=str(path), full_page=True, animations="disabled")
    return path


def browser_session() -> Iterator[Any]:
    """Playwright and the launched Chromium (for a module-scoped fixture); both are
    closed, the browser's processes with them, when the generator is closed."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = launch(playwright)
        try:
            yield browser
        finally:
            browser.close()
