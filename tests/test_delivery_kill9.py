"""kill -9 during delivery: nothing reaches a platform twice, and nothing is lost without a word.

The issue's attack: SIGKILL `siyu serve` while it hands messages to Telegram, restart it, and the
platform saw some of them twice (`delivered_at` is committed after the call returns). Now a
message whose call was cut off is never repeated where the platform does not drop repeats: it is
recorded as in doubt and its guide gets one note. Where the platform does drop repeats (WeCom's
duplicate check, 微信客服's msgid) it is simply handed over again. `python -m bench kill9` is the
same attack at scale, with random kill times.
"""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from adapters.wecom.adapter import APP_DUPLICATE_CHECK
from adapters.wecom.aibot import AiBotConnection
from bench.kill9 import (
    GUIDE_CHAT,
    NOTE_PREFIX,
    HoldingTelegram,
    Tally,
    Worker,
    prepare,
    tally,
    undelivered,
    write_config,
)
from storage import repo
from storage.db import Database
from storage.models import Contact, Message
from tests.fakes import FakeAiBotGateway
from tests.harness import SCRIPTS, Harness
from tests.test_wecom import GUIDE, WeComWorld, wecom_world

MESSAGES = 120
CUSTOMER = "wmKILL9customer"
LEASE = timedelta(seconds=30)  # the Dispatcher's default


@pytest.mark.timeout(120)
async def test_kill9_during_telegram_calls_never_sends_twice(db_url: str, tmp_path: Path) -> None:
    """A real worker process is SIGKILLed twice exactly inside a sendMessage call: once after
    Telegram took the message, once before it got there. Then it drains the outbox."""
    fake = HoldingTelegram()
    api_base = await fake.start()
    db = Database(db_url)
    worker = Worker(write_config(tmp_path), db_url, fake, api_base, tmp_path / "worker.log", lease=1.0)
    held: dict[str, str] = {}
    try:
        await prepare(db, MESSAGES)
        for kind in ("taken", "lost"):
            fake.arm(kind)
            await worker.start()
            try:
                held[kind] = await fake.wait_held(30)
            except TimeoutError:
                pytest.fail(f"the worker sent nothing in 30 s:\n{worker.log.read_text()[-3000:]}")
            await worker.kill()  # mid-call: the worker never learns how the call went
            fake.release()
        await worker.start()
        async with asyncio.timeout(60):
            while await undelivered(db):
                assert not worker.died(), worker.log.read_text()[-3000:]
                await asyncio.sleep(0.2)
        await worker.kill()
        result = await tally(db, fake, Tally(db_url.split("+")[0], MESSAGES, kills=2))
    finally:
        await worker.kill()
        await db.close()
        await fake.close()

    assert result.duplicates == 0
    assert result.lost == 0 and result.false_delivered == 0
    # exactly the two cut-off messages are in doubt, and the platform got one of them
    assert sorted(result.in_doubt_texts) == sorted(held.values())
    assert (result.in_doubt_received, result.in_doubt_not_received) == (1, 1)
    assert fake.received()[held["taken"]] == 1 and fake.received()[held["lost"]] == 0
    assert result.delivered_once == MESSAGES - 2
    # the guide got one Chinese note about each, on Telegram, quoting the message
    notes = [str(p["text"]) for p in fake.sent() if int(p["chat_id"]) == GUIDE_CHAT]
    assert len(notes) == 2 and all(n.startswith(NOTE_PREFIX) and "不会自动重发" in n for n in notes)
    assert {n.rpartition("内容：")[2] for n in notes} == set(held.values())


# --- WeCom: the platform drops repeats where it can, and siyu leans on that --------------------------

@pytest.fixture
async def world(db_url: str, start: datetime) -> AsyncIterator[WeComWorld]:
    async with wecom_world(db_url, start) as world:
        yield world


async def _queue(world: WeComWorld, channel: str, chat_id: str, text: str, sender_id: str = "bot") -> int:
    async with world.h.app.db.session() as session, session.begin():
        contact = await session.scalar(select(Contact).where(Contact.external_id == CUSTOMER))
        if contact is None:
            contact = Contact(channel="wecom", external_id=CUSTOMER, name="林小姐", guide_key="xiaomei", tags=[],
                              interests=[], added_at=world.h.clock.now())
            session.add(contact)
            await session.flush()
        message = repo.add_message(session, channel=channel, chat_type="direct", chat_id=chat_id, direction="out",
                                   sender_role="bot", sender_id=sender_id, contact_id=contact.id, text=text,
                                   created_at=world.h.clock.now())
        await session.flush()
        return message.id


async def _killed_mid_call(world: WeComWorld, message_id: int) -> None:
    """Leave the row as a worker SIGKILLed inside the platform call leaves it: claimed, started, and
    not delivered; then let its claim run out."""
    now = world.h.clock.now()
    async with world.h.app.db.session() as session, session.begin():
        await session.execute(update(Message).where(Message.id == message_id).values(
            delivery_attempts=1, delivery_started_at=now, delivery_claimed_until=now + LEASE))
    world.h.clock.advance(LEASE + timedelta(seconds=1))


async def _row(world: WeComWorld, message_id: int) -> Message:
    async with world.h.app.db.session() as session:
        message = await session.get(Message, message_id)
        assert message is not None
        return message


async def test_wecom_app_message_cut_off_is_sent_again_with_the_duplicate_check(world: WeComWorld) -> None:
    message_id = await _queue(world, "wecom", GUIDE, "【转人工】林小姐问：能开发票吗")
    await _killed_mid_call(world, message_id)
    await world.h.app.dispatcher.flush()

    (sent,) = world.fake.called("/message/send")
    assert sent["text"]["content"] == "【转人工】林小姐问：能开发票吗"
    # WeCom drops the same request to the same member within the interval: a repeat cannot show twice
    assert sent["enable_duplicate_check"] == 1
    assert sent["duplicate_check_interval"] == APP_DUPLICATE_CHECK.total_seconds()
    row = await _row(world, message_id)
    assert row.delivered_at is not None and row.delivery_error is None


async def test_wecom_app_message_cut_off_longer_ago_than_the_check_is_in_doubt(world: WeComWorld) -> None:
    message_id = await _queue(world, "wecom", GUIDE, "【转人工】林小姐问：几点关门")
    await _killed_mid_call(world, message_id)
    world.h.clock.advance(APP_DUPLICATE_CHECK)  # the platform would no longer drop the repeat
    await world.h.app.dispatcher.flush()
    await world.h.app.dispatcher.flush()  # the guide's note

    contents = [b["text"]["content"] for b in world.fake.called("/message/send")]
    assert "【转人工】林小姐问：几点关门" not in contents
    assert (await _row(world, message_id)).delivery_error.startswith(repo.IN_DOUBT)  # type: ignore[union-attr]
    assert len([c for c in contents if c.startswith(NOTE_PREFIX)]) == 1  # the guide is told, once


async def test_wecom_customer_message_cut_off_is_in_doubt_not_sent_twice(world: WeComWorld) -> None:
    """add_msg_template has no idempotency key: a repeat would queue a second task for the guide."""
    message_id = await _queue(world, "wecom", CUSTOMER, "林小姐，您的见面礼还给您留着～", sender_id=GUIDE)
    await _killed_mid_call(world, message_id)
    await world.h.app.dispatcher.flush()
    await world.h.app.dispatcher.flush()  # the guide's note

    assert world.fake.called("/externalcontact/add_msg_template") == []
    row = await _row(world, message_id)
    assert row.delivered_at is None and row.delivery_error is not None
    assert row.delivery_error.startswith(repo.IN_DOUBT)
    async with world.h.app.db.session() as session:
        assert [m.id for m in await repo.messages_in_doubt(session)] == [message_id]
    (note,) = [b for b in world.fake.called("/message/send") if b["text"]["content"].startswith(NOTE_PREFIX)]
    assert note["touser"] == GUIDE
    assert "林小姐" in note["text"]["content"] and "见面礼" in note["text"]["content"]
    # nothing more happens on later passes: never sent, never noted again
    world.h.clock.advance(timedelta(hours=1))
    await world.h.app.dispatcher.flush()
    assert world.fake.called("/externalcontact/add_msg_template") == []
    assert len([b for b in world.fake.called("/message/send") if b["text"]["content"].startswith(NOTE_PREFIX)]) == 1


async def test_wecom_kf_repeat_carries_the_same_msgid(world: WeComWorld) -> None:
    """微信客服 takes our msgid and refuses one it has seen: a repeat after a crash cannot show twice."""
    chat = f"wkKF01:{CUSTOMER}"
    async with world.h.app.db.session() as session, session.begin():
        repo.add_message(session, channel="wecom_kf", chat_type="direct", chat_id=chat, direction="in",
                         sender_role="customer", sender_id=chat, text="在吗", created_at=world.h.clock.now(),
                         delivered_at=world.h.clock.now())
    message_id = await _queue(world, "wecom_kf", chat, "在的，请问有什么可以帮您？")
    await world.h.app.dispatcher.flush()
    # the worker died after the platform took it, before `delivered_at` was committed
    async with world.h.app.db.session() as session, session.begin():
        await session.execute(update(Message).where(Message.id == message_id).values(
            delivered_at=None, delivery_claimed_until=world.h.clock.now() + LEASE))
    world.h.clock.advance(LEASE + timedelta(seconds=1))
    await world.h.app.dispatcher.flush()

    first, repeat = world.fake.called("/kf/send_msg")
    assert first["msgid"] == repeat["msgid"] and first["msgid"].startswith(f"siyu-{message_id}-")
    assert len(first["msgid"]) <= 32


async def test_wecom_assisted_send_is_not_queued_twice_when_the_reminder_fails(world: WeComWorld) -> None:
    """The task exists once add_msg_template answers: a failed reminder to the guide must not fail
    the delivery, or the retry would queue the same message for the guide a second time."""
    for n in range(30):  # a busy minute: the guide's app messages use up WeCom's 30 per minute
        await _queue(world, "wecom", GUIDE, f"【转人工·续】林小姐：第{n}条")
    message_id = await _queue(world, "wecom", CUSTOMER, "林小姐，新品试用装给您留了一份～", sender_id=GUIDE)
    await world.h.app.dispatcher.flush()  # siyu's own rate: 20 now
    world.h.clock.advance(timedelta(seconds=1))
    await world.h.app.dispatcher.flush()  # 10 more, then the assisted send, whose reminder must wait
    assert len(world.fake.called("/message/send")) == 30
    assert len(world.fake.called("/externalcontact/add_msg_template")) == 1
    world.h.clock.advance(timedelta(minutes=10))
    await world.h.app.dispatcher.flush()

    assert len(world.fake.called("/externalcontact/add_msg_template")) == 1
    row = await _row(world, message_id)
    assert row.platform_ref is not None and row.awaiting_until is not None and row.delivery_error is None


# --- a call that gets no answer is in doubt too -------------------------------------------------------

async def test_ai_bot_message_without_an_ack_is_in_doubt_not_sent_twice(tmp_path: Path, start: datetime) -> None:
    gateway = FakeAiBotGateway(unanswered={"aibot_send_msg": 1})  # takes the next one, never acknowledges it
    url = await gateway.start()
    staff = ({"id": "xiaomei", "name": "小美", "identities": {"wecom_aibot": "xiaomei.li"}},)
    h = await Harness.create(f"sqlite+aiosqlite:///{tmp_path / 'a.db'}", start, SCRIPTS, staff=staff)
    bot = AiBotConnection(gateway.bot_id, gateway.secret, h.app.engine.handle, h.clock, url=url, ack_timeout=0.3)
    h.app.add_transport(bot)
    bot.start()
    try:
        await bot.wait_authenticated()
        async with h.app.db.session() as session, session.begin():
            contact = Contact(channel="wecom_aibot", external_id="wang.y", name="王先生", guide_key="xiaomei",
                              tags=[], interests=[], added_at=h.clock.now())
            session.add(contact)
            await session.flush()
            repo.add_message(session, channel="wecom_aibot", chat_type="direct", chat_id="wang.y", direction="out",
                             sender_role="bot", sender_id="bot", contact_id=contact.id, text="王先生，您的订单已发货",
                             created_at=h.clock.now())
        await h.app.dispatcher.flush()  # no ack in time
        for _ in range(3):
            h.clock.advance(timedelta(minutes=5))
            await h.app.dispatcher.flush()
        sent = [f["body"] for f in gateway.received("aibot_send_msg")]
    finally:
        await bot.stop()
        await h.close()
        await gateway.close()

    assert [b["markdown"]["content"] for b in sent if b["chatid"] == "wang.y"] == ["王先生，您的订单已发货"]
    (note,) = [b["markdown"]["content"] for b in sent if b["chatid"] == "xiaomei.li"]
    assert note.startswith(NOTE_PREFIX) and "王先生" in note and "订单已发货" in note
