"""客户交接 in a real headless browser: an operator opens the page, hands one of 小美's WeCom customers to
阿杰, and sees the platform's answer, the transfer in the recent list and the channel code's adds.

The screenshot is kept at /tmp/console-shots/lifecycle.png.
"""
from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from bot.app import build_web_app
from bot.channel_codes import create_channel_code
from bot.staff_accounts import StaffAccounts
from tests.browser import CHROMIUM, PASSWORDS, Site, expect, require_browser, shoot
from tests.lifecycle_scripts import scripts_with
from tests.test_console_lifecycle import siyu_on_corp
from tests.test_transfers import MEI, added_xml
from tests.test_wecom import WeComWorld



@asynccontextmanager
async def site_on_corp(db_url: str, start: datetime, scripts: Path) -> AsyncIterator[tuple[Site, WeComWorld]]:
    """The console in chromium, in front of siyu on a fake WeCom corp with three guides and an operator."""
    require_browser()
    from playwright.async_api import async_playwright

    h, fake = await siyu_on_corp(db_url, start, scripts)
    await StaffAccounts(h.app.db, h.clock, known={"aqing"}).set_password("aqing", PASSWORDS["aqing"])
    try:
        async with TestClient(TestServer(build_web_app(h.app), host="127.0.0.1")) as client:
            async with async_playwright() as playwright:
                browser = await playwright.chromium.launch(executable_path=str(CHROMIUM))
                try:
                    yield Site(h, client.server, browser, scripts), WeComWorld(h, fake, client)
                finally:
                    await browser.close()
    finally:
        await h.close()
        await fake.close()


@pytest.fixture
async def corp_site(db_url: str, start: datetime, tmp_path: Path) -> AsyncIterator[tuple[Site, WeComWorld]]:
    async with site_on_corp(db_url, start, scripts_with(tmp_path, "handover")) as running:
        yield running


async def test_an_operator_hands_a_customer_over_from_the_console(corp_site: tuple[Site, WeComWorld]) -> None:
    site, world = corp_site
    h, fake = world.h, world.fake
    code = await create_channel_code(h.app, "门店A扫码", ["xiaomei", "ajie"], ["门店A"])
    for customer in ("wmLIN0001", "wmWANG002"):
        assert await world.post(added_xml(customer, MEI, state=code.state)) == 200
    await h.app.tick()

    page = await site.console("aqing", at=h.clock.now())
    await page.click("[data-nav=lifecycle]")
    await expect(page.locator(".page h2")).to_have_text("客户交接")
    await expect(page.locator("#channel-codes tbody tr")).to_have_count(1)
    await expect(page.locator("#channel-codes tbody td").nth(4)).to_have_text("2")  # 添加
    await expect(page.locator("#transfers")).to_contain_text("还没有交接记录")

    await page.select_option("#transfer-from", "xiaomei")
    await page.select_option("#transfer-to", "ajie")
    await page.fill("#transfer-customers", "wmLIN0001")
    await page.click("#transfer-run")

    await expect(page.locator("#transfer-report h3")).to_have_text("在职继承：xiaomei → ajie，共 1 位客户")
    await expect(page.locator("#transfer-report tbody tr")).to_have_text(["客户0001（#1）企业微信等待平台确认"])
    await expect(page.locator("#transfers tbody tr")).to_have_count(1)
    await expect(page.locator("#transfers tbody tr td").nth(5)).to_have_text("等待平台确认")
    await expect(page.locator("#transfers tbody tr td").first).to_have_text("03-02 10:15")  # Shanghai time
    assert [b["external_userid"] for b in fake.called("/externalcontact/transfer_customer")] == [["wmLIN0001"]]
    await shoot(page, "lifecycle")
