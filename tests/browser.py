"""A real headless browser for the console's tests: Debian's chromium driven by Playwright (never a
downloaded browser, never `playwright install`), against `siyu serve` on 127.0.0.1.

The server runs in the test's own event loop (aiohttp's TestServer around `build_web_app`), and so does
Playwright's async API: one loop, no threads, and the test reads the database between clicks.
Without chromium or playwright the tests skip saying which is missing; under CI=true they fail.
"""
from __future__ import annotations

import asyncio
import importlib.util
import os
import shutil
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from aiohttp.test_utils import TestServer

from bot.app import build_web_app
from bot.staff_accounts import StaffAccounts
from tests.harness import CHANNEL, SCRIPTS, Harness

if TYPE_CHECKING:
    from playwright.async_api import Browser, BrowserContext, Page

try:
    from playwright.async_api import expect
except ImportError:  # each test's require_browser() says so: a skip, or a failure under CI
    expect = None  # type: ignore[assignment]

CHROMIUM = Path(os.environ.get("SIYU_CHROMIUM", "/usr/bin/chromium"))
SHOTS = Path(os.environ.get("SIYU_CONSOLE_SHOTS", "/tmp/console-shots"))
TIMEOUT_MS = 15_000  # one page action or expectation; generous for two shared CPU cores
PASSWORDS = {"xiaomei": "guide password 1", "aqing": "operator password 1"}
STAFF = (
    {"id": "xiaomei", "name": "小美", "role": "guide", "identities": {CHANNEL: "guide-xiaomei", "webchat": "xiaomei"}},
    {"id": "aqing", "name": "阿青", "role": "operator", "identities": {}},
)


def require_browser() -> None:
    """Skip (fail under CI) unless Playwright and Debian's chromium are both installed."""
    missing = []
    if importlib.util.find_spec("playwright") is None:
        missing.append("the playwright package (make test installs it with '.[test]')")
    if not CHROMIUM.exists():
        missing.append(f"chromium at {CHROMIUM} (apt-get install chromium; .ci/run does)")
    if missing:
        message = "console browser tests need " + " and ".join(missing)
        if os.environ.get("CI"):
            pytest.fail(f"{message} — CI must run them")
        pytest.skip(message)


@dataclass
class Site:
    """`siyu serve` on a test database with its own copy of the test scripts, and a browser for it."""

    harness: Harness
    server: TestServer
    browser: Browser
    scripts: Path

    def url(self, path: str) -> str:
        return str(self.server.make_url(path))

    async def context(self, at: datetime | None = None) -> BrowserContext:
        """A fresh browser profile in Shanghai, in Chinese; its clock shows `at` (the virtual now)."""
        context = await self.browser.new_context(locale="zh-CN", timezone_id="Asia/Shanghai",
                                                 viewport={"width": 1440, "height": 900})
        context.set_default_timeout(TIMEOUT_MS)
        if at is not None:
            await context.clock.set_fixed_time(at)  # Date.now() is the server's virtual now; timers still run
        return context

    async def console(self, staff: str, at: datetime | None = None) -> Page:
        """A logged-in console page for `staff`, as a person would get there: the login form."""
        page = await (await self.context(at)).new_page()
        await page.goto(self.url("/console"))
        await page.fill("#login-staff", staff)
        await page.fill("#login-password", PASSWORDS[staff])
        await page.click("#login-submit")
        await page.wait_for_selector("#shell:not([hidden])")
        return page


async def until(condition: Callable[[], bool], what: str, seconds: float = 15.0) -> None:
    """Wait for something the serve loop does beside the test (it may be the one delivering a reply)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"still not true after {seconds:g}s: {what}")
        await asyncio.sleep(0.05)


async def shoot(page: Page, name: str) -> None:
    """Keep a screenshot of what the test saw (for people reviewing the pages, not for asserting)."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=False)


@asynccontextmanager
async def running_site(db_url: str, start: datetime, tmp_path: Path, **overrides: Any) -> AsyncIterator[Site]:
    """The app with the console and web chat on a TestServer, its serve loop running, and chromium."""
    require_browser()
    from playwright.async_api import async_playwright

    scripts = tmp_path / "scripts"
    shutil.copytree(SCRIPTS, scripts)  # teaching rewrites faq.yaml: never the shared fixture
    h = await Harness.create(db_url, start, scripts, staff=STAFF, **overrides)
    accounts = StaffAccounts(h.app.db, h.clock, known=set(PASSWORDS))
    for staff, password in PASSWORDS.items():
        await accounts.set_password(staff, password)
    loop_task = asyncio.create_task(h.app.run_forever())
    server = TestServer(build_web_app(h.app), host="127.0.0.1")
    await server.start_server()
    try:
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=str(CHROMIUM))
            try:
                yield Site(h, server, browser, scripts)
            finally:
                await browser.close()
    finally:
        await server.close()
        h.app.request_stop()  # as SIGTERM does: the pass in progress finishes
        await asyncio.wait_for(loop_task, timeout=60)
        await h.close()
