"""Hand-over between guides (在职/离职继承) on a fake WeCom: the platform settles each customer, and the
pending touches follow the customer to the new guide, who introduces themself through the touch policy."""
from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from bot.transfers import TransferError, transfer_customers
from storage.models import Contact, Transfer
from tests.harness import Harness
from tests.lifecycle_scripts import scripts_with
from tests.test_wecom import WeComWorld, add_contact_xml, wecom_world

MEI, JIE, LAN = "guide01", "guide02", "guide03"
STAFF = ({"id": "xiaomei", "name": "小美", "identities": {"wecom": MEI}},
         {"id": "ajie", "name": "阿杰", "identities": {"wecom": JIE}},
         {"id": "xiaolan", "name": "小兰", "identities": {"wecom": LAN}})


def added_xml(customer: str, guide: str, state: str = "") -> str:
    return add_contact_xml(customer, welcome=f"W{customer}", state=state, guide=guide)


def corp(db_url: str, start: datetime, scripts: Path, **overrides: Any) -> AbstractAsyncContextManager[WeComWorld]:
    """siyu on a fake WeCom corp with three guides."""
    return wecom_world(db_url, start, scripts, staff=STAFF, default_guide="xiaomei", **overrides)


@pytest.fixture
async def world(db_url: str, start: datetime, tmp_path: Path) -> AsyncIterator[WeComWorld]:
    async with corp(db_url, start, scripts_with(tmp_path, "handover")) as world:
        yield world


def assisted(world: WeComWorld) -> list[str]:
    """Each assisted send as `sender: first line`: what each guide was asked to send, in order."""
    return [f"{b['sender']}: {b['text']['content'].splitlines()[0]}"
            for b in world.fake.called("/externalcontact/add_msg_template")]


async def transfers(world: WeComWorld) -> dict[str, tuple[str, str]]:
    async with world.h.app.db.session() as session:
        rows = (await session.execute(select(Contact.external_id, Transfer.status, Transfer.detail)
                                      .join(Transfer, Transfer.contact_id == Contact.id))).all()
    return {customer: (status, detail) for customer, status, detail in rows}


async def guide_of(world: WeComWorld, customer: str) -> str | None:
    async with world.h.app.db.session() as session:
        return await session.scalar(select(Contact.guide_key).where(Contact.external_id == customer))


async def test_a_serving_transfer_moves_the_customer_and_their_pending_touches(world: WeComWorld) -> None:
    h, fake = world.h, world.fake
    for customer in ("wmLIN0001", "wmWANG002"):
        assert await world.post(added_xml(customer, MEI)) == 200
    await h.app.tick()
    h.clock.advance(timedelta(hours=2))  # d0 12:15

    report = await transfer_customers(h.app, "xiaomei", "ajie")
    (call,) = fake.called("/externalcontact/transfer_customer")
    assert call == {"handover_userid": MEI, "takeover_userid": JIE, "external_userid": ["wmLIN0001", "wmWANG002"]}
    assert [(r.name, r.status) for r in report.rows] == [("客户0001", "waiting"), ("客户G002", "waiting")]
    assert report.lines()[-1] == "已接替 0，等待平台确认 2，被拒绝 0，失败 0"
    await h.app.tick()
    notes = [b["text"]["content"] for b in fake.called("/message/send")]
    assert any(b["touser"] == JIE and b["text"]["content"].startswith("【客户交接】xiaomei 的 2 位客户交给您")
               for b in fake.called("/message/send")), notes

    await h.run_for(timedelta(minutes=30))  # asked once: still waiting, so asked again later, less often
    assert len(fake.called("/externalcontact/transfer_result")) == 1
    assert await guide_of(world, "wmLIN0001") == "xiaomei"  # nothing moves before the platform says so

    fake.settle_handover("wmLIN0001", 1)  # taken over
    fake.settle_handover("wmWANG002", 3)  # the customer refused
    h.clock.advance(timedelta(hours=1))  # d0 13:45: the serve loop asks again (10, 20, 40 … minutes apart)
    await h.app.tick()
    assert len(fake.called("/externalcontact/transfer_result")) == 2
    await h.run_until(h.start + timedelta(days=1, hours=1))

    assert await transfers(world) == {"wmLIN0001": ("accepted", ""), "wmWANG002": ("refused", "客户拒绝")}
    assert (await guide_of(world, "wmLIN0001"), await guide_of(world, "wmWANG002")) == ("ajie", "xiaomei")
    assert assisted(world) == [
        f"{JIE}: 交接：客户0001您好，我是阿杰，之后由我为您服务",  # the introduction, through the policy
        f"{JIE}: 第1天关怀：客户0001，加上您的第一天",  # the pending touch went with the customer …
        f"{MEI}: 第1天关怀：客户G002，加上您的第一天",  # … and the one who refused stayed
    ]
    refused = [b["text"]["content"] for b in fake.called("/message/send") if "未能交给" in b["text"]["content"]]
    assert refused and "客户G002（#2）未能交给 ajie：客户拒绝，客户仍由 xiaomei 跟进" in refused[0]


async def test_a_departed_guides_customers_use_the_resigned_api(world: WeComWorld) -> None:
    h, fake = world.h, world.fake
    assert await world.post(added_xml("wmLEFT0001", MEI)) == 200
    await h.app.tick()
    await transfer_customers(h.app, "xiaomei", "xiaolan", ["wmLEFT0001"], departed=True)
    assert fake.called("/externalcontact/resigned/transfer_customer") == [
        {"handover_userid": MEI, "takeover_userid": LAN, "external_userid": ["wmLEFT0001"]}]
    again = await transfer_customers(h.app, "xiaomei", "xiaolan", ["wmLEFT0001"], departed=True)
    assert [(r.status, r.detail) for r in again.rows] == [("failed", "上一次交接还在等待平台确认")]
    assert len(fake.called("/externalcontact/resigned/transfer_customer")) == 1  # not asked twice
    fake.settle_handover("wmLEFT0001", 1)
    h.clock.advance(timedelta(hours=1))
    await h.app.tick()
    assert fake.called("/externalcontact/resigned/transfer_result")
    async with h.app.db.session() as session:
        statuses = (await session.scalars(select(Transfer.status).order_by(Transfer.id))).all()
    assert statuses == ["accepted", "failed"]
    assert await guide_of(world, "wmLEFT0001") == "xiaolan"


async def test_bad_requests_name_what_is_wrong(world: WeComWorld) -> None:
    with pytest.raises(TransferError, match="没有工号为「nobody」的导购"):
        await transfer_customers(world.h.app, "xiaomei", "nobody")
    with pytest.raises(TransferError, match="xiaomei 名下没有可以交接的客户"):
        await transfer_customers(world.h.app, "xiaomei", "ajie")
    assert world.fake.called("/externalcontact/transfer_customer") == []


async def test_off_wecom_the_move_is_at_once_and_a_hand_off_follows(db_url: str, start: datetime,
                                                                    tmp_path: Path) -> None:
    staff = ({"id": "xiaomei", "name": "小美", "identities": {"test": "guide-xiaomei"}},
             {"id": "ajie", "name": "阿杰", "identities": {"test": "guide-ajie"}})
    h = await Harness.create(db_url, start, scripts_with(tmp_path, "handover"), staff=staff)
    try:
        await h.customer_adds_guide("lin", "林小姐")
        await h.customer_says("lin", "你们和某某牌子比哪个好用")  # nobody knows: handed off to 小美
        report = await transfer_customers(h.app, "xiaomei", "ajie", ["lin"])
        assert [r.status for r in report.rows] == ["accepted"]
        await h.customer_says("lin", "还在吗")  # the open hand-off's notes now reach 阿杰
        await h.run_until(h.start + timedelta(days=2))
        notes = h.texts("guide-ajie")
        assert any(n.startswith("【客户交接】xiaomei 的 1 位客户交给您：林小姐（#1）") for n in notes), notes
        assert any(n.startswith("【转人工·续】林小姐：还在吗") for n in notes), notes
        assert h.transcript("lin") == [
            "d0 10:15 问候：林小姐您好，我是测试品牌的小美",
            "d0 10:15 转人工：这个问题请测试顾问来回答",
            "d0 10:45 交接：林小姐您好，我是阿杰，之后由我为您服务",  # once the live conversation is quiet
            "d1 10:15 第1天关怀：林小姐，加上您的第一天",
            "d2 10:00 入群邀请：林小姐，欢迎加入「测试会员群」",
        ]
    finally:
        await h.close()


def test_siyu_customers_transfer_reports_what_it_cannot_do(db_url: str, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from bot.cli import main
    from tests.harness import CONFIG

    if not db_url.startswith("sqlite"):
        pytest.skip("the CLI test runs on SQLite only")
    monkeypatch.setenv("SIYU_DATABASE_URL", db_url)
    files = ["--config", str(CONFIG), "--scripts", str(scripts_with(tmp_path, "handover"))]
    assert main(["customers", "transfer", "--from", "xiaomei", "--to", "aqing", *files]) == 1
    assert main(["customers", "transfer", "--from", "xiaomei", "--to", "nobody", *files]) == 1
    assert capsys.readouterr().err.splitlines() == [
        "xiaomei 名下没有可以交接的客户",
        "没有工号为「nobody」的导购：config.yaml 的 staff: 里有 xiaomei、aqing"]
