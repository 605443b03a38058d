"""`make demo`: a demo brand's 60 days of history in its own database (var/demo.db), then the console on it.

Nothing here is an invented number. Simulated people act on a virtual clock and the real engine,
scheduler, touch policy, FAQ cascade and group guard decide and record everything, as in
`siyu simulate`. The people react to what they receive (the day-3 gift of variant A is claimed more
often than B's), ask questions (some answered, some handed to the guide, who answers a few through
the console's own workspace), buy, opt out or remove their guide; members of the demo group chat,
and a few advertisers post spam for the guard.

The history is built in a file beside var/demo.db and moved into place when complete (never into the
database of config.yaml or SIYU_DATABASE_URL), and the scripts are a copy in var/demo-scripts/, so
teaching the demo bot leaves scripts/ alone.
"""
from __future__ import annotations

import argparse
import asyncio
import heapq
import os
import random
import secrets
import shutil
import sys
import time
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy import select

from bot.app import App
from bot.clock import SystemClock, VirtualClock
from bot.config_loader import load_config
from bot.events import Action, ChatType, Event, EventKind, Profile, Role
from bot.staff_accounts import StaffAccounts
from bot.transport import FOREVER, DedupesRepeats
from storage.db import Database
from storage.models import Contact, Message, Touch
from storage.repo import next_due_at

CHANNEL = "webchat"          # the demo's customers are web chat customers: the console can reply to them
GROUP = "demo"               # the web chat's demo group (adapters.webchat.demo_group)
DAYS = 60
CUSTOMERS = 120
FRESH_FOR = timedelta(hours=12)  # `make demo` reuses a history seeded this recently
DEMO_PORT = 8090
GUIDE = "xiaomei"
OPERATOR = "aqing"

_SURNAMES = "林王陈张李刘杨黄赵吴周徐孙马朱胡郭何高罗宋郑梁谢韩唐冯董萧程曹袁邓许傅沈曾彭吕苏卢蒋蔡贾丁魏薛叶阎余潘杜戴夏钟汪田任姜范方石姚谭廖邹熊金陆郝孔白崔康毛邱秦江史顾侯邵孟龙万段雷钱汤尹黎易常武乔贺赖龚文"
_TITLES = ("小姐", "女士", "先生", "同学", "姐", "")
_GIVEN = ("晓", "雨", "佳", "思", "欣", "梦", "婷", "静", "琳", "悦", "可", "安")
_SOURCES = ("门店扫码", "小红书", "直播间", "朋友推荐", "官网在线咨询")
_INTERESTS = ("sensitive", "whitening", "anti_aging", "hydrating")
# questions the FAQ does not cover: each list is one need, asked in several ways (the gaps cluster them)
_UNANSWERED = (
    ("你们和雅诗兰黛小棕瓶比哪个好用", "跟小棕瓶比怎么样", "和雅诗兰黛的精华比哪个好"),
    ("面霜有点搓泥是什么原因", "为什么用了面霜会搓泥", "上脸搓泥怎么办"),
    ("孕妇可以用精华吗", "怀孕了还能用吗", "哺乳期可以用吗"),
    ("可以寄到香港吗", "发不发香港", "能寄到国外吗"),
    ("男生可以用这个吗", "我男朋友能用吗"),
)
_PARAPHRASES = ("请问包邮不", "大概几天能发货呀", "敏感皮可以用吗", "优惠券在哪里领", "你们实体店在哪", "不喜欢可以退吗")
_GUIDE_ANSWERS = (
    "您好，我是小美～这个问题我帮您问了研发同事：两款定位不同，我们的更适合换季修护，稍后发您对比图哈。",
    "您好～搓泥一般是叠加太快或用量太多，建议精华吸收一分钟后再上面霜，用黄豆大小就够啦。",
    "孕期和哺乳期建议先咨询医生哦；我们的修护精华不含视黄醇和水杨酸，成分表我发您看看～",
    "目前只发中国大陆地区哦，港澳台和海外暂时不能寄，抱歉～",
    "男生当然可以用～油皮的话早上用一泵就好，清爽不黏。",
)
_GROUP_CHAT = ("今天的直播几点开始呀", "谢谢分享～", "这个精华真的好用，回购第三瓶了", "有人试过新出的面膜吗",
               "早上好呀姐妹们", "618 有什么活动吗", "收到货啦，包装好精致", "敏感肌用了一周没有泛红👍",
               "请问群里的福利怎么领", "周末门店人多吗")
_SPAM = (("兼职日结，手机就能做，有意加我微信", "text"), ("➕V信领取免费面膜，名额有限", "text"),
         ("高仿大牌一手货源，私聊", "text"), ("点这里领红包 http://t.cn/A6xYz9 先到先得", "text"),
         ("", "qr_code"), ("带你赚钱，稳赚不赔，日赚三百", "text"))
_LATE_ASKERS = (10, 11, 12, 13, 20)  # customer indexes whose questions wait in the inbox at the end
_REPLIES = {  # step → (chance of a reply per variant or "*", reply texts)
    "greeting": ({"*": 0.5}, ("你好呀", "谢谢", "好的谢谢")),
    "day1_care": ({"*": 0.2}, ("最近有点干燥", "T 区容易出油，两颊泛红", "主要是暗沉")),  # for the guide
    "day3_followup": ({"A": 0.46, "B": 0.27, "*": 0.3}, ("领取", "我要领取", "领取见面礼")),
    "day7_followup": ({"*": 0.16}, ("领取", "想要领取")),
    "day30_interest": ({"*": 0.15}, ("好呀发我看看", "想了解一下")),
    "birthday": ({"*": 0.6}, ("谢谢", "好的谢谢")),
}


@dataclass(order=True)
class Act:
    """Something a simulated person does at a virtual time."""

    at: datetime
    seq: int
    kind: str = field(compare=False)  # add | say | buy | remove | join | post | guide_reply | release
    who: str = field(compare=False)
    text: str = field(default="", compare=False)
    content_type: str = field(default="text", compare=False)
    profile: Profile | None = field(default=None, compare=False)


class _Sink(DedupesRepeats):
    """The demo's web chat while seeding: nobody is connected, so delivering is accepting."""

    channel = CHANNEL

    def repeat_window(self, action: Action) -> timedelta | None:
        return FOREVER

    async def deliver(self, action: Action) -> None:
        return None


class DemoHistory:
    """Plays `customers` people over `days` ending at `end` through the real engine."""

    def __init__(self, app: App, clock: VirtualClock, end: datetime, days: int, customers: int, seed: int) -> None:
        self.app = app
        self.clock = clock
        self.end = end
        self.start = end - timedelta(days=days)
        self.rng = random.Random(seed)
        self.zone = ZoneInfo(app.settings.policy.timezone)
        self.acts: list[Act] = []
        self._seq = 0
        self._seen_touch_message = 0
        self._contact_of: dict[str, int] = {}
        self._customers = customers
        self.keep_waiting: set[str] = set()  # the guide answers these in the console, not the simulation
        self.days = days

    # --- the plan ---

    def _plan(self, at: datetime, kind: str, who: str, text: str = "", **extra: object) -> None:
        if at <= self.end:
            self._seq += 1
            heapq.heappush(self.acts, Act(at, self._seq, kind, who, text, **extra))  # type: ignore[arg-type]

    def _daytime(self, day: datetime, earliest: int = 8, latest: int = 23) -> datetime:
        local = day.astimezone(self.zone).replace(hour=0, minute=0, second=0, microsecond=0)
        return local + timedelta(minutes=self.rng.randrange(earliest * 60, latest * 60))

    def plan_people(self) -> None:
        rng = self.rng
        faq_examples = [e for intent in self.app.library.catalog.intents if intent.id != "hello"
                        for e in intent.examples[:3]]
        for index in range(self._customers):
            who = f"c_demo{index:04d}"
            added = self._daytime(self.start + timedelta(days=rng.random() * (self.days - 0.2)))
            if index in _LATE_ASKERS and added > self.end - timedelta(days=2):
                added -= timedelta(days=7)  # they are customers already when they ask in the last hours
            birthday = None
            if rng.random() < 0.12:  # some birthdays fall inside the history
                day = (added + timedelta(days=rng.randrange(2, 40))).date()
                birthday = date(rng.randrange(1978, 2004), day.month, min(day.day, 28))
            name = rng.choice(_SURNAMES) + (rng.choice(_TITLES) or rng.choice(_GIVEN) + rng.choice(_GIVEN))
            tags = ("high_value",) if rng.random() < 0.15 else ()
            profile = Profile(name=name, source=rng.choice(_SOURCES), birthday=birthday, tags=tags,
                              interests=tuple(rng.sample(_INTERESTS, rng.choice((0, 1, 1, 2)))))
            self._plan(added, "add", who, profile=profile)
            for _ in range(rng.choice((0, 0, 1, 1, 2, 3))):  # questions over their first weeks
                asked = self._daytime(added + timedelta(days=rng.uniform(0.1, 25)))
                roll = rng.random()
                if roll < 0.22:
                    question = rng.choice(rng.choice(_UNANSWERED))
                elif roll < 0.35:
                    question = rng.choice(_PARAPHRASES)
                else:
                    question = rng.choice(faq_examples)
                self._plan(asked, "say", who, question)
            if rng.random() < 0.05:
                self._plan(added + timedelta(days=rng.uniform(3, 20)), "say", who, "退订")
            if rng.random() < 0.08:
                self._plan(added + timedelta(days=rng.uniform(2, 40)), "remove", who)
            if rng.random() < 0.04:
                self._plan(added + timedelta(days=rng.uniform(5, 50)), "buy", who)
            if rng.random() < 0.3:  # a member of the demo group too
                joined = added + timedelta(days=rng.uniform(1, 6))
                self._plan(joined, "join", who, profile=Profile(name=name))
                for _ in range(rng.randrange(0, 5)):
                    self._plan(self._daytime(joined + timedelta(days=rng.uniform(0, 50))), "post", who,
                               rng.choice(_GROUP_CHAT))
        for index in range(self.days // 3):  # an advertiser every few days: joins, posts within minutes
            who = f"c_spam{index:03d}"
            joined = self._daytime(self.start + timedelta(days=rng.uniform(1, self.days - 0.5)))
            self._plan(joined, "join", who, profile=Profile(name=rng.choice(("福利官", "小助手", "美妆代购", "兼职招聘"))))
            text_, kind = rng.choice(_SPAM)
            for n in range(rng.choice((1, 1, 2, 4))):  # some keep posting: warn, mute, remove
                self._plan(joined + timedelta(minutes=2 + 3 * n), "post", who, text_, content_type=kind)
        # the last hours: hand-offs still waiting for the guide (the inbox's top), one the guide has taken
        for n, minutes in enumerate((110, 70, 35, 12)):
            who = f"c_demo{n + 10:04d}"
            self._plan(self.end - timedelta(minutes=minutes), "say", who, rng.choice(rng.choice(_UNANSWERED)))
            self.keep_waiting.add(who)
        taken = "c_demo0020"
        self._plan(self.end - timedelta(minutes=75), "say", taken, _UNANSWERED[2][0])
        self._plan(self.end - timedelta(minutes=60), "guide_reply", taken, _GUIDE_ANSWERS[2])
        self._plan(self.end - timedelta(minutes=50), "say", taken, "好的，那我先问问医生，谢谢你")
        self.keep_waiting.add(taken)
        regular = "c_demo0001"  # a real customer whose group offer looks like an ad: a case for "not spam"
        posted = self._daytime(self.end - timedelta(days=2), latest=20)
        self._plan(posted - timedelta(days=3), "join", regular, profile=Profile(name="老顾客小林"))
        self._plan(posted, "post", regular, "团购的姐妹加我微信，我拉群一起拼单更便宜")

    # --- playing it ---

    async def run(self, progress: bool = True) -> None:
        last_report = 0.0
        while True:
            async with self.app.db.session() as session:
                due = await next_due_at(session)
            candidates = [t for t in (self.acts[0].at if self.acts else None, due) if t is not None]
            if not candidates or min(candidates) > self.end:
                break
            moment = max(min(candidates), self.clock.now())
            self.clock.set(moment)
            while self.acts and self.acts[0].at <= moment:
                await self._act(heapq.heappop(self.acts))
            await self.app.tick()
            await self._react_to_touches()
            if progress and time.monotonic() - last_report > 5:
                last_report = time.monotonic()
                done = (moment - self.start) / (self.end - self.start)
                print(f"  … {moment.astimezone(self.zone):%m-%d}（{done:.0%}）", flush=True)
        self.clock.set(self.end)
        await self.app.tick()

    async def _act(self, act: Act) -> None:
        now = self.clock.now()
        self._seq += 1
        message_id = f"demo-{self._seq}"
        if act.kind == "add":
            await self.app.engine.handle(Event(EventKind.CONTACT_ADDED, CHANNEL, act.who, now,
                                               profile=act.profile or Profile()))
        elif act.kind == "say":
            await self.app.engine.handle(Event(EventKind.MESSAGE, CHANNEL, act.who, now, text=act.text,
                                               message_id=message_id))
            await self._maybe_guide_answers(act)
            if "领取" in act.text:
                if self.rng.random() < 0.38:  # the gift brings some to buy
                    self._plan(now + timedelta(days=self.rng.uniform(0.5, 4)), "buy", act.who)
        elif act.kind == "buy":
            await self.app.engine.handle(Event(EventKind.PURCHASED, CHANNEL, act.who, now, message_id=message_id))
        elif act.kind == "remove":
            await self.app.engine.handle(Event(EventKind.CONTACT_REMOVED, CHANNEL, act.who, now))
        elif act.kind == "join":
            await self.app.engine.handle(Event(EventKind.JOINED_GROUP, CHANNEL, act.who, now, ChatType.GROUP, GROUP,
                                               profile=act.profile or Profile()))
        elif act.kind == "post":
            await self.app.engine.handle(Event(EventKind.MESSAGE, CHANNEL, act.who, now, ChatType.GROUP, GROUP,
                                               text=act.text, message_id=message_id, content_type=act.content_type,
                                               sender_role=Role.CUSTOMER))
        elif act.kind in ("guide_reply", "release"):
            await self._guide(act)

    async def _maybe_guide_answers(self, act: Act) -> None:
        """A handed-off question: the guide answers most of them from the console, later; recent ones wait."""
        async with self.app.db.session() as session:
            handed = await session.scalar(select(Message.id).where(
                Message.chat_id == act.who, Message.direction == "out", Message.handoff.is_(True),
                Message.created_at >= self.clock.now()))
        if handed is None:
            return
        now = self.clock.now()
        if act.who in self.keep_waiting or self.end - now < timedelta(hours=10) or self.rng.random() < 0.25:
            return  # still waiting in the inbox (or left to time out)
        need = next((i for i, asks in enumerate(_UNANSWERED) if act.text in asks), None)
        answer = _GUIDE_ANSWERS[need] if need is not None else "您好，我是小美～这个问题我来帮您解答，稍等我确认一下细节哈。"
        replied = now + timedelta(minutes=self.rng.randrange(6, 90))
        self._plan(replied, "guide_reply", act.who, answer)
        if self.rng.random() < 0.7:
            self._plan(replied + timedelta(minutes=self.rng.randrange(10, 60)), "release", act.who)

    async def _guide(self, act: Act) -> None:
        """What the guide does in the console: the console's own workspace, as a logged-in guide."""
        from console.auth import Staffer
        from console.workspace import Workspace

        contact_id = await self._contact_id(act.who)
        if contact_id is None:
            return
        workspace = Workspace(self.app)
        guide = Staffer(GUIDE, self.app.settings.guide(GUIDE).name if self.app.settings.guide(GUIDE) else GUIDE, "guide")
        if act.kind == "guide_reply":
            await workspace.reply(guide, contact_id, act.text)
        else:
            await workspace.release(guide, contact_id)

    async def _contact_id(self, who: str) -> int | None:
        if who not in self._contact_of:
            async with self.app.db.session() as session:
                found = await session.scalar(select(Contact.id).where(Contact.channel == CHANNEL,
                                                                      Contact.external_id == who))
            if found is None:
                return None
            self._contact_of[who] = found
        return self._contact_of[who]

    async def _react_to_touches(self) -> None:
        """Customers answer some journey messages, by step and variant, a little later."""
        async with self.app.db.session() as session:
            rows = (await session.execute(
                select(Message.id, Message.chat_id, Message.created_at, Touch.step_id, Touch.variant)
                .join(Touch, Touch.id == Message.touch_id)
                .where(Message.id > self._seen_touch_message, Message.channel == CHANNEL,
                       Message.chat_type == ChatType.DIRECT.value)
                .order_by(Message.id))).all()
        for message_id, chat_id, at, step, variant in rows:
            self._seen_touch_message = message_id
            chances, texts = _REPLIES.get(step, ({"*": 0.08}, ("好的谢谢", "谢谢")))
            chance = chances.get(variant or "*", chances.get("*", 0.1))
            if self.rng.random() < chance:
                self._plan(at + timedelta(minutes=self.rng.randrange(4, 600)), "say", chat_id, self.rng.choice(texts))


async def seed(target: Path, scripts: Path, config: Path, end: datetime, days: int = DAYS,
               customers: int = CUSTOMERS, seed_value: int = 7, progress: bool = True) -> None:
    """Build the history in a file beside `target`, then move it into place (a half-built one never stays)."""
    partial = target.with_name(target.name + ".partial")
    for leftover in (partial, *(partial.with_name(partial.name + suffix) for suffix in ("-wal", "-shm"))):
        leftover.unlink(missing_ok=True)
    settings = load_config(config).model_copy(update={"database_url": f"sqlite+aiosqlite:///{partial}"})
    clock = VirtualClock(end - timedelta(days=days))
    app = App(settings, scripts, clock, worker_id="demo")
    app.add_transport(_Sink())
    try:
        problems = await app.start()
        if problems:
            raise SystemExit("\n".join(str(p) for p in problems))
        history = DemoHistory(app, clock, end, days, customers, seed_value)
        history.plan_people()
        await history.run(progress)
    finally:
        await app.close()  # the last connection closing folds the write-ahead log into the file
    for stale in (target.with_name(target.name + "-wal"), target.with_name(target.name + "-shm")):
        stale.unlink(missing_ok=True)
    os.replace(partial, target)


async def set_passwords(database_url: str, config: Path, password: str) -> None:
    """The demo's operator and guide log in with `password` (as `siyu staff password` sets it)."""
    settings = load_config(config)
    db = Database(database_url)
    try:
        await db.upgrade()
        accounts = StaffAccounts(db, SystemClock(), known={member.id for member in settings.staff})
        for member in (OPERATOR, GUIDE):
            await accounts.set_password(member, password)
    finally:
        await db.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bot.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--fresh", action="store_true", help="seed again even if var/demo.db is recent")
    parser.add_argument("--seed-only", action="store_true", help="seed, print the login, do not serve")
    parser.add_argument("--customers", type=int, default=CUSTOMERS)
    parser.add_argument("--port", type=int, default=DEMO_PORT)
    args = parser.parse_args(argv)
    root = Path.cwd()
    var = root / "var"
    var.mkdir(exist_ok=True)
    target = var / "demo.db"
    scripts = var / "demo-scripts"
    config = root / "config.yaml"
    database_url = f"sqlite+aiosqlite:///{target}"

    fresh_enough = target.exists() and time.time() - target.stat().st_mtime < FRESH_FOR.total_seconds()
    if args.fresh or not fresh_enough or not scripts.exists():
        print(f"siyu demo: simulating {args.customers} customers over {DAYS} days into {target} "
              "(the real engine on a virtual clock; a few minutes)…", flush=True)
        shutil.rmtree(scripts, ignore_errors=True)
        shutil.copytree(root / "scripts", scripts)
        started = time.monotonic()
        asyncio.run(seed(target, scripts, config, SystemClock().now(), customers=args.customers))
        print(f"siyu demo: seeded in {time.monotonic() - started:.0f}s", flush=True)
    else:
        print(f"siyu demo: reusing {target} (seeded less than 12 hours ago; --fresh to redo)", flush=True)

    password = os.environ.get("SIYU_DEMO_PASSWORD") or secrets.token_urlsafe(9)
    asyncio.run(set_passwords(database_url, config, password))
    print("\n  演示控制台: http://127.0.0.1:%d/console" % args.port)
    print(f"  运营账号 {OPERATOR} / 导购账号 {GUIDE}，密码（仅本次演示）：{password}\n", flush=True)
    if args.seed_only:
        return 0
    os.environ["SIYU_DATABASE_URL"] = database_url  # the demo's own file, whatever the shell had
    from bot.cli import main as siyu

    return siyu(["serve", "--scripts", str(scripts), "--port", str(args.port)])


if __name__ == "__main__":  # multiprocessing forkserver: scripts are checked in a worker process
    sys.exit(main())
