"""Property: over 120 virtual days of random customers, journeys and guide triggers, no cap, gap or
quiet hour is ever broken and no touch is silently lost."""
from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from storage.models import Contact, Message, Touch, TouchLog
from tests.conftest import SHANGHAI
from tests.harness import SCRIPTS, Harness

START = datetime(2026, 1, 5, 8, 0, tzinfo=SHANGHAI)
DAYS = 120
STEPS = ["greeting", "day1_care", "group_invite", "day3_followup", "day7_followup", "day30_interest"]


@dataclass(frozen=True)
class Act:
    minute: int
    kind: str  # add | say | optout | churn | trigger
    customer: int
    step: str = ""


customers = st.integers(min_value=0, max_value=3)
acts = st.lists(st.one_of(
    st.builds(Act, st.integers(0, DAYS * 1440), st.just("say"), customers),
    st.builds(Act, st.integers(0, DAYS * 1440), st.just("trigger"), customers, st.sampled_from(STEPS)),
    st.builds(Act, st.integers(0, 10 * 1440), st.just("trigger"), customers, st.sampled_from(STEPS)),
    st.builds(Act, st.integers(0, DAYS * 1440), st.just("optout"), customers),
    st.builds(Act, st.integers(0, DAYS * 1440), st.just("churn"), customers),
), max_size=25)
caps = st.fixed_dictionaries({"day": st.integers(1, 2), "week": st.integers(2, 5), "month": st.integers(3, 8)})


async def _run(adds: list[int], birthdays: list[date | None], script: list[Act], cap: dict[str, int],
               gap_hours: int, tmp: str) -> None:
    policy = {"caps": cap, "min_gap": f"{gap_hours}h"}
    h = await Harness.create(f"sqlite+aiosqlite:///{tmp}", START, SCRIPTS, policy=policy)
    try:
        timeline = [Act(m, "add", i) for i, m in enumerate(adds)] + script
        # most customers answer the greeting, which opens the group invite and the live-chat rule
        timeline += [Act(m + 20, "say", i) for i, m in enumerate(adds) if i % 3 != 2]
        timeline.sort(key=lambda a: (a.minute, a.kind != "add"))
        added: set[int] = set()
        for act in timeline:
            await h.run_until(START + timedelta(minutes=act.minute))
            who = f"p{act.customer}"
            if act.kind == "add":
                await h.customer_adds_guide(who, who, birthday=birthdays[act.customer])
                added.add(act.customer)
            elif act.customer not in added:
                continue
            elif act.kind == "say":
                await h.customer_says(who, "包邮吗")
            elif act.kind == "optout":
                await h.customer_says(who, "退订")
            elif act.kind == "churn":
                await h.customer_removes_guide(who)
            else:
                await h.guide_says(f"/sop new_customer.{act.step} {who}")
        await h.run_until(START + timedelta(days=DAYS))
        await _check(h, cap, timedelta(hours=gap_hours))
    finally:
        await h.close()


async def _check(h: Harness, cap: dict[str, int], gap: timedelta) -> None:
    async with h.app.db.session() as session:
        sends = (await session.scalars(select(TouchLog).where(TouchLog.decision == "sent",
                                                              TouchLog.proactive.is_(True))
                                       .order_by(TouchLog.at))).all()
        touches = (await session.scalars(select(Touch))).all()
        messages = (await session.scalars(select(Message).where(Message.touch_id.isnot(None)))).all()
        contacts = {c.id: c for c in (await session.scalars(select(Contact))).all()}

    by_customer: dict[int, list[datetime]] = defaultdict(list)
    for row in sends:
        by_customer[row.contact_id].append(row.at)
    for contact_id, times in by_customer.items():
        local = [t.astimezone(SHANGHAI) for t in times]
        for i, t in enumerate(local):
            assert 9 <= t.hour < 21, f"sent in quiet hours at {t}"  # tests/data/config.yaml: 21:00-09:00
            assert sum(1 for u in local if u.date() == t.date()) <= cap["day"]
            assert sum(1 for u in local[: i + 1] if u > t - timedelta(days=7)) <= cap["week"]
            assert sum(1 for u in local if (u.year, u.month) == (t.year, t.month)) <= cap["month"]
            if i:
                assert t - local[i - 1] >= gap, f"gap {t - local[i - 1]} < {gap}"
        contact = contacts[contact_id]
        if contact.opted_out_at is not None:
            assert all(t <= contact.opted_out_at for t in times), "touched after opting out"

    for touch in touches:
        assert touch.status in ("sent", "dropped", "skipped", "cancelled", "pending"), touch.status
        if touch.status in ("dropped", "skipped", "cancelled"):
            assert touch.reason, f"touch {touch.id} ended without a reason"
    sent_ids = {t.id for t in touches if t.status == "sent"}
    message_touches = [m.touch_id for m in messages]
    assert sorted(message_touches) == sorted(sent_ids), "every sent touch has exactly one message"


@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(adds=st.lists(st.integers(0, 20 * 1440), min_size=1, max_size=4),
       birthdays=st.lists(st.one_of(st.none(), st.dates(date(1980, 1, 1), date(2000, 12, 31))),
                          min_size=4, max_size=4),
       script=acts, cap=caps, gap_hours=st.sampled_from([0, 12, 20, 30]))
def test_no_rule_is_ever_broken_and_no_touch_is_lost(tmp_path_factory, adds, birthdays, script, cap,  # type: ignore[no-untyped-def]
                                                     gap_hours) -> None:
    db = tmp_path_factory.mktemp("prop") / "p.db"
    asyncio.run(_run(adds, birthdays, script, cap, gap_hours, str(db)))
