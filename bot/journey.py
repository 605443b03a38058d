"""Journeys (SOP talk-tracks) as operators write them in `scripts/journeys/*.yaml`."""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import date, time, timedelta
from typing import Any

from jinja2 import Template
from lunardate import LunarDate

from bot.conditions import Condition, ConditionError, ConditionSchema
from bot.durations import DailyWindow, parse_clock_time, parse_duration
from bot.problems import Problem
from bot.templates import TemplateProblem, compile_template
from bot.yamlsource import YamlDocument

EXIT_REASONS = ("replied", "opted_out", "churned", "purchased")
ALWAYS_EXIT = frozenset({"opted_out", "churned"})  # the law and common decency, not an option
OCCASIONS = ("birthday", "festival")
_ID = re.compile(r"^[a-z][a-z0-9_]*$")

CUSTOMER_FIELDS = frozenset({
    "id", "name", "tags", "interests", "source", "birthday", "timezone", "replies",
    "days_since_added", "purchased", "channel",
})
CONDITION_SCHEMA = ConditionSchema(
    names={"customer": CUSTOMER_FIELDS},
    functions=frozenset({"replied_since", "has_tag"}),
)


@dataclass(frozen=True)
class Trigger:
    """What enrols a customer: `contact_added`, `manual`, `joined_group` or `tag_added:<tag>`."""

    kind: str
    tag: str | None = None

    @classmethod
    def parse(cls, text: str) -> "Trigger":
        text = str(text).strip()
        if text in ("contact_added", "manual", "joined_group"):
            return cls(text)
        if text.startswith("tag_added:") and text.split(":", 1)[1].strip():
            return cls("tag_added", text.split(":", 1)[1].strip())
        raise ValueError(
            f"unknown trigger {text!r} — use contact_added, manual, joined_group or tag_added:<tag>"
        )

    def __str__(self) -> str:
        return f"tag_added:{self.tag}" if self.tag else self.kind


@dataclass(frozen=True)
class Variant:
    """One arm of an A/B test."""

    name: str
    weight: int
    template: Template
    line: int  # where its text starts in the YAML file


@dataclass(frozen=True)
class FestivalDate:
    """A yearly date, solar (`06-18`) or lunar (春节 is lunar `01-01`)."""

    name: str
    month: int
    day: int
    lunar: bool = False

    def in_year(self, year: int) -> date | None:
        try:
            if self.lunar:
                return LunarDate(year, self.month, self.day).to_solar_date()
            return date(year, self.month, self.day)
        except ValueError:
            return None  # 02-29 in a common year, or a lunar day that year lacks

    def next_on_or_after(self, day: date) -> date | None:
        for year in (day.year - 1, day.year, day.year + 1):
            found = self.in_year(year)
            if found is not None and found >= day:
                return found
        return None


@dataclass(frozen=True)
class Step:
    """One message in a journey, due `at` after enrolment or `on` an occasion."""

    id: str
    line: int
    at: timedelta | None = None
    on: str | None = None
    time_of_day: time | None = None
    dates: tuple[FestivalDate, ...] = ()
    template: Template | None = None
    variants: tuple[Variant, ...] = ()
    window: DailyWindow | None = None
    when: Condition | None = None
    reply: bool = False
    say_line: int = 0  # where `say` text starts in the YAML file
    expire: timedelta | None = None
    tag: str | None = None  # added to the customer when the step is sent (and written to the platform)

    def text_line(self, variant: Variant | None) -> int:
        return variant.line if variant is not None else self.say_line

    def choose_variant(self, journey_id: str, contact_id: int) -> Variant | None:
        """Deterministic per customer: the same person always lands in the same arm."""
        if not self.variants:
            return None
        total = sum(v.weight for v in self.variants)
        digest = hashlib.sha256(f"{journey_id}:{self.id}:{contact_id}".encode()).digest()
        point = int.from_bytes(digest[:8], "big") % total
        for variant in self.variants:
            if point < variant.weight:
                return variant
            point -= variant.weight
        return self.variants[-1]

    def template_for(self, variant: Variant | None) -> Template:
        if variant is not None:
            return variant.template
        assert self.template is not None  # guaranteed by the parser: say or variants
        return self.template


@dataclass(frozen=True)
class Journey:
    """A validated journey: safe to run."""

    id: str
    title: str
    trigger: Trigger
    exit_when: frozenset[str]
    steps: tuple[Step, ...]
    priority: int
    path: str
    expire: timedelta | None = None

    def expire_of(self, step: Step) -> timedelta | None:
        return step.expire if step.expire is not None else self.expire

    def step(self, step_id: str) -> Step | None:
        return next((s for s in self.steps if s.id == step_id), None)

    def exits_on(self, reason: str) -> bool:
        return reason in self.exit_when or reason in ALWAYS_EXIT


class _JourneyParser:
    """Walks one journey document, collecting every problem rather than stopping at the first."""

    def __init__(self, doc: YamlDocument) -> None:
        self.doc = doc
        self.problems: list[Problem] = []

    def fail(self, key: tuple[str | int, ...], message: str) -> None:
        self.problems.append(self.doc.problem(key, message))

    def parse(self) -> Journey | None:
        data = self.doc.data
        if not isinstance(data, dict):
            self.fail((), "a journey file must be a mapping with journey, title, trigger and steps")
            return None
        for key in sorted(set(data) - {"journey", "title", "trigger", "exit_when", "steps", "priority", "expire"}):
            self.fail((key,), f"unknown key '{key}' — expected journey, title, trigger, exit_when, "
                              "priority, expire or steps")
        journey_id = self._identifier(data, ("journey",), "journey")
        title = data.get("title")
        if not isinstance(title, str) or not title.strip():
            self.fail(("title",), "missing 'title' — give the journey a human name, e.g. title: 新客旅程")
        trigger = None
        try:
            trigger = Trigger.parse(data.get("trigger", ""))
        except ValueError as exc:
            self.fail(("trigger",), str(exc))
        exit_when = self._exit_when(data.get("exit_when", []))
        priority = data.get("priority", 50)
        if not isinstance(priority, int) or isinstance(priority, bool) or not 0 <= priority <= 100:
            self.fail(("priority",), f"priority {priority!r} — expected a whole number from 0 to 100")
        expire = self._expire(data, ("expire",), "journey")
        steps = self._steps(data.get("steps"))
        if self.problems or journey_id is None or trigger is None:
            return None
        return Journey(journey_id, str(title).strip(), trigger, exit_when, tuple(steps), priority, self.doc.path,
                       expire)

    def _expire(self, data: dict[str, Any], key: tuple[str | int, ...], name: str) -> timedelta | None:
        if "expire" not in data:
            return None
        try:
            return parse_duration(data["expire"])
        except ValueError:
            self.fail(key, f"{name} has 'expire: {data['expire']}' — expected a duration like '1d' or '12h'")
            return None

    def _identifier(self, data: dict[str, Any], key: tuple[str | int, ...], what: str) -> str | None:
        value = data.get(key[-1])
        if not isinstance(value, str) or not _ID.match(value):
            self.fail(key, f"{what} id {value!r} — expected lower-case letters, digits and _, "
                           "starting with a letter (e.g. day3_followup)")
            return None
        return value

    def _exit_when(self, value: Any) -> frozenset[str]:
        if value is None:
            return frozenset()
        if not isinstance(value, list):
            self.fail(("exit_when",), "exit_when must be a list, e.g. [replied, opted_out, churned]")
            return frozenset()
        for i, reason in enumerate(value):
            if reason not in EXIT_REASONS:
                self.fail(("exit_when", i), f"unknown exit reason {reason!r} — use {', '.join(EXIT_REASONS)}")
        return frozenset(r for r in value if r in EXIT_REASONS)

    def _steps(self, value: Any) -> list[Step]:
        if not isinstance(value, list) or not value:
            self.fail(("steps",), "a journey needs a non-empty 'steps' list")
            return []
        steps: list[Step] = []
        seen: set[str] = set()
        for index, raw in enumerate(value):
            step = self._step(index, raw)
            if step is None:
                continue
            if step.id in seen:
                self.fail(("steps", index, "id"), f"step id '{step.id}' is used twice — ids must be unique")
            seen.add(step.id)
            steps.append(step)
        return steps

    def _step(self, index: int, raw: Any) -> Step | None:
        key: tuple[str | int, ...] = ("steps", index)
        if not isinstance(raw, dict):
            self.fail(key, "each step must be a mapping with at least id, at and say")
            return None
        before = len(self.problems)
        allowed = {"id", "at", "on", "time", "dates", "say", "variants", "window", "when", "reply", "expire", "tag"}
        for extra in sorted(set(raw) - allowed):
            self.fail(key + (extra,), f"unknown step key '{extra}' — expected one of {', '.join(sorted(allowed))}")
        step_id = self._identifier(raw, key + ("id",), "step")
        name = f"step '{step_id or index + 1}'"

        at = on = None
        time_of_day = None
        dates: tuple[FestivalDate, ...] = ()
        if ("at" in raw) == ("on" in raw):
            self.fail(key, f"{name} needs exactly one of 'at' (offset like '3d') or 'on' (birthday/festival)")
        elif "at" in raw:
            try:
                at = parse_duration(raw["at"])
            except ValueError:
                self.fail(key + ("at",), f"{name} has 'at: {raw['at']}' — expected a duration like '3d' or '36h'")
        else:
            on = raw["on"]
            if on not in OCCASIONS:
                self.fail(key + ("on",), f"{name} has 'on: {on}' — expected birthday or festival")
            time_of_day = self._time(raw, key, name)
            if on == "festival":
                dates = self._festival_dates(raw.get("dates"), key, name)
        if "dates" in raw and on != "festival":
            self.fail(key + ("dates",), f"{name} has 'dates' but is not 'on: festival' — remove it")

        template, variants = self._say(raw, key, name)
        window = None
        if "window" in raw:
            try:
                window = DailyWindow.parse(raw["window"])
            except ValueError as exc:
                self.fail(key + ("window",), f"{name} window: {exc}")
        when = None
        if "when" in raw:
            try:
                when = Condition(str(raw["when"]), CONDITION_SCHEMA)
            except ConditionError as exc:
                self.fail(key + ("when",), f"{name} when: {exc} — see README 'Conditions'")
        expire = self._expire(raw, key + ("expire",), name)
        tag = raw.get("tag")
        if tag is not None and (not isinstance(tag, str) or not tag.strip()):
            self.fail(key + ("tag",), f"{name} tag must be a tag name, e.g. tag: 已发见面礼")
        reply = raw.get("reply", False)
        if not isinstance(reply, bool):
            self.fail(key + ("reply",), f"{name} reply must be true or false")
        if len(self.problems) > before or step_id is None:
            return None
        return Step(step_id, self.doc.line(*key), at, on, time_of_day, dates, template, variants,
                    window, when, bool(reply), self.doc.text_line(*key, "say"), expire,
                    tag.strip() if isinstance(tag, str) else None)

    def _time(self, raw: dict[str, Any], key: tuple[str | int, ...], name: str) -> time:
        try:
            return parse_clock_time(raw.get("time", "10:00"))
        except ValueError as exc:
            self.fail(key + ("time",), f"{name} time: {exc}")
            return time(10, 0)

    def _festival_dates(self, value: Any, key: tuple[str | int, ...], name: str) -> tuple[FestivalDate, ...]:
        if not isinstance(value, list) or not value:
            self.fail(key + ("dates",), f"{name} is 'on: festival' but has no 'dates' list, "
                                        "e.g. dates: [{name: 双11, date: '11-11'}]")
            return ()
        found = []
        for i, item in enumerate(value):
            where = key + ("dates", i)
            if not isinstance(item, dict) or "name" not in item or ("date" in item) == ("lunar" in item):
                self.fail(where, f"{name} festival needs a name and one of date: 'MM-DD' or lunar: 'MM-DD'")
                continue
            text = str(item.get("date", item.get("lunar")))
            match = re.fullmatch(r"(\d{1,2})-(\d{1,2})", text)
            festival = None
            if match:
                festival = FestivalDate(str(item["name"]), int(match[1]), int(match[2]), "lunar" in item)
                if festival.in_year(2024) is None and festival.in_year(2025) is None:
                    festival = None
            if festival is None:
                self.fail(where, f"{name} festival {item['name']!r} has date {text!r} — expected 'MM-DD'")
                continue
            found.append(festival)
        return tuple(found)

    def _say(self, raw: dict[str, Any], key: tuple[str | int, ...],
             name: str) -> tuple[Template | None, tuple[Variant, ...]]:
        if ("say" in raw) == ("variants" in raw):
            self.fail(key, f"{name} needs exactly one of 'say' (the message) or 'variants' (A/B texts)")
            return None, ()
        if "say" in raw:
            return self._template(raw["say"], key + ("say",), name), ()
        arms = raw["variants"]
        if not isinstance(arms, dict) or not arms:
            self.fail(key + ("variants",), f"{name} variants must be a mapping like "
                                           "{A: {weight: 50, say: ...}, B: {weight: 50, say: ...}}")
            return None, ()
        variants = []
        for arm, body in arms.items():
            where = key + ("variants", str(arm))
            if not isinstance(body, dict) or "say" not in body:
                self.fail(where, f"{name} variant {arm} needs 'say' and 'weight'")
                continue
            weight = body.get("weight", 1)
            if not isinstance(weight, int) or isinstance(weight, bool) or weight <= 0:
                self.fail(where + ("weight",), f"{name} variant {arm} has weight {weight!r} — expected a positive whole number")
                continue
            template = self._template(body["say"], where + ("say",), name)
            if template is not None:
                variants.append(Variant(str(arm), weight, template, self.doc.text_line(*where, "say")))
        return None, tuple(variants)

    def _template(self, text: Any, key: tuple[str | int, ...], name: str) -> Template | None:
        if not isinstance(text, str) or not text.strip():
            self.fail(key, f"{name} has an empty 'say' — write the message the customer will read")
            return None
        try:
            return compile_template(text)
        except TemplateProblem as exc:
            line = self.doc.text_line(*key) + exc.line - 1
            self.problems.append(Problem(self.doc.path, line, f"{name} {exc} — check {{{{ }}}} and {{% %}} pairs"))
            return None


def parse_journey(doc: YamlDocument) -> tuple[Journey | None, list[Problem]]:
    """Validate one journey document; a journey comes back only when there are no problems."""
    parser = _JourneyParser(doc)
    journey = parser.parse()
    return journey, parser.problems
