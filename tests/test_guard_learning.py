"""The learned guard as a customer group lives it: a trained classifier, a review band that stays quiet,
staff decisions that change the very next verdict, and rules that leave real customers alone."""
from __future__ import annotations

import asyncio
import json
import random
import shutil
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select

from bot.events import Action, ActionKind, ChatType, Event, EventKind
from bot.guard_feedback import guard_events, mark_not_spam, mark_spam, review_queue
from bot.guard_llm import SpamJudge
from bot.guard_model import DATA, Sample, load_model, read_samples, shipped_samples, train
from bot.durations import spoken_duration
from bot.transport import DeliveryError
from storage import repo
from storage.models import GuardEvent, GuardSample, Message
from tests.fakes import FakeOpenAI, user_message
from tests.harness import CHANNEL, SCRIPTS, Harness

GROUP = "vip-group"


def test_training_is_reproducible() -> None:
    rng = random.Random(3)
    corpus = shipped_samples()
    small = rng.sample(corpus, 300) + [Sample("加我V领福利", True), Sample("运费多少", False)]
    shuffled = small[:]
    rng.shuffle(shuffled)
    # the same data, in any order and with repeats, gives byte-identical model files
    assert train(small).to_bytes() == train(shuffled + small[:20]).to_bytes()


def test_the_shipped_model_is_what_training_on_the_shipped_corpus_gives() -> None:
    rebuilt = train(list(reversed(shipped_samples())))
    shipped = load_model()
    held_out = read_samples(DATA / "qq_group_heldout.jsonl")
    assert rebuilt.trained_on == shipped.trained_on
    assert all(abs(rebuilt.score(s.text) - shipped.score(s.text)) < 1e-3 for s in held_out)
    never_trained_on = {s.text for s in held_out} - {s.text for s in shipped_samples()}
    assert len(never_trained_on) > 300  # the measured split stays out of training


def test_evasions_fold_away_before_comparing() -> None:
    from bot.guard_similar import guard_view

    same = guard_view("加q群 88776655 领福利")
    for evasion in ["加Ｑ 群 ８８７７６６５５ 领福利", "加\u200bq\u200b群88776655领福利", "加扣群 88776655，领福利！"]:
        assert guard_view(evasion) == same, evasion
    assert guard_view("各种东西都在 wqkj777. top") == guard_view("各种东西都在wqkj777点top")


def test_durations_read_as_words() -> None:
    assert spoken_duration(timedelta(hours=1)) == "1 小时"
    assert spoken_duration(timedelta(minutes=90)) == "1 小时 30 分钟"
    assert spoken_duration(timedelta(days=1)) == "1 天"


async def _message_id(harness: Harness, text: str) -> int:
    async with harness.app.db.session() as session:
        return int(await session.scalar(select(Message.id).where(Message.direction == "in", Message.text == text)))


async def test_staff_marking_spam_catches_the_next_copy_at_once(harness: Harness) -> None:
    await harness.member_joins_group("seller", GROUP)
    await harness.member_joins_group("seller2", GROUP)
    harness.clock.advance(timedelta(hours=1))
    await harness.member_says_in_group("seller", GROUP, "姐妹们我这有便宜的面膜")
    assert harness.group_log(GROUP) == []  # the classifier alone lets it through

    async with harness.app.db.session() as session, session.begin():
        view = await mark_spam(session, await _message_id(harness, "姐妹们我这有便宜的面膜"), "xiaomei",
                               harness.clock.now())
    assert (view.status, view.rule) == ("spam", "staff")
    await harness.app.tick()
    assert harness.group_log(GROUP) == ["delete → seller"]  # staff's removal, without a public warning

    harness.clock.advance(timedelta(minutes=5))
    await harness.member_says_in_group("seller2", GROUP, "姐妹们，我这有便宜的面膜！！")
    assert harness.group_log(GROUP)[1:] == ["delete → seller2", "say: @seller2 测试警告：请勿发广告、链接或刷屏"]
    async with harness.app.db.session() as session:
        latest = (await guard_events(session, limit=1))[0]
    assert latest.rule == "similar_spam" and latest.member == "seller2"


async def test_a_staff_removal_teaches_the_guard_what_that_member_said(harness: Harness) -> None:
    for member in ("seller", "seller2", "lin"):
        await harness.member_joins_group(member, GROUP)
    harness.clock.advance(timedelta(hours=1))
    await harness.member_says_in_group("lin", GROUP, "今天天气真不错")
    await harness.member_says_in_group("seller", GROUP, "好的")  # too short to tell anything
    await harness.member_says_in_group("seller", GROUP, "姐妹们我这有便宜的面膜")
    assert harness.group_log(GROUP) == []  # the guard alone lets it through

    async def leaves(member: str, removed_by: str | None) -> None:
        await harness.app.engine.handle(Event(EventKind.LEFT_GROUP, CHANNEL, member, harness.clock.now(),
                                              ChatType.GROUP, GROUP, removed_by=removed_by))

    async def samples() -> list[tuple[str, bool, str]]:
        async with harness.app.db.session() as session:
            rows = await session.execute(select(GuardSample.text, GuardSample.spam, GuardSample.staff_key))
            return [tuple(row) for row in rows.all()]  # type: ignore[misc]

    await leaves("seller", "guide-xiaomei")  # the guide took her out of the group on the platform
    await leaves("seller", "guide-xiaomei")  # told twice, learnt once
    assert await samples() == [("姐妹们我这有便宜的面膜", True, "xiaomei")]
    async with harness.app.db.session() as session:
        (event,) = await guard_events(session)
    assert (event.rule, event.status, event.member) == ("staff_removal", "spam", "seller")

    await leaves("lin", None)  # leaving by herself says nothing about what she wrote
    await harness.member_says_in_group("guide-xiaomei", GROUP, "姐妹们今晚八点直播，面膜五折")
    await leaves("guide-xiaomei", "owner")  # nor does a colleague being taken out of the group
    assert len(await samples()) == 1
    harness.clock.advance(timedelta(minutes=5))
    await harness.member_says_in_group("seller2", GROUP, "姐妹们，我这有便宜的面膜！！")
    assert harness.group_log(GROUP) == ["delete → seller2", "say: @seller2 测试警告：请勿发广告、链接或刷屏"]


async def test_not_spam_takes_the_strike_back_and_spares_the_next_copy(harness: Harness) -> None:
    await harness.member_joins_group("mama", GROUP)
    harness.clock.advance(timedelta(hours=1))
    await harness.member_says_in_group("mama", GROUP, "有需要的姐妹私聊我")
    assert harness.group_log(GROUP)[0] == "delete → mama"
    async with harness.app.db.session() as session, session.begin():
        (event,) = await guard_events(session)
        assert event.rule == "classifier" and event.score is not None and event.score >= 0.55
        await mark_not_spam(session, event.id, "xiaomei", harness.clock.now())

    harness.clock.advance(timedelta(minutes=1))
    await harness.member_says_in_group("mama", GROUP, "有需要的姐妹私聊我～")
    assert len(harness.group_log(GROUP)) == 2  # spared: nothing new
    await harness.member_says_in_group("mama", GROUP, "兼 职 日 结，一天 500")
    # the overturned strike no longer counts: this is her first offence again, a warning, not a mute
    assert harness.group_log(GROUP)[2:] == ["delete → mama", "say: @mama 测试警告：请勿发广告、链接或刷屏"]


async def test_not_spam_lifts_the_mute_that_strike_caused(harness: Harness) -> None:
    await harness.member_joins_group("mama", GROUP)
    harness.clock.advance(timedelta(hours=1))
    await harness.member_says_in_group("mama", GROUP, "刷单兼职找我")
    await harness.member_says_in_group("mama", GROUP, "有需要的姐妹私聊我")  # a second strike: muted
    assert harness.group_log(GROUP)[2:] == ["delete → mama", "mute → mama"]
    harness.clock.advance(timedelta(minutes=5))
    async with harness.app.db.session() as session, session.begin():
        muted = (await guard_events(session, limit=1))[0]
        assert muted.action == "mute"
        await mark_not_spam(session, muted.id, "xiaomei", harness.clock.now())
        await mark_not_spam(session, muted.id, "xiaomei", harness.clock.now())  # said twice: undone once
    await harness.app.tick()
    assert harness.group_log(GROUP)[4:] == ["unmute → mama"]
    assert [d.text for d in harness.transport.delivered if d.kind == "unmute"] == ["mama 的禁言已解除"]
    # the overturned strike no longer counts: her next offence is her second, a mute again, not a removal
    await harness.member_says_in_group("mama", GROUP, "兼 职 日 结，一天 500")
    assert harness.group_log(GROUP)[5:] == ["delete → mama", "mute → mama"]


async def test_not_spam_calls_off_a_removal_still_waiting(harness: Harness, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    recorded = harness.transport.deliver

    async def platform_busy_with_removals(action: Action) -> None:
        if action.kind is ActionKind.REMOVE:
            raise DeliveryError("platform busy", retry_after=60)
        await recorded(action)

    monkeypatch.setattr(harness.transport, "deliver", platform_busy_with_removals)
    await harness.member_joins_group("newbie", GROUP)
    harness.clock.advance(timedelta(minutes=2))
    await harness.member_says_in_group("newbie", GROUP, "扫码进店", content_type="qr_code")
    assert harness.group_log(GROUP) == ["delete → newbie"]  # the removal waits for the platform
    async with harness.app.db.session() as session, session.begin():
        (event,) = await guard_events(session)
        assert event.action == "remove"
        await mark_not_spam(session, event.id, "xiaomei", harness.clock.now())
    monkeypatch.setattr(harness.transport, "deliver", recorded)
    await harness.run_for(timedelta(minutes=5))
    assert harness.group_log(GROUP) == ["delete → newbie"]  # she stays in the group
    async with harness.app.db.session() as session:
        samples = (await session.execute(select(GuardSample.text, GuardSample.spam))).all()
    assert samples == [("扫码进店", False)]


async def test_the_review_band_holds_without_any_public_action(harness: Harness) -> None:
    await harness.member_joins_group("gamer", GROUP)
    harness.clock.advance(timedelta(hours=1))
    await harness.member_says_in_group("gamer", GROUP, "教程在这 https://docs.example.org/guide")
    await harness.member_says_in_group("gamer", GROUP, "低价出")
    assert harness.group_log(GROUP) == []
    async with harness.app.db.session() as session:
        held = await review_queue(session)
    assert [(h.text, h.action, h.status) for h in held] == [
        ("教程在这 https://docs.example.org/guide", "hold", "held"), ("低价出", "hold", "held")]
    assert held[1].score is not None and 0.35 <= held[1].score < 0.55
    # held messages are no strikes: a later real offence is still a first offence
    await harness.member_says_in_group("gamer", GROUP, "刷单兼职找我")
    assert harness.group_log(GROUP) == ["delete → gamer", "say: @gamer 测试警告：请勿发广告、链接或刷屏"]


async def test_a_customer_asking_the_bot_several_questions_is_not_flooding(harness: Harness) -> None:
    await harness.member_joins_group("lin", GROUP)
    await harness.member_joins_group("chen", GROUP)
    harness.clock.advance(timedelta(hours=1))
    for text, mention in [("大家好", False), ("运费多少", True), ("哈哈", False), ("怎么退货", True),
                          ("好的", False), ("今天有活动吗", True), ("嗯嗯", False), ("谢谢", False)]:
        await harness.member_says_in_group("lin", GROUP, text, mention=mention)
        harness.clock.advance(timedelta(milliseconds=2500))
    assert not [line for line in harness.group_log(GROUP) if not line.startswith("say: ")]
    async with harness.app.db.session() as session:
        assert (await session.scalars(select(GuardEvent))).all() == []


async def test_offences_are_described_as_they_are(harness: Harness) -> None:
    await harness.member_joins_group("newbie", GROUP)
    harness.clock.advance(timedelta(minutes=2))
    await harness.member_says_in_group("newbie", GROUP, "扫码领取", content_type="qr_code")
    await harness.member_joins_group("old", GROUP)
    harness.clock.advance(timedelta(hours=1))
    for text in ["刷单兼职找我", "兼 职 日 结，一天 500", "代开发票 找我"]:
        await harness.member_says_in_group("old", GROUP, text)
    notices = [d.text for d in harness.transport.delivered if d.kind in ("mute", "remove")]
    assert notices == ["newbie 违反群规，已被移出群聊", "old 再次违反群规，已被禁言 1 小时", "old 多次违规，已被移出群聊"]


async def test_the_llm_settles_the_review_band_and_errors_keep_it_held() -> None:
    def reply(body: dict[str, object]) -> str:
        text = json.dumps(body["messages"], ensure_ascii=False)
        if "低价出" in text:
            return json.dumps({"spam": True, "confidence": 0.95})
        if "运费" in text:
            return json.dumps({"spam": False, "confidence": 0.9})
        return "sorry, I cannot help"  # not the JSON asked for

    server = FakeOpenAI(reply)
    url = await server.start()
    try:
        judge = SpamJudge(url, "fake-model", "", timeout=2)
        assert await judge.is_spam("低价出") is True
        assert await judge.is_spam("运费多少") is False
        assert await judge.is_spam("something else") is None
        slow = FakeOpenAI(reply, delay=1.0)
        slow_url = await slow.start()
        try:
            assert await SpamJudge(slow_url, "fake-model", "", timeout=0.2).is_spam("低价出") is None
        finally:
            await slow.close()
    finally:
        await server.close()


def _scripts_asking_the_llm(tmp_path: Path) -> Path:
    """The test scripts with guard.yaml's `classifier.llm` switched on."""
    root = tmp_path / "scripts"
    shutil.copytree(SCRIPTS, root)
    guard = root / "guard.yaml"
    guard.write_text(guard.read_text(encoding="utf-8").replace("  llm: false", "  llm: true"), encoding="utf-8")
    return root


async def test_the_llm_is_asked_with_the_database_free_and_its_answer_applied_after(
        db_url: str, start: datetime, tmp_path: Path) -> None:
    asked, answer = asyncio.Event(), asyncio.Event()

    async def model(body: dict[str, Any]) -> str:
        if "moderate" not in body["messages"][0]["content"]:
            return json.dumps({"intent": "none", "confidence": 0})  # the FAQ's own question
        asked.set()
        await answer.wait()  # the model is still thinking
        text = user_message(body)
        if "manual" in text:
            return "sorry, I cannot help"  # not the JSON asked for
        return json.dumps({"spam": "低价出" in text, "confidence": 0.95})

    server = FakeOpenAI(model)
    url = await server.start()
    harness = await Harness.create(db_url, start, _scripts_asking_the_llm(tmp_path),
                                   llm={"base_url": url, "model": "fake-model", "timeout_seconds": 10})
    try:
        await harness.member_joins_group("seller", GROUP)
        harness.clock.advance(timedelta(hours=1))
        saying = asyncio.create_task(harness.member_says_in_group("seller", GROUP, "低价出"))
        await asyncio.wait_for(asked.wait(), 10)
        # while the model thinks, the message is already held for staff and anyone may write
        async with harness.app.db.session() as session:
            assert [(h.text, h.status) for h in await review_queue(session)] == [("低价出", "held")]

        async def write() -> None:
            async with harness.app.db.session() as session, session.begin():
                await repo.set_value(session, "note", "written while the model thought", harness.clock.now())

        await asyncio.wait_for(write(), 10)  # hangs (and fails) if the guard kept its transaction open
        assert harness.group_log(GROUP) == []
        answer.set()
        await saying
        # the model said spam: deleted and a first strike, as the high band would have done
        assert harness.group_log(GROUP) == ["delete → seller", "say: @seller 测试警告：请勿发广告、链接或刷屏"]
        async with harness.app.db.session() as session:
            (event,) = await guard_events(session)
            assert (event.rule, event.action, event.status) == ("llm", "warn", "acted")
            assert await review_queue(session) == []

        # ordinary talk is released: the hold is cleared and nothing happens in public
        await harness.member_says_in_group("seller", GROUP, "教程在这 https://docs.example.org/guide")
        # no clear answer: it stays held for staff
        await harness.member_says_in_group("seller", GROUP, "说明书 https://manual.example.org/page")
        assert len(harness.group_log(GROUP)) == 2
        async with harness.app.db.session() as session:
            assert [h.text for h in await review_queue(session)] == ["说明书 https://manual.example.org/page"]
            assert len(await guard_events(session)) == 2
    finally:
        await harness.close()
        await server.close()


def test_guard_yaml_names_a_trained_model_next_to_it(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from bot.guard import parse_guard
    from bot.yamlsource import parse_yaml

    (tmp_path / "model.json.gz").write_bytes(train([Sample("加我V领福利", True), Sample("运费多少", False),
                                                    Sample("代购私我", True), Sample("什么时候发货", False)]).to_bytes())
    doc, _ = parse_yaml("classifier:\n  model: model.json.gz\n  act: 0.8\n", str(tmp_path / "guard.yaml"))
    rules, problems = parse_guard(doc)
    assert not problems and rules is not None
    assert rules.classifier.model == str(tmp_path / "model.json.gz") and rules.classifier.act == 0.8
    assert rules.model().trained_on == (2, 2)
    doc, _ = parse_yaml("classifier:\n  act: 2\n", "guard.yaml")
    assert [str(p) for p in parse_guard(doc)[1]] == ["guard.yaml:2: classifier.act must be a number from 0 to 1, got 2"]


async def test_a_new_members_first_messages_are_checked_more_strictly(harness: Harness) -> None:
    await harness.member_joins_group("regular", GROUP)
    harness.clock.advance(timedelta(hours=1))
    await harness.member_says_in_group("regular", GROUP, "低价出")  # a long-standing member: held for staff
    await harness.member_joins_group("fresh", GROUP)
    harness.clock.advance(timedelta(minutes=1))
    await harness.member_says_in_group("fresh", GROUP, "低价出")  # minutes after joining: deleted
    assert harness.group_log(GROUP) == ["delete → fresh", "say: @fresh 测试警告：请勿发广告、链接或刷屏"]
    async with harness.app.db.session() as session:
        assert [h.member for h in await review_queue(session)] == ["regular"]
