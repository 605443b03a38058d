"""A batch of due touches is decided in one transaction, exactly as if each had been decided on its own."""
from __future__ import annotations

import logging
from collections import Counter
from datetime import date, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from bot import app as app_module
from bot import scheduler
from bot.scheduler import Scheduler
from storage.models import Contact, Message, Touch, TouchLog
from tests.conftest import _reset_postgres
from tests.harness import SCRIPTS, Harness

CUSTOMERS = [f"b{i}" for i in range(12)]
ONE_BY_ONE = "each is tried on its own"


async def _refuse_batches(*_: Any) -> Any:
    raise RuntimeError("decide touch by touch")


async def _a_month(db_url: str, start: datetime) -> tuple[dict[str, list[str]], list[tuple[Any, ...]]]:
    """Twelve customers added together (so their steps fall due together), two of them replying, two with a
    birthday this month; what each saw, and every decision logged."""
    h = await Harness.create(db_url, start, SCRIPTS)
    try:
        for n, customer in enumerate(CUSTOMERS):
            birthday = date(1990, 3, 20) if n in (2, 5) else None
            await h.customer_adds_guide(customer, f"顾客{n}", birthday=birthday)
        await h.run_for(timedelta(days=3, hours=1))
        for customer in ("b1", "b4"):
            await h.customer_says(customer, "收到，谢谢")
        await h.run_until(start + timedelta(days=35))
        async with h.app.db.session() as session:
            log = (await session.execute(
                select(Contact.external_id, TouchLog.journey_id, TouchLog.step_id, TouchLog.decision,
                       TouchLog.reason, TouchLog.detail, TouchLog.at).join(Contact, Contact.id == TouchLog.contact_id)
            )).all()
            keys = (await session.scalars(select(Message.idempotency_key).where(Message.touch_id.isnot(None)))).all()
        assert set(Counter(keys).values()) == {1}  # no touch queued twice
        return {c: h.transcript(c) for c in CUSTOMERS}, sorted(tuple(row) for row in log)
    finally:
        await h.close()


async def test_a_batch_decides_as_touch_by_touch_would(db_url: str, start: datetime,
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="bot.scheduler"):
        batched = await _a_month(db_url, start)
    assert ONE_BY_ONE not in caplog.text  # the batch path decided them

    monkeypatch.setattr(Scheduler, "_process_batch", _refuse_batches)
    if db_url.startswith("sqlite"):
        db_url = db_url.replace("siyu.db", "one_by_one.db")
    else:
        await _reset_postgres(db_url)
    one_by_one = await _a_month(db_url, start)

    transcripts, log = batched
    assert transcripts == one_by_one[0]
    assert log == one_by_one[1]
    assert len(transcripts["b0"]) >= 4 and transcripts["b1"] != transcripts["b0"]  # the replies changed paths
    assert any("生日" in line for line in transcripts["b2"])


async def test_one_failing_touch_does_not_hold_up_its_batch(harness: Harness, monkeypatch: pytest.MonkeyPatch,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    for n, customer in enumerate(CUSTOMERS):
        await harness.customer_adds_guide(customer, f"顾客{n}")
    real_render = scheduler.render

    def breaks_for_one(template: Any, context: dict[str, Any]) -> str:
        if context["customer"]["name"] == "顾客3":
            raise RuntimeError("a bug that only this customer's data reaches")
        return real_render(template, context)

    monkeypatch.setattr(scheduler, "render", breaks_for_one)
    with caplog.at_level(logging.WARNING, logger="bot.scheduler"):
        await harness.run_for(timedelta(days=1, minutes=1))
    assert ONE_BY_ONE in caplog.text
    for customer in CUSTOMERS:
        assert len([line for line in harness.transcript(customer) if "day1" in line or "d1 " in line]) == \
            (0 if customer == "b3" else 1), customer
    async with harness.app.db.session() as session:
        stuck = (await session.scalars(select(Touch.status).join(Contact, Contact.id == Touch.contact_id).where(
            Contact.external_id == "b3", Touch.step_id == "day1_care"))).all()
    assert stuck == ["claimed"]  # retried once its claim expires, dropped after MAX_CLAIMS

    monkeypatch.setattr(scheduler, "render", real_render)
    await harness.run_for(timedelta(seconds=harness.app.settings.scheduler.lease_seconds + 1))
    assert len([line for line in harness.transcript("b3") if line.startswith("d1 ")]) == 1


async def test_a_backlog_goes_out_pass_by_pass(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """The scheduler was down for a day: each serve pass delivers what it decided before it decides more."""
    monkeypatch.setattr(Scheduler, "batch_size", property(lambda _: 2))
    monkeypatch.setattr(app_module, "TICK_BATCHES", 2)
    for n, customer in enumerate(CUSTOMERS):
        await harness.customer_adds_guide(customer, f"顾客{n}")
    await harness.run_for(timedelta(minutes=1))  # the greetings
    harness.clock.advance(timedelta(days=1))  # everyone's day-1 care is due at once

    def cared() -> list[str]:
        return [c for c in CUSTOMERS if any(line.startswith("d1 ") for line in harness.transcript(c))]

    ready = harness.app.engine.work_ready
    ready.clear()
    await harness.app.tick()
    assert len(cared()) == 4 and ready.is_set()  # two batches of two went out; the loop comes straight back
    passes = 1
    while ready.is_set():
        ready.clear()
        await harness.app.tick()
        passes += 1
    assert len(cared()) == len(CUSTOMERS) and passes == 4
