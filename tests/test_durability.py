"""Kill the process at any moment, start it again: every due step is sent exactly once."""
from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta

import pytest
from sqlalchemy import select

from bot import scheduler
from bot.transport import DeliveryError
from bot.events import Action, Event, EventKind, Profile
from storage.models import Message, Touch
from tests.harness import SCRIPTS, Harness

ALL_STEPS_SILENT = ["new_customer.greeting", "new_customer.day1_care", "new_customer.day3_followup",
                    "new_customer.day7_followup", "new_customer.day30_interest"]


async def _touch_messages(h: Harness) -> Counter[str]:
    async with h.app.db.session() as session:
        keys = (await session.scalars(select(Message.idempotency_key).where(Message.touch_id.isnot(None)))).all()
    return Counter(keys)


async def test_restart_mid_journey_sends_every_step_once(db_url: str, start) -> None:  # type: ignore[no-untyped-def]
    first = await Harness.create(db_url, start, SCRIPTS, worker_id="process-1")
    for i in range(5):
        await first.customer_adds_guide(f"r{i}", f"顾客{i}")
    await first.run_for(timedelta(days=3, hours=2))
    stopped_at = first.clock.now()
    await first.close()  # the process goes away

    second = await Harness.create(db_url, stopped_at, SCRIPTS, worker_id="process-2")
    try:
        await second.run_until(start + timedelta(days=35))
        for i in range(5):
            assert await second.steps_sent(f"r{i}") == ALL_STEPS_SILENT
        sent = await _touch_messages(second)
        assert sent and set(sent.values()) == {1}
        # the second process delivered only what the first had not
        assert [d.text.splitlines()[0] for d in second.transport.delivered if d.chat_id == "r0"] == [
            "第7天提醒：顾客0，见面礼还给您留着",
            "第30天：顾客0，欢迎来测试门店坐坐",
        ]
    finally:
        await second.close()


async def test_worker_dying_mid_send_is_taken_over_once(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    await harness.customer_adds_guide("k", "断电")
    harness.clock.advance(timedelta(days=1))

    real_release = scheduler.release
    calls = {"n": 0}

    async def dies_before_commit(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        raise ConnectionResetError("process killed")  # the transaction never commits

    monkeypatch.setattr(scheduler, "release", dies_before_commit)
    with pytest.raises(ConnectionResetError):
        await harness.app.tick()
    monkeypatch.setattr(scheduler, "release", real_release)
    assert calls["n"] == 1

    # the claim is still held: nobody sends until the lease runs out
    await harness.app.tick()
    assert len(harness.transcript("k")) == 1
    harness.clock.advance(timedelta(seconds=harness.app.settings.scheduler.lease_seconds + 1))
    await harness.app.tick()
    await harness.app.tick()
    assert await harness.steps_sent("k") == ["new_customer.greeting", "new_customer.day1_care"]
    assert len(harness.transcript("k")) == 2


async def test_failed_delivery_is_retried_not_lost(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    failures = {"left": 2}
    real_deliver = harness.transport.deliver

    async def flaky(action: Action) -> None:
        if failures["left"]:
            failures["left"] -= 1
            raise DeliveryError("platform busy", retry_after=30)
        await real_deliver(action)

    monkeypatch.setattr(harness.transport, "deliver", flaky)
    await harness.customer_adds_guide("f", "网络差")
    assert harness.transcript("f") == []
    await harness.run_for(timedelta(seconds=31))
    await harness.run_for(timedelta(seconds=31))
    assert harness.transcript("f") == ["d0 10:15 问候：网络差您好，我是测试品牌的小美"]


async def test_two_workers_on_postgres_never_send_a_touch_twice(postgres_url: str, start) -> None:  # type: ignore[no-untyped-def]
    overrides = {"scheduler": {"poll_seconds": 1, "batch": 3, "lease_seconds": 120}}
    a = await Harness.create(postgres_url, start, SCRIPTS, worker_id="worker-a", **overrides)
    b = await Harness.create(postgres_url, start, SCRIPTS, worker_id="worker-b", migrate=False,
                             **overrides)
    try:
        for i in range(30):
            await a.app.engine.handle(a_event(a, f"p{i}"))
        outcomes = await asyncio.gather(a.app.scheduler.run_due(), b.app.scheduler.run_due())
        for day in (1, 3, 7):
            a.clock.set(start + timedelta(days=day))
            b.clock.set(start + timedelta(days=day))
            more = await asyncio.gather(a.app.scheduler.run_due(), b.app.scheduler.run_due())
            outcomes = (outcomes[0] + more[0], outcomes[1] + more[1])
        sent_by_a = [o.touch_id for o in outcomes[0] if o.decision == "sent"]
        sent_by_b = [o.touch_id for o in outcomes[1] if o.decision == "sent"]
        assert sent_by_a and sent_by_b, "both workers should have shared the work"
        assert not set(sent_by_a) & set(sent_by_b)
        assert len(sent_by_a) + len(sent_by_b) == 30 * 4  # greeting, day 1, day 3, day 7
        counts = await _touch_messages(a)
        assert len(counts) == 120 and set(counts.values()) == {1}
        async with a.app.db.session() as session:
            statuses = Counter((await session.scalars(select(Touch.status))).all())
        assert statuses["claimed"] == 0
    finally:
        await a.close()
        await b.close()


def a_event(h: Harness, customer: str) -> Event:
    return Event(EventKind.CONTACT_ADDED, "test", customer, h.clock.now(), profile=Profile(name=customer))


async def test_outbound_rate_limit_delays_but_never_drops(db_url: str, start) -> None:  # type: ignore[no-untyped-def]
    h = await Harness.create(db_url, start, SCRIPTS, delivery={"test": {"per_second": 0.5, "burst": 2}})
    try:
        for i in range(5):
            await h.app.engine.handle(a_event(h, f"rl{i}"))
        await h.app.tick()
        assert len(h.transport.delivered) == 2  # the burst
        await h.run_for(timedelta(seconds=2.5))
        assert len(h.transport.delivered) == 3  # one more token after 2 s
        for _ in range(3):
            await h.run_for(timedelta(seconds=2.5))
        assert len(h.transport.delivered) == 5
        assert sorted(d.chat_id for d in h.transport.delivered) == [f"rl{i}" for i in range(5)]
    finally:
        await h.close()


async def test_platform_rate_limit_pauses_the_whole_channel(harness: Harness,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real_deliver = harness.transport.deliver

    async def throttled_once(action: Action) -> None:
        calls.append(action.address.chat_id)
        if len(calls) == 1:
            raise DeliveryError("45009: api freq out of limit", retry_after=60, pause_channel=True)
        await real_deliver(action)

    monkeypatch.setattr(harness.transport, "deliver", throttled_once)
    for i in range(3):
        await harness.app.engine.handle(a_event(harness, f"t{i}"))
    await harness.app.tick()
    assert calls == ["t0"]  # the others wait for the platform's back-off too
    await harness.run_for(timedelta(seconds=61))
    assert sorted(d.chat_id for d in harness.transport.delivered) == ["t0", "t1", "t2"]
