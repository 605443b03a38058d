"""The console's hand-over and 渠道活码 views (issue 15, items 4 and 5) on a fake WeCom corp:
an operator hands a guide's customers over and sees the platform's answer per customer, the recent
transfers and each code's adds; guides, strangers and forged requests are refused. SQLite and PostgreSQL.
"""
from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from bot.app import build_web_app
from bot.channel_codes import create_channel_code
from bot.staff_accounts import StaffAccounts
from tests.fakes import FakeQyapi
from tests.harness import Harness
from tests.lifecycle_scripts import scripts_with
from tests.test_transfers import JIE, MEI, STAFF, added_xml
from tests.test_wecom import AES_KEY, CORP, TOKEN, WeComWorld

OPERATOR = {"id": "aqing", "name": "阿青", "role": "operator"}
PASSWORDS = {"aqing": "aqing-password", "xiaomei": "xiaomei-password"}


class Console(WeComWorld):
    """The fake corp with siyu's console in front: log in, then call /api as the page does."""

    async def log_in(self, staff: str = "aqing") -> dict[str, str]:
        response = await self.client.post("/api/session", json={"staff": staff, "password": PASSWORDS[staff]})
        assert response.status == 200, await response.text()
        return {"X-CSRF-Token": (await response.json())["csrf_token"]}

    async def call(self, method: str, path: str, status: int, **kwargs: Any) -> Any:
        response = await self.client.request(method, path, **kwargs)
        assert response.status == status, await response.text()
        return await response.json()


async def siyu_on_corp(db_url: str, start: datetime, scripts: Path) -> tuple[Harness, FakeQyapi]:
    """siyu on a fake WeCom corp with three guides and an operator (web chat off); close both."""
    fake = FakeQyapi()
    api = await fake.start()
    wecom = {"corp_id": CORP, "token": TOKEN, "encoding_aes_key": AES_KEY, "secret": fake.secret,
             "agent_id": "1000002", "api_base": api, "timestamp_window": 300}
    h = await Harness.create(db_url, start, scripts, staff=(*STAFF, OPERATOR), default_guide="xiaomei",
                             adapters={"webchat": {"enabled": False}, "wecom": wecom})
    return h, fake


@contextlib.asynccontextmanager
async def console_on_corp(db_url: str, start: datetime, scripts: Path) -> AsyncIterator[Console]:
    h, fake = await siyu_on_corp(db_url, start, scripts)
    accounts = StaffAccounts(h.app.db, h.clock, known=PASSWORDS)
    for staff, password in PASSWORDS.items():
        await accounts.set_password(staff, password)
    try:
        async with TestClient(TestServer(build_web_app(h.app), host="127.0.0.1")) as client:
            yield Console(h, fake, client)
    finally:
        await h.close()
        await fake.close()


@pytest.fixture
async def console(db_url: str, start: datetime, tmp_path: Path) -> AsyncIterator[Console]:
    async with console_on_corp(db_url, start, scripts_with(tmp_path, "handover")) as console:
        yield console


async def add_customers(console: Console, *customers: str, state: str = "") -> None:
    for customer in customers:
        assert await console.post(added_xml(customer, MEI, state=state)) == 200
    await console.h.app.tick()


async def test_an_operator_hands_customers_over_and_watches_the_platform_settle(console: Console) -> None:
    h, fake = console.h, console.fake
    await add_customers(console, "wmLIN0001", "wmWANG002", "wmZHAO003")
    h.clock.advance(timedelta(hours=2))
    headers = await console.log_in()
    assert await console.call("GET", "/api/guides", 200) == [  # the page's pickers; the operator is no guide
        {"id": "xiaomei", "name": "小美", "customers": 3}, {"id": "ajie", "name": "阿杰", "customers": 0},
        {"id": "xiaolan", "name": "小兰", "customers": 0}]

    report = await console.call("POST", "/api/customers/transfer", 200, headers=headers,
                                json={"from": "xiaomei", "to": "ajie", "customers": ["wmLIN0001", "客户G002"]})
    (call,) = fake.called("/externalcontact/transfer_customer")
    assert call == {"handover_userid": MEI, "takeover_userid": JIE, "external_userid": ["wmLIN0001", "wmWANG002"]}
    assert (report["from_guide"], report["to_guide"], report["departed"]) == ("xiaomei", "ajie", False)
    assert [(r["name"], r["channel"], r["status"]) for r in report["rows"]] == [
        ("客户0001", "wecom", "waiting"), ("客户G002", "wecom", "waiting")]
    assert report["counts"] == {"accepted": 0, "waiting": 2, "refused": 0, "failed": 0}
    assert report["summary"] == "已接替 0，等待平台确认 2，被拒绝 0，失败 0"

    again = await console.call("POST", "/api/customers/transfer", 200, headers=headers,
                               json={"from": "xiaomei", "to": "ajie", "customers": ["wmLIN0001"]})
    assert [(r["status"], r["detail"]) for r in again["rows"]] == [("failed", "上一次交接还在等待平台确认")]

    fake.settle_handover("wmLIN0001", 1)
    fake.settle_handover("wmWANG002", 3)
    h.clock.advance(timedelta(hours=1))
    await h.app.tick()
    recent = await console.call("GET", "/api/transfers", 200)
    assert [(t["name"], t["from_guide"], t["to_guide"], t["status"], t["detail"]) for t in recent] == [
        ("客户0001", "xiaomei", "ajie", "failed", "上一次交接还在等待平台确认"),
        ("客户G002", "xiaomei", "ajie", "refused", "客户拒绝"),
        ("客户0001", "xiaomei", "ajie", "accepted", ""),
    ]  # newest first
    assert all(datetime.fromisoformat(t["requested_at"]).utcoffset() is not None for t in recent)
    settled = [t for t in recent if t["status"] in ("accepted", "refused")]
    assert all(t["settled_at"] for t in settled)


async def test_a_departed_guides_customers_all_go_through_the_resigned_api(console: Console) -> None:
    await add_customers(console, "wmLIN0001", "wmWANG002")
    report = await console.call("POST", "/api/customers/transfer", 200, headers=await console.log_in(),
                                json={"from": "xiaomei", "to": "xiaolan", "departed": True})
    assert len(console.fake.called("/externalcontact/resigned/transfer_customer")) == 1
    assert report["departed"] is True and len(report["rows"]) == 2


async def test_unknown_guides_and_customers_get_a_chinese_sentence(console: Console) -> None:
    await add_customers(console, "wmLIN0001")
    headers = await console.log_in()
    nobody = await console.call("POST", "/api/customers/transfer", 404, headers=headers,
                                json={"from": "xiaomei", "to": "nobody"})
    assert nobody["error"].startswith("没有工号为「nobody」的导购") and "ajie" in nobody["error"]
    stranger = await console.call("POST", "/api/customers/transfer", 404, headers=headers,
                                  json={"from": "xiaomei", "to": "ajie", "customers": ["王不存在"]})
    assert stranger["error"] == "找不到客户「王不存在」：请填客户编号、平台 ID 或姓名"
    not_theirs = await console.call("POST", "/api/customers/transfer", 400, headers=headers,
                                    json={"from": "ajie", "to": "xiaolan", "customers": ["wmLIN0001"]})
    assert "由 xiaomei 负责，不是 ajie" in not_theirs["error"]
    empty = await console.call("POST", "/api/customers/transfer", 400, headers=headers,
                               json={"from": "ajie", "to": "xiaolan"})
    assert empty["error"] == "ajie 名下没有可以交接的客户"
    same = await console.call("POST", "/api/customers/transfer", 400, headers=headers,
                              json={"from": "ajie", "to": "ajie"})
    assert "同一位导购" in same["error"]
    bad = await console.call("POST", "/api/customers/transfer", 400, headers=headers, json={"from": "ajie"})
    assert "请求格式不对" in bad["error"]
    assert console.fake.called("/externalcontact/transfer_customer") == []  # nothing reached the platform


async def test_guides_strangers_and_forged_requests_are_refused(console: Console) -> None:
    await add_customers(console, "wmLIN0001")
    body = {"from": "xiaomei", "to": "ajie"}
    for method, path in (("POST", "/api/customers/transfer"), ("GET", "/api/transfers"),
                         ("GET", "/api/channel-codes"), ("GET", "/api/guides")):
        assert "请先登录" in (await console.call(method, path, 401, json=body))["error"]
    guide = await console.log_in("xiaomei")
    for method, path in (("POST", "/api/customers/transfer"), ("GET", "/api/transfers"),
                         ("GET", "/api/channel-codes"), ("GET", "/api/guides")):
        refused = await console.call(method, path, 403, json=body, headers=guide)
        assert refused["error"] == "这是运营人员的功能，导购账号不能使用"
    console.client.session.cookie_jar.clear()
    await console.log_in()
    forged = await console.call("POST", "/api/customers/transfer", 403, json=body)  # the cookie, but no token
    assert "CSRF" in forged["error"]
    assert console.fake.called("/externalcontact/transfer_customer") == []


async def test_a_bearer_token_needs_no_csrf_token(console: Console) -> None:
    await add_customers(console, "wmLIN0001")
    token = await StaffAccounts(console.h.app.db, console.h.clock, known=PASSWORDS).create_token("aqing")
    report = await console.call("POST", "/api/customers/transfer", 200, json={"from": "xiaomei", "to": "ajie"},
                                headers={"Authorization": f"Bearer {token}"})
    assert [r["status"] for r in report["rows"]] == ["waiting"]


async def test_channel_codes_show_their_adds_replies_and_purchases(console: Console) -> None:
    h, fake = console.h, console.fake
    code = await create_channel_code(h.app, "门店A扫码", ["xiaomei", "ajie"], ["门店A"])
    assert await console.call("GET", "/api/channel-codes", 200, headers=await console.log_in()) == [{
        "name": "门店A扫码", "channel": "wecom", "state": code.state, "guides": ["xiaomei", "ajie"], "tags": ["门店A"],
        "link": "https://wework.qpic.cn/wwpic/cfg0001/0", "adds": 0, "replies": 0, "purchases": 0}]
    for customer in ("wmSCAN0001", "wmSCAN0002"):
        assert await console.post(added_xml(customer, fake.scan("cfg0001"), state=code.state)) == 200
    await h.app.tick()
    (row,) = await console.call("GET", "/api/channel-codes", 200)
    assert (row["adds"], row["replies"], row["purchases"]) == (2, 0, 0)
