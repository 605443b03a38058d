"""Business events from the brand's systems: a purchase ends the new-customer journey, a tag starts
another, each event counts once, and bad events are refused with a sentence naming the field."""
from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import func, select

from bot.app import build_web_app
from bot.business_events import EventRejected, Outcome, import_events, parse_event
from bot.staff_accounts import StaffAccounts
from storage.models import BusinessEvent, Enrolment
from tests.harness import Harness
from tests.lifecycle import contact_of, events_of, ledger, lifecycle_harness


@pytest.fixture
async def h(db_url: str, start: datetime, tmp_path: Path) -> AsyncIterator[Harness]:
    async with lifecycle_harness(db_url, start, tmp_path) as harness:
        yield harness


def purchase(event_id: str, customer: str, order: str, amount: float, **extra: Any) -> dict[str, Any]:
    return {"event_id": event_id, "type": "purchase", "customer": {"channel": "test", "id": customer},
            "data": {"order_id": order, "amount": amount}, **extra}


async def test_a_purchase_ends_the_new_customer_journey_and_starts_the_after_purchase_one(h: Harness) -> None:
    events = events_of(h)
    await h.customer_adds_guide("lin", "林小姐")
    await h.run_for(timedelta(days=1, minutes=45))  # d1 11:00
    assert await events.receive(purchase("evt-1", "lin", "A1", 199.0)) is Outcome.ACCEPTED
    assert await events.receive(purchase("evt-1", "lin", "A1", 199.0)) is Outcome.REPLAYED  # no second effect
    await h.app.tick()
    await h.run_for(timedelta(days=10))

    transcript = h.transcript("lin")
    assert transcript[:2] == ["d0 10:15 问候：林小姐您好", "d1 10:15 第1天关怀：林小姐"]
    # the purchase came 45 minutes after day-1 care: one proactive touch a day and a 20 h gap, so the
    # thank-you goes out when quiet hours end the next morning
    assert transcript[2:] == ["d2 09:00 谢谢惠顾：林小姐，您现在有 199 积分（普通）"]
    assert not any("第3天优惠" in line for line in transcript)  # the journey ended on the purchase
    assert await ledger(h, "lin") == ["d1 purchase +199 订单 A1 消费 199 元"]
    async with h.app.db.session() as session:
        reason = await session.scalar(select(Enrolment.exit_reason).where(Enrolment.journey_id == "new_customer"))
        stored = await session.scalar(select(func.count()).select_from(BusinessEvent))
    assert reason == "purchased" and stored == 1


async def test_a_tag_event_starts_the_tag_journey_once(h: Harness) -> None:
    events = events_of(h)
    await h.customer_adds_guide("wang", "王女士")
    await h.run_for(timedelta(days=1, hours=2))  # day-1 care at d1 10:15, now 12:15
    tag = {"event_id": "evt-tag-1", "type": "tag", "customer": {"channel": "test", "id": "wang"},
           "data": {"tag": "vip"}}
    assert await events.receive(tag) is Outcome.ACCEPTED
    assert await events.receive({**tag, "event_id": "evt-tag-2"}) is Outcome.ACCEPTED  # already tagged: nothing
    await h.run_for(timedelta(days=1))
    assert h.transcript("wang")[:3] == ["d0 10:15 问候：王女士您好", "d1 10:15 第1天关怀：王女士",
                                        "d2 09:00 会员礼遇：王女士，专属顾问为您服务"]  # within the caps
    assert (await contact_of(h, "wang")).tags == ["vip"]
    untag = {"event_id": "evt-untag", "type": "untag", "customer": {"channel": "test", "id": "wang"},
             "data": {"tag": "vip"}}
    assert await events.receive(untag) is Outcome.ACCEPTED
    assert (await contact_of(h, "wang")).tags == []


async def test_a_member_id_finds_the_customer_and_a_profile_fills_them_in(h: Harness) -> None:
    events = events_of(h)
    await h.customer_adds_guide("zhao", "赵女士")
    profile = {"event_id": "p1", "type": "profile", "customer": {"channel": "test", "id": "zhao"},
               "data": {"member_id": "M001", "birthday": "1990-05-20", "interests": ["护肤", "彩妆"]}}
    assert await events.receive(profile) is Outcome.ACCEPTED
    by_member = {"event_id": "p2", "type": "profile", "customer": {"member_id": "M001"}, "data": {"level": "金卡"}}
    assert await events.receive(by_member) is Outcome.ACCEPTED
    contact = await contact_of(h, "zhao")
    assert (contact.member_id, str(contact.birthday), contact.interests, contact.level) == (
        "M001", "1990-05-20", ["彩妆", "护肤"], "金卡")
    with pytest.raises(EventRejected, match=r"^customer.member_id 'M404' is not a known member"):
        await events.receive({**by_member, "event_id": "p3", "customer": {"member_id": "M404"}})
    with pytest.raises(EventRejected, match=r"^data.level '黑卡' is not a level of loyalty.yaml — use one of 普通"):
        await events.receive({**by_member, "event_id": "p4", "data": {"level": "黑卡"}})


@pytest.mark.parametrize("event, sentence", [
    ({"type": "purchase", "customer": {"member_id": "M1"}, "data": {"order_id": "A1", "amount": 1}},
     "event_id is missing — give every event a unique id"),
    ({"event_id": "e", "type": "refund", "customer": {"member_id": "M1"}},
     "type unknown type 'refund' — use purchase, tag, untag, profile, redeem or custom:<name>"),
    ({"event_id": "e", "type": "purchase", "customer": {"channel": "webchat"}, "data": {}},
     "customer needs {\"channel\": …, \"id\": …} or {\"member_id\": …}"),
    ({"event_id": "e", "type": "purchase", "customer": {"member_id": "M1"}, "data": {"order_id": "A1"}},
     "data.amount is missing — the order's amount in yuan, e.g. 199.0"),
    ({"event_id": "e", "type": "purchase", "customer": {"member_id": "M1"},
      "data": {"order_id": "A1", "amount": "很多"}},
     "data.amount input should be a valid number, unable to parse string as a number, got \"很多\""),
    ({"event_id": "e", "type": "purchase", "customer": {"member_id": "M1"},
      "data": {"order_id": "A1", "amount": 1}, "at": "2026-11-23T10:00:00"},
     "at input should have timezone info, got \"2026-11-23T10:00:00\" — an ISO time with its offset"),
    ({"event_id": "e", "type": "tag", "customer": {"member_id": "M1"}, "data": {"label": "vip"}},
     "data.tag is missing — the tag's name"),
])
def test_bad_events_are_refused_with_a_sentence_naming_the_field(event: dict[str, Any], sentence: str) -> None:
    with pytest.raises(EventRejected) as refused:
        parse_event(event)
    assert str(refused.value).startswith(sentence)


async def test_the_events_api_answers_202_200_400_401(h: Harness) -> None:
    await h.customer_adds_guide("lin", "林小姐")
    token = await StaffAccounts(h.app.db, h.clock, ["xiaomei"]).create_token("xiaomei")
    web_app = build_web_app(h.app)  # siyu serve's own app: the events route comes with the console
    auth = {"Authorization": f"Bearer {token}"}
    async with TestClient(TestServer(web_app, host="127.0.0.1")) as client:
        event = purchase("api-1", "lin", "B7", 88.5, at="2026-03-02T12:00:00+08:00")
        assert (await client.post("/api/events", json=event)).status == 401
        wrong = await client.post("/api/events", json=event, headers={"Authorization": "Bearer siyu_guess"})
        assert wrong.status == 401
        new = await client.post("/api/events", json=event, headers=auth)
        assert new.status == 202 and await new.json() == {"status": "accepted", "event_id": "api-1"}
        again = await client.post("/api/events", json=event, headers=auth)
        assert again.status == 200 and await again.json() == {"status": "replayed", "event_id": "api-1"}
        bad = await client.post("/api/events", json={**event, "event_id": "api-2", "data": {"order_id": "B8"}},
                                headers=auth)
        body = await bad.json()
        assert bad.status == 400 and body["field"] == "data.amount"
        assert body["error"] == "事件有误：data.amount is missing — the order's amount in yuan, e.g. 199.0"
        unknown = await client.post("/api/events", json=purchase("api-3", "nobody", "B9", 1.0), headers=auth)
        assert unknown.status == 400 and (await unknown.json())["field"] == "customer"
        not_json = await client.post("/api/events", data=b"{order", headers=auth)
        assert not_json.status == 400
    assert await ledger(h, "lin") == ["d0 purchase +88 订单 B7 消费 88.5 元"]  # once, at the event's own time


async def test_events_import_replays_an_export_line_by_line(h: Harness, tmp_path: Path) -> None:
    await h.customer_adds_guide("lin", "林小姐")
    await h.customer_adds_guide("wang", "王女士")
    lines = [
        json.dumps(purchase("ord-1", "lin", "C1", 120.0), ensure_ascii=False),
        "{not json",
        json.dumps({"event_id": "ord-2", "type": "purchase", "customer": {"channel": "test", "id": "wang"},
                    "data": {"amount": 50}}, ensure_ascii=False),
        "",
        json.dumps(purchase("ord-1", "lin", "C1", 120.0), ensure_ascii=False),  # the same order again
        json.dumps(purchase("ord-3", "wang", "C3", 60.0), ensure_ascii=False),
    ]
    export = tmp_path / "orders.jsonl"
    export.write_text("\n".join(lines) + "\n", encoding="utf-8")
    events = events_of(h)

    report = await import_events(events, export, "orders.jsonl")
    assert (report.accepted, report.replayed) == (2, 1)
    assert report.problems == [
        "orders.jsonl:2: not JSON (Expecting property name enclosed in double quotes at column 2) — "
        "write one JSON object per line",
        "orders.jsonl:3: data.order_id is missing — the order's id in your system, e.g. \"A1\"",
    ]
    again = await import_events(events, export, "orders.jsonl")  # importing the same file twice changes nothing
    assert (again.accepted, again.replayed) == (0, 3)
    assert await ledger(h, "lin") == ["d0 purchase +120 订单 C1 消费 120 元"]
    assert await ledger(h, "wang") == ["d0 purchase +60 订单 C3 消费 60 元"]


def test_siyu_events_import_from_the_command_line(tmp_path: Path) -> None:
    from tests.test_cli import FIXTURES, siyu

    db = tmp_path / "e.db"
    assert siyu("chat", *FIXTURES, db=db, stdin="/quit\n").returncode == 0  # the console customer exists now
    export = tmp_path / "orders.jsonl"
    customer = {"channel": "console", "id": "console-customer"}
    export.write_text(json.dumps({"event_id": "o1", "type": "purchase", "customer": customer,
                                  "data": {"order_id": "A1", "amount": 199.0}}) + "\n" +
                      json.dumps({"event_id": "o2", "type": "purchase", "customer": customer,
                                  "data": {"order_id": "A2", "amount": -5}}) + "\n", encoding="utf-8")
    first = siyu("events", "import", str(export), *FIXTURES, db=db)
    assert first.returncode == 1  # a line was refused: the operator fixes it and imports again
    assert first.stdout.strip() == "1 event(s) applied, 0 already seen (no effect), 1 refused"
    assert first.stderr.strip() == (f"{export}:2: data.amount input should be greater than or equal to 0, got -5 — "
                                    "the order's amount in yuan, e.g. 199.0")
    again = siyu("events", "import", str(export), *FIXTURES, db=db)
    assert again.stdout.strip() == "0 event(s) applied, 1 already seen (no effect), 1 refused"
