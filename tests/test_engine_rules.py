"""The engine's first rules: opt-out, quiet hours, guide triggers, churn, occasions, redelivery."""
from __future__ import annotations

from datetime import date, datetime, timedelta

from sqlalchemy import func, select

from bot.direct import STAFF_ONLY
from bot.events import Event, EventKind, Role
from storage import repo

from storage.models import Contact, Enrolment, Message, Touch
from tests.conftest import SHANGHAI
from tests.harness import SCRIPTS, Harness


async def test_opt_out_gets_one_confirmation_and_nothing_more(harness: Harness) -> None:
    await harness.customer_adds_guide("li", "李女士")
    await harness.run_for(timedelta(days=1, hours=1))
    await harness.customer_says("li", "TD")
    await harness.customer_says("li", "退订")  # a second opt-out is not confirmed again
    await harness.run_until(harness.start + timedelta(days=40))

    assert harness.transcript("li") == [
        "d0 10:15 问候：李女士您好，我是测试品牌的小美",
        "d1 10:15 第1天关怀：李女士，加上您的第一天",
        "d1 11:15 已为您退订，之后不会再主动打扰您。如需帮助，随时回复我们即可。",
    ]
    async with harness.app.db.session() as session:
        statuses = {e.journey_id: (e.status, e.exit_reason) for e in (await session.scalars(select(Enrolment))).all()}
        pending = await session.scalar(select(func.count()).select_from(Touch).where(Touch.status == "pending"))
    assert statuses == {"new_customer": ("exited", "opted_out"), "occasions": ("exited", "opted_out")}
    assert pending == 0


async def test_touch_due_in_quiet_hours_waits_for_morning(db_url: str) -> None:
    late = datetime(2026, 3, 2, 22, 30, tzinfo=SHANGHAI)  # added at 22:30: day-1 care falls at 22:30 too
    h = await Harness.create(db_url, late, SCRIPTS)
    try:
        await h.customer_adds_guide("night", "夜猫子")
        await h.run_for(timedelta(days=1, hours=12))
        assert h.transcript("night")[:2] == [
            "d0 22:30 问候：夜猫子您好，我是测试品牌的小美",  # answers their own add: sent at once
            "d2 10:00 第1天关怀：夜猫子，加上您的第一天",     # deferred, never dropped
        ]
        async with h.app.db.session() as session:
            from storage import repo
            contact = await repo.find_contact(session, "night")
            decisions = await repo.recent_decisions(session, contact.id)
        deferral = next(d for d in decisions if d.decision == "deferred" and d.step_id == "day1_care")
        assert deferral.reason == "quiet_hours"
        assert "deferred to 2026-03-04 10:00" in deferral.detail
    finally:
        await h.close()


async def test_guide_triggers_a_step_by_hand(harness: Harness) -> None:
    await harness.customer_adds_guide("zhou", "周小姐")
    await harness.guide_says("/sop new_customer.day3_followup zhou")
    assert harness.texts("guide-xiaomei")[-1].startswith("已安排 new_customer.day3_followup 发给 周小姐")
    assert len(harness.transcript("zhou")) == 2
    assert harness.transcript("zhou")[1] in ("d0 10:15 见面礼A：周小姐，送您「测试礼A」，回复「领取」领取",
                                              "d0 10:15 见面礼B：周小姐，送您「测试礼B」，回复「领取」领取")

    await harness.guide_says("/sop no_such_journey zhou")
    assert "没有旅程 'no_such_journey'" in harness.texts("guide-xiaomei")[-1]
    await harness.guide_says("/why zhou")
    assert "new_customer.day3_followup  已发送" in harness.texts("guide-xiaomei")[-1]


async def test_customer_cannot_run_guide_commands(harness: Harness) -> None:
    await harness.customer_adds_guide("sneaky", "路人")
    await harness.customer_says("sneaky", "/sop new_customer.day3_followup sneaky")
    assert not any("已安排" in t for t in harness.texts("sneaky"))
    async with harness.app.db.session() as session:
        manual = await session.scalar(select(func.count()).select_from(Touch).where(Touch.triggered_by.isnot(None)))
    assert manual == 0


async def test_unknown_question_is_handed_to_the_guide(harness: Harness) -> None:
    await harness.customer_adds_guide("qian", "钱女士")
    await harness.customer_says("qian", "你们的面霜和海蓝之谜比起来怎么样")
    assert harness.texts("qian")[-1] == "转人工：这个问题请测试顾问来回答"
    note = harness.texts("guide-xiaomei")[-1]
    assert note.startswith("【转人工】钱女士")
    assert "你们的面霜和海蓝之谜比起来怎么样" in note
    async with harness.app.db.session() as session:
        qian = await session.scalar(select(Contact.id).where(Contact.external_id == "qian"))
    assert f"会话：http://127.0.0.1:8080/console#/inbox/{qian}\n" in note  # her conversation in the console
    async with harness.app.db.session() as session:
        flagged = (await session.scalars(select(Message).where(Message.handoff.is_(True))
                                         .order_by(Message.id))).all()
    assert [(m.direction, m.text) for m in flagged] == [
        ("in", "你们的面霜和海蓝之谜比起来怎么样"), ("out", "转人工：这个问题请测试顾问来回答")]


async def test_churned_customer_ends_journeys_and_guide_is_told(harness: Harness) -> None:
    await harness.customer_adds_guide("sun", "孙先生")
    await harness.run_for(timedelta(days=2))
    await harness.customer_removes_guide("sun")
    await harness.run_for(timedelta(days=40))
    assert len(harness.transcript("sun")) == 2
    assert harness.texts("guide-xiaomei")[-1].startswith("【流失提醒】客户 孙先生")
    # comes back: a fresh journey starts
    await harness.customer_adds_guide("sun", "孙先生")
    assert harness.transcript("sun")[-1].startswith("d42 10:15 问候：孙先生您好")


async def test_birthday_and_festival_greetings(harness: Harness) -> None:
    await harness.customer_adds_guide("bd", "生日客", birthday=date(1990, 3, 20))
    await harness.run_until(datetime(2026, 6, 19, tzinfo=SHANGHAI))
    texts = harness.transcript("bd")
    assert "d18 10:00 生日：生日客生日快乐！测试品牌送您一份测试生日礼" in texts
    assert "d108 10:30 节日：生日客，618快乐！测试品牌小美祝您顺心" in texts
    async with harness.app.db.session() as session:
        next_birthday = await session.scalar(select(Touch.due_at).where(Touch.step_id == "birthday",
                                                                       Touch.status == "pending"))
    assert next_birthday.astimezone(SHANGHAI) == datetime(2027, 3, 20, 10, 0, tzinfo=SHANGHAI)


async def test_lunar_festivals_follow_the_lunar_calendar(db_url: str) -> None:
    """中秋 (lunar 08-15) is 25 Sep in 2026 and 春节 (lunar 01-01) 6 Feb in 2027; 双11 is a solar date."""
    added = datetime(2026, 9, 20, 10, 15, tzinfo=SHANGHAI)
    h = await Harness.create(db_url, added, SCRIPTS)
    try:
        await h.customer_adds_guide("moon", "月饼客")
        await h.run_until(datetime(2027, 2, 7, tzinfo=SHANGHAI))
        assert [line for line in h.transcript("moon") if "节日：" in line] == [
            "d5 10:30 节日：月饼客，中秋快乐！测试品牌小美祝您顺心",
            "d52 10:30 节日：月饼客，双11快乐！测试品牌小美祝您顺心",
            "d139 10:30 节日：月饼客，春节快乐！测试品牌小美祝您顺心",
        ]
        festival_texts = [t for t in h.texts("moon") if t.startswith("节日：")]
        assert ["测试大促福利已上线。" in t for t in festival_texts] == [False, True, False]  # only for 618 / 双11
    finally:
        await h.close()


async def test_redelivered_message_has_one_effect(harness: Harness) -> None:
    await harness.customer_adds_guide("dup", "重复")
    for _ in range(3):
        await harness.customer_says("dup", "包邮吗", message_id="platform-msg-1")
    answers = [t for t in harness.texts("dup") if t.startswith("答·运费：测试订单满 99 元包邮")]
    assert len(answers) == 1
    async with harness.app.db.session() as session:
        contact = await session.scalar(select(Contact).where(Contact.external_id == "dup"))
    assert contact.replies == 1


async def test_festival_and_journey_compete_for_one_budget(harness: Harness) -> None:
    """双11 falls on the day the day-7 nudge is due: the higher-priority journey goes first."""
    late = datetime(2026, 11, 4, 10, 15, tzinfo=SHANGHAI)
    h = await Harness.create(harness.app.settings.database_url, late, SCRIPTS)
    try:
        await h.customer_adds_guide("shop", "剁手党")
        await h.run_until(datetime(2026, 11, 13, tzinfo=SHANGHAI))
        async with h.app.db.session() as session:
            contact = await repo.find_contact(session, "shop")
            decisions = list(reversed(await repo.recent_decisions(session, contact.id, 50)))
        sent = [(d.at.astimezone(SHANGHAI).strftime("%m-%d %H:%M"), f"{d.journey_id}.{d.step_id}")
                for d in decisions if d.decision == "sent"]
        assert sent == [
            ("11-04 10:15", "new_customer.greeting"),
            ("11-05 10:15", "new_customer.day1_care"),
            ("11-07 10:15", "new_customer.day3_followup"),
            ("11-11 10:15", "new_customer.day7_followup"),
        ]
        festival = [d for d in decisions if d.step_id == "festival"]
        assert [d.reason for d in festival][:2] == ["cap_day", "expired"]
    finally:
        await h.close()


async def test_why_lists_decisions_newest_first(harness: Harness) -> None:
    await harness.customer_adds_guide("w", "问原因")
    await harness.run_for(timedelta(days=1, hours=5))
    async with harness.app.db.session() as session:
        contact = await repo.find_contact(session, "w")
        rows = await repo.recent_decisions(session, contact.id)
    from bot.commands import format_decisions
    lines = format_decisions(contact, rows, SHANGHAI).splitlines()
    assert lines[0] == "问原因（#1）最近的触达决策（Asia/Shanghai 时间）："
    assert lines[2].startswith("2026-03-03 10:15")  # the customer's local time, as the guide reads it
    assert "new_customer.group_invite  跳过  条件不满足，跳过" in lines[1]
    assert "new_customer.day1_care  已发送  符合频次、间隔、免打扰时段和发送窗口" in lines[2]
    assert "new_customer.greeting  已发送  回应顾客自己的动作，不计入频次" in lines[3]


async def test_bot_stays_out_of_a_group_a_guide_is_handling(harness: Harness) -> None:
    from bot.events import Role

    await harness.member_joins_group("m1", "g1")
    harness.clock.advance(timedelta(hours=1))
    await harness.member_says_in_group("m1", "g1", "什么时候发货", mention=True)
    assert harness.group_log("g1")[-1].startswith("say: 答·发货：测试订单下单后 1 天内发货")
    await harness.member_says_in_group("guide-xiaomei", "g1", "我来回答大家～", role=Role.STAFF)
    harness.clock.advance(timedelta(seconds=30))
    await harness.member_says_in_group("m1", "g1", "包邮吗", mention=True)
    assert len(harness.group_log("g1")) == 1  # quiet: a person is answering
    harness.clock.advance(timedelta(minutes=5))
    await harness.member_says_in_group("m1", "g1", "包邮吗", mention=True)
    assert harness.group_log("g1")[-1].startswith("say: 答·运费：测试订单满 99 元包邮")


async def test_handed_off_questions_are_kept_for_faq_gaps(harness: Harness) -> None:
    await harness.customer_adds_guide("g", "提问者")
    await harness.customer_says("g", "能寄到国外吗")
    async with harness.app.db.session() as session:
        questions = await repo.unanswered_questions(session, harness.start)
    assert list(questions) == ["能寄到国外吗"]


async def test_a_guide_removed_from_config_is_no_longer_staff(harness: Harness) -> None:
    await harness.customer_adds_guide("lin", "林小姐")
    await harness.guide_says("/why 林小姐")
    assert harness.texts("guide-xiaomei")[-1].startswith("林小姐")  # a configured guide may ask
    await harness.close()
    # the brand removes xiaomei from config.yaml and restarts
    h = await Harness.create(harness.app.settings.database_url, harness.clock.now(), SCRIPTS, staff=())
    try:  # her chat client still claims she is staff
        await h.app.handle(Event(EventKind.MESSAGE, "test", "guide-xiaomei", h.clock.now(), text="/optout 林小姐",
                                 message_id="after-removal", sender_role=Role.STAFF))
        async with h.app.db.session() as session:
            contact = await session.scalar(select(Contact).where(Contact.external_id == "lin"))
        assert contact is not None and not contact.opted_out
        assert STAFF_ONLY in h.texts("guide-xiaomei")  # answered as anyone else would be
    finally:
        await h.close()
