"""Operator files are untrusted input: hostile scripts are problem lines, never a crash, a hang or a traceback.

Each attack from issue 14 ("Operator files can take the bot down") is saved as a script and then
- checked by `siyu check` as a real subprocess: it finishes, exits 1, prints `PATH:LINE: what — fix`;
- hot-reloaded by a running library: the last good version keeps running, a later good edit loads.
At send time, a text that fails for one customer drops only that customer's touch (`script_error`), the
guide is told once, and everyone else's touches go out.
"""
from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from bot.library import ScriptLibrary
from bot.script_sandbox import ScriptLimits
from storage.models import Contact, Touch, TouchLog
from tests.conftest import ROOT
from tests.harness import CONFIG, SCRIPTS, Harness

BRAND = {"name": "测试品牌", "store": "测试门店", "group_name": "群", "group_link": "https://example.com/g",
         "gift_main": "A", "gift_backup": "B", "claim_keyword": "领取"}

GOOD = ("journey: evil\n"
        "title: 测试旅程\n"
        "trigger: manual\n"
        "steps:\n"
        "  - id: hello\n"
        "    at: 1d\n"
        "    say: 好的版本 {{ customer.name }}\n")


def step(line7: str, line8: str = "") -> str:
    """A journey whose one step has `line7` on line 7 (and `line8` after it)."""
    return ("journey: evil\n"
            "title: 测试旅程\n"
            "trigger: manual\n"
            "steps:\n"
            "  - id: hello\n"
            "    at: 1d\n"
            f"    {line7}\n"
            f"    {line8}\n")


def billion_laughs() -> str:
    anchors = ["lol0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    anchors += [f"lol{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]" for i in range(1, 10)]
    return "journey: evil\ntitle: 笑\ntrigger: manual\n" + "\n".join(anchors) + "\nsteps: []\n"


@dataclass(frozen=True)
class Attack:
    name: str
    text: str | None  # None: written by `write` (too large to hold as one string)
    line: int         # where the problem must be reported
    says: str         # a fragment of the problem line

    def write(self, path: Path) -> None:
        if self.text is not None:
            path.write_text(self.text, encoding="utf-8")
            return
        with path.open("w", encoding="utf-8") as file:  # a 100 MB file: a valid journey, then a huge comment
            file.write(GOOD)
            chunk = "# " + "x" * (1 << 20) + "\n"
            for _ in range(100):
                file.write(chunk)


ATTACKS = [
    Attack("range 10**9", step('say: "{% for i in range(10**9) %}嗨{% endfor %}"'), 7,
           "range of 1,000,000,000 numbers is more than 10,000"),
    Attack("9**(9**9)", step('say: "{{ 9**(9**9) }}"'), 7, "9 ** 387420489 makes a number too large"),
    Attack("huge output by repetition", step("say: \"{{ 'x' * 100000000 }}\""), 7,
           "would make it longer than 20,000 characters"),
    Attack("huge output by a loop", step('say: "{% for i in range(10000) %}{{ customer.name * 1000 }}{% endfor %}"'),
           7, "keep message texts short"),
    Attack("not not … 100,000 times", step('when: "' + "not " * 100_000 + 'customer.replies"', "say: 你好"), 7,
           "characters long, more than 1,000"),
    Attack("unary minus on a string", step("when: \"-customer.name == 'x'\"", "say: 你好"), 7,
           "minus works on numbers only"),
    Attack("YAML nested 50,000 deep", "journey: evil\ntitle: 深\ntrigger: manual\nsteps: "
           + "[" * 50_000 + "]" * 50_000 + "\n", 4, "nested more than 64 levels deep"),
    Attack("billion laughs", billion_laughs(), 8, "more than 100,000 values once its aliases"),
    Attack("100 MB file", None, 1, "larger than 1 MiB"),
]


@pytest.fixture
def scripts(tmp_path: Path) -> Path:
    target = tmp_path / "scripts"
    shutil.copytree(SCRIPTS, target)
    return target


def siyu_check(scripts: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "bot.cli", "check", "--config", str(CONFIG), "--scripts", str(scripts)]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=240, check=False)


def bump(path: Path, seconds: int) -> None:
    """A distinct mtime, as a later save has: two writes within one clock tick can share one."""
    stat = path.stat()
    os.utime(path, (stat.st_atime, stat.st_mtime + seconds))


@pytest.mark.timeout(300)
@pytest.mark.parametrize("attack", ATTACKS, ids=lambda a: a.name)
def test_siyu_check_reports_the_attack_and_finishes(scripts: Path, attack: Attack) -> None:
    path = scripts / "journeys" / "evil.yaml"
    attack.write(path)
    result = siyu_check(scripts)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "Traceback" not in output
    lines = result.stdout.splitlines()
    assert [line for line in lines if line.startswith(f"{path}:")] == [
        line for line in lines if line.startswith(f"{path}:{attack.line}: ") and attack.says in line], output
    assert any(line.startswith(f"{path}:{attack.line}: ") and " — " in line for line in lines), output


@pytest.mark.timeout(300)
@pytest.mark.parametrize("attack", ATTACKS, ids=lambda a: a.name)
def test_reload_keeps_the_last_good_version_and_takes_a_later_good_edit(scripts: Path, attack: Attack) -> None:
    path = scripts / "journeys" / "evil.yaml"
    path.write_text(GOOD, encoding="utf-8")
    library = ScriptLibrary(scripts, BRAND)
    assert library.reload() == []
    good = library.journeys["evil"]

    attack.write(path)
    bump(path, 10)
    problems = library.reload()
    assert [(p.line, attack.says in p.message) for p in problems] == [(attack.line, True)], problems
    assert library.journeys["evil"] is good  # still serving the old version
    assert library.reload() == []  # reported once per edit, not on every pass

    path.write_text(GOOD.replace("好的版本", "改好的版本"), encoding="utf-8")
    bump(path, 20)
    assert library.reload() == []
    assert library.journeys["evil"] is not good
    assert library.journeys["evil"].steps[0].template.render(customer={"name": "林"}) == "改好的版本 林"


def many_steps(count: int) -> str:
    """A journey valid in every respect, but so long that checking it takes many seconds."""
    return ("journey: evil\ntitle: 长\ntrigger: manual\nsteps:\n"
            + "".join(f"  - {{id: s{i}, at: 1d, say: '{{{{ customer.name }}}}{i}'}}\n" for i in range(count)))


@pytest.mark.timeout(300)
async def test_a_check_past_its_time_limit_is_killed_while_the_event_loop_keeps_running(scripts: Path) -> None:
    path = scripts / "journeys" / "evil.yaml"
    path.write_text(GOOD, encoding="utf-8")
    library = ScriptLibrary(scripts, BRAND, limits=ScriptLimits(seconds=2))
    assert library.reload() == []
    good = library.journeys["evil"]

    path.write_text(many_steps(12_000), encoding="utf-8")
    bump(path, 10)
    beats = 0

    async def heartbeat() -> None:
        nonlocal beats
        while True:
            await asyncio.sleep(0.01)
            beats += 1

    beating = asyncio.create_task(heartbeat())
    try:
        problems = await asyncio.to_thread(library.reload)  # as `siyu serve` reloads
    finally:
        beating.cancel()
    assert [str(p) for p in problems] == [
        (f"{path}:1: checking this file took longer than 2 s, so it was stopped — look for long loops or huge texts "
         "in its templates; a running siyu keeps the file's last good version")]
    assert beats >= 10  # the loop (and with it HTTP) ran while the worker was busy
    assert library.journeys["evil"] is good


@pytest.mark.timeout(300)
def test_a_check_past_its_memory_limit_is_a_problem_line(scripts: Path) -> None:
    path = scripts / "journeys" / "evil.yaml"
    path.write_text(many_steps(12_000), encoding="utf-8")
    library = ScriptLibrary(scripts, BRAND, limits=ScriptLimits(memory_bytes=32 << 20))
    problems = library.reload()
    assert len(problems) == 1 and problems[0].path == str(path) and problems[0].line == 1, problems
    assert "more than 32 MiB of memory" in problems[0].message
    assert "evil" not in library.journeys and "new_customer" in library.journeys  # the other files still load


def test_a_fifo_is_refused_not_waited_on(scripts: Path) -> None:
    path = scripts / "journeys" / "evil.yaml"
    os.mkfifo(path)
    problems = ScriptLibrary(scripts, BRAND).reload()
    assert [str(p) for p in problems] == [f"{path}:1: is not a regular file — replace it with a YAML file"]


# --- send time -------------------------------------------------------------------------------------

MEMBER_JOURNEY = """\
journey: member
title: 测试会员旅程
trigger: contact_added
steps:
  - id: greeting
    at: 0m
    reply: true
    say: "问候：{{ customer.name }}"
  - id: member_note
    at: 1d
    window: "10:00-20:00"
    say: |
      会员：{{ customer.name }}，您的第一个标签是{{ customer.tags[0] }}
"""


@pytest.fixture
def member_scripts(tmp_path: Path) -> Path:
    """`customer.tags[0]` passes `siyu check` (the sample customer has a tag) and fails for a customer without."""
    (tmp_path / "member" / "journeys").mkdir(parents=True)
    (tmp_path / "member" / "journeys" / "member.yaml").write_text(MEMBER_JOURNEY, encoding="utf-8")
    return tmp_path / "member"


async def touch_of(h: Harness, customer: str, step_id: str) -> tuple[str, str | None]:
    async with h.app.db.session() as session:
        touch = await session.scalar(select(Touch).join(Contact, Contact.id == Touch.contact_id).where(
            Contact.external_id == customer, Touch.step_id == step_id))
        assert touch is not None
        detail = await session.scalar(select(TouchLog.detail).where(TouchLog.touch_id == touch.id)
                                      .order_by(TouchLog.id.desc()).limit(1))
        return f"{touch.status}:{touch.reason}", detail


@pytest.mark.timeout(300)
async def test_a_text_failing_at_send_time_drops_only_that_touch_and_tells_the_guide(
        db_url: str, start: datetime, member_scripts: Path) -> None:
    h = await Harness.create(db_url, start, member_scripts)  # siyu check passes: asserted by the harness
    try:
        await h.customer_adds_guide("bob", "鲍勃")                    # no tags: his day-1 text cannot render
        await h.customer_adds_guide("amy", "艾米", tags=("vip",))
        await h.customer_adds_guide("cid", "小陈")                    # no tags either: the guide is told once
        await h.run_for(timedelta(days=2))

        assert h.transcript("bob") == ["d0 10:15 问候：鲍勃"]
        assert h.transcript("amy") == ["d0 10:15 问候：艾米", "d1 10:15 会员：艾米，您的第一个标签是vip"]
        assert h.transcript("cid") == ["d0 10:15 问候：小陈"]
        status, detail = await touch_of(h, "bob", "member_note")
        assert status == "dropped:script_error"
        assert detail == (f"{member_scripts / 'journeys' / 'member.yaml'}:13: template: "
                          "list object has no element 0")
        assert (await touch_of(h, "cid", "member_note"))[0] == "dropped:script_error"
        assert h.transcript("guide-xiaomei") == [
            (f"d1 10:15 【话术出错】「测试会员旅程」的步骤 member_note 出错，发给 鲍勃（#1）的这条消息已取消，"
             f"其他顾客照常发送。请运营修改 {member_scripts / 'journeys' / 'member.yaml'}:13 后运行 siyu check；"
             "同一步骤不再逐条提醒。")]
    finally:
        await h.close()


@pytest.mark.timeout(300)
async def test_a_touch_that_keeps_failing_does_not_stop_anyone_elses(
        db_url: str, start: datetime, member_scripts: Path) -> None:
    """An unexpected error (here: a timezone that does not exist, stored before platforms' timezones were
    checked) fails one touch, not the pass."""
    h = await Harness.create(db_url, start, member_scripts)
    try:
        await h.customer_adds_guide("mars", "火星人", tags=("vip",))
        await h.customer_adds_guide("amy", "艾米", tags=("vip",))
        async with h.app.db.session() as session, session.begin():
            await session.execute(update(Contact).where(Contact.external_id == "mars").values(timezone="Mars/Base"))
        await h.run_for(timedelta(days=2))
        assert h.transcript("amy") == ["d0 10:15 问候：艾米", "d1 10:15 会员：艾米，您的第一个标签是vip"]
        assert h.transcript("mars") == ["d0 10:15 问候：火星人"]

        # each pass after its claim expires tries it again, until it has been claimed too often
        lease = timedelta(seconds=h.app.settings.scheduler.lease_seconds + 1)
        for _ in range(6):
            await h.run_for(lease)
        assert (await touch_of(h, "mars", "member_note"))[0] == "dropped:too_many_attempts"
    finally:
        await h.close()


async def test_a_timezone_a_platform_sends_is_checked_where_it_comes_in(
        db_url: str, start: datetime, member_scripts: Path) -> None:
    h = await Harness.create(db_url, start, member_scripts)
    try:
        await h.customer_adds_guide("mars", "火星人", timezone="Mars/Base", tags=("vip",))
        await h.run_for(timedelta(days=2))
        assert h.transcript("mars") == ["d0 10:15 问候：火星人", "d1 10:15 会员：火星人，您的第一个标签是vip"]
    finally:
        await h.close()


def test_a_condition_that_cannot_be_evaluated_is_a_condition_error_not_a_crash() -> None:
    """What the scheduler turns into a `script_error` drop: never a TypeError out of the pass."""
    from bot.conditions import Condition, ConditionError
    from bot.journey import CONDITION_SCHEMA

    condition = Condition("-customer.replies < 0", CONDITION_SCHEMA)
    assert condition.evaluate({"customer": {"replies": 3}})
    with pytest.raises(ConditionError, match="minus works on numbers only, not on NoneType"):
        condition.evaluate({"customer": {"replies": None}})
    with pytest.raises(ConditionError, match="minus works on numbers only"):
        Condition("-'x' == 1", CONDITION_SCHEMA)
