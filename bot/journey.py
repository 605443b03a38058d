"""Journeys (SOP talk-tracks) as operators write them in `scripts/journeys/*.yaml`."""
from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date, time, timedelta
from typing import Annotated, Any

from jinja2 import Template
from lunardate import LunarDate
from pydantic import BeforeValidator, Field, ValidationInfo, field_validator

from bot.conditions import Condition, ConditionError, ConditionSchema
from bot.durations import DailyWindow, parse_duration
from bot.facts import CUSTOMER_FIELDS, SAMPLE_CUSTOMER
from bot.problems import Problem
from bot.templates import TemplateProblem, compile_template, render
from bot.validation import FileModel, Loc, Mistake, Voice, clock_time, non_blank, validate
from bot.yamlsource import YamlDocument

EXIT_REASONS = ("replied", "opted_out", "churned", "purchased")
ALWAYS_EXIT = frozenset({"opted_out", "churned"})  # the law and common decency, not an option
OCCASIONS = ("birthday", "festival")
_ID = re.compile(r"^[a-z][a-z0-9_]*$")

CONDITION_SCHEMA = ConditionSchema(
    names={"customer": CUSTOMER_FIELDS},
    functions=frozenset({"replied_since", "has_tag"}),
)
SAMPLE_GUIDE = {"name": "小美", "id": "xiaomei"}


def _sample_replied_since(step_id: str) -> bool:
    return False


def _sample_has_tag(tag: str) -> bool:
    return tag in SAMPLE_CUSTOMER["tags"]


# the condition functions as `siyu check` calls them: the scheduler's take the same arguments
SAMPLE_FUNCTIONS = {"replied_since": _sample_replied_since, "has_tag": _sample_has_tag}


TRIGGER_NAMES = ("contact_added", "manual", "joined_group", "purchased", "churned", "dormant", "transferred")
TRIGGERS_WITH_ARGUMENT = ("tag_added", "level_up", "custom")  # `tag_added:vip`, `level_up:金卡`, `custom:visited`
TRIGGER_HELP = ("contact_added, manual, joined_group, purchased, churned, dormant, transferred, "
                "tag_added:<tag>, level_up:<level> or custom:<event name>")


@dataclass(frozen=True)
class Trigger:
    """What enrols a customer: a lifecycle moment (`contact_added`, `purchased`, `churned`, `dormant` …)
    or one with an argument after the colon (`tag_added:<tag>`, `level_up:<level>`, `custom:<name>`)."""

    kind: str
    argument: str | None = None

    @classmethod
    def parse(cls, text: str) -> "Trigger":
        text = str(text).strip()
        if text in TRIGGER_NAMES:
            return cls(text)
        kind, _, argument = text.partition(":")
        if kind in TRIGGERS_WITH_ARGUMENT and argument.strip():
            return cls(kind, argument.strip())
        raise ValueError(f"unknown trigger {text!r} — use {TRIGGER_HELP}")

    def __str__(self) -> str:
        return f"{self.kind}:{self.argument}" if self.argument else self.kind


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


REPLY_LABELS = ("question", "positive", "negative", "opt_out")  # besides FAQ intent ids
BRANCH_ENDS = ("end", "handoff")  # an on_reply branch goes to a step id or one of these


@dataclass(frozen=True)
class OnReply:
    """What a step listens for: the customer's next reply within `within`, branched by what it means.

    `branches` maps a label (an FAQ intent id, question, positive, negative, opt_out) to a step id of
    the same journey, `end` or `handoff`; the first label of the reply that has a branch wins.
    """

    within: timedelta
    branches: tuple[tuple[str, str], ...]
    lines: tuple[int, ...] = ()  # where each branch is written in the YAML file

    def target(self, labels: Iterable[str]) -> tuple[str, str] | None:
        """(label, target) of the reply's first label with a branch, or None: the journey goes on as planned."""
        branches = dict(self.branches)
        return next(((label, branches[label]) for label in labels if label in branches), None)


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
    when_line: int = 0  # where `when` is written in the YAML file
    on_reply: OnReply | None = None

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
    interests: tuple[tuple[str, str], ...] = ()  # (FAQ intent id, interest): asking about it shows the interest
    interests_line: int = 0

    @property
    def branch_steps(self) -> frozenset[str]:
        """Steps only an `on_reply` branch reaches: not scheduled at enrolment, but from the reply."""
        return frozenset(target for step in self.steps if step.on_reply for _, target in step.on_reply.branches
                         if target not in BRANCH_ENDS)

    def expire_of(self, step: Step) -> timedelta | None:
        return step.expire if step.expire is not None else self.expire

    def step(self, step_id: str) -> Step | None:
        return next((s for s in self.steps if s.id == step_id), None)

    def exits_on(self, reason: str) -> bool:
        return reason in self.exit_when or reason in ALWAYS_EXIT


# --- journey files as operators write them ---

TimeOfDay = time  # a model field named `time` would hide the type inside the class body


def _identifier(value: Any) -> str:
    if not isinstance(value, str) or not _ID.match(value):
        raise Mistake(f"id {value!r} — expected lower-case letters, digits and _, starting with a letter "
                      "(e.g. day3_followup)")
    return value


def _offset(examples: str) -> Any:
    def check(value: Any, info: ValidationInfo) -> timedelta:
        try:
            return parse_duration(value)
        except ValueError:
            raise Mistake(f"has '{info.field_name}: {value}' — expected a duration like {examples}") from None
    return check


def _template(value: Any) -> Template:
    if not isinstance(value, str) or not value.strip():
        raise Mistake("has an empty 'say' — write the message the customer will read")
    try:
        return compile_template(value)
    except TemplateProblem as exc:
        raise Mistake(f"{exc} — {exc.fix or 'check {{ }} and {% %} pairs'}", text_line=exc.line) from None


def _exit_reason(value: Any) -> str:
    if value not in EXIT_REASONS:
        raise Mistake(f"unknown exit reason {value!r} — use {', '.join(EXIT_REASONS)}")
    return str(value)


def _month_day(value: Any, info: ValidationInfo) -> tuple[int, int]:
    text = str(value)
    match = re.fullmatch(r"(\d{1,2})-(\d{1,2})", text)
    lunar = info.field_name == "lunar"
    if not match or all(FestivalDate("", int(match[1]), int(match[2]), lunar).in_year(year) is None
                        for year in (2024, 2025)):  # 02-29 exists in 2024; a lunar 30th in one of them
        raise Mistake(f"festival {info.data.get('name', '')!r} has {info.field_name} {text!r} — expected 'MM-DD'")
    return int(match[1]), int(match[2])


class VariantFile(FileModel):
    """One A/B arm: `{weight: 50, say: ...}`."""

    weight: int = Field(1, gt=0, strict=True)
    say: Template = Field(description="the text customers in this arm read")

    _say = field_validator("say", mode="before")(_template)


class FestivalFile(FileModel):
    """`{name: 双11, date: "11-11"}` or `{name: 春节, lunar: "01-01"}`."""

    name: str = Field(description="what the festival is called, e.g. name: 双11")
    date: tuple[int, int] | None = None
    lunar: tuple[int, int] | None = None

    @field_validator("name", mode="before")
    @classmethod
    def _name(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) else value  # 618 is a festival, YAML reads a number

    _dates = field_validator("date", "lunar", mode="before")(_month_day)

    @classmethod
    def cross_checks(cls, raw: Mapping[str, Any], context: Any) -> list[Mistake]:
        if ("date" in raw) == ("lunar" in raw):
            return [Mistake("needs one of date: 'MM-DD' or lunar: 'MM-DD'")]
        return []

    def festival(self) -> FestivalDate:
        month, day = self.date or self.lunar or (1, 1)
        return FestivalDate(self.name, month, day, self.lunar is not None)


class OnReplyFile(FileModel):
    """`on_reply: {within: 2d, branches: {shipping: price_detail, question: handoff, negative: end}}`."""

    within: timedelta = Field(description="how long after the step its customer's next reply counts, e.g. within: 2d")
    branches: dict[str, str] = Field(min_length=1, description="label: target, e.g. {question: handoff}")

    _within = field_validator("within", mode="before")(_offset("'2d' or '12h'"))

    @field_validator("branches", mode="before")
    @classmethod
    def _branches(cls, value: Any) -> Any:
        if not isinstance(value, Mapping) or not value:
            raise Mistake("branches must be a mapping like {question: handoff, negative: end, shipping: price_info}")
        for label, target in value.items():
            if not isinstance(label, str) or not _ID.match(label):
                raise Mistake(f"branch label {label!r} — use an FAQ intent id or {', '.join(REPLY_LABELS)}")
            if not isinstance(target, str) or not (_ID.match(target)):
                raise Mistake(f"branch {label} goes to {target!r} — use a step id of this journey, end or handoff")
        return dict(value)

    def on_reply(self, key: Loc, doc: YamlDocument) -> OnReply:
        return OnReply(self.within, tuple(self.branches.items()),
                       tuple(doc.key_line(*key, "branches", label) for label in self.branches))


class StepFile(FileModel):
    """One step as written; `cross_checks` holds the rules between its keys."""

    id: str = Field(description="lower-case letters, digits and _, e.g. id: day3_followup")
    at: timedelta | None = None
    on: str | None = None
    time: TimeOfDay | None = None
    dates: list[FestivalFile] | None = None
    say: Template | None = None
    variants: dict[str, VariantFile] | None = None
    window: DailyWindow | None = None
    when: Condition | None = None
    reply: bool = Field(False, strict=True)
    expire: timedelta | None = None
    tag: str | None = None
    on_reply: OnReplyFile | None = None

    _id = field_validator("id", mode="before")(_identifier)
    _at = field_validator("at", mode="before")(_offset("'3d' or '36h'"))
    _expire = field_validator("expire", mode="before")(_offset("'1d' or '12h'"))
    _say = field_validator("say", mode="before")(_template)

    @field_validator("on", mode="before")
    @classmethod
    def _on(cls, value: Any) -> str:
        if value not in OCCASIONS:
            raise Mistake(f"has 'on: {value}' — expected birthday or festival")
        return str(value)

    _time = field_validator("time", mode="before")(clock_time)

    @field_validator("dates", mode="before")
    @classmethod
    def _dates(cls, value: Any) -> Any:
        if not value:
            raise Mistake("has no festival dates, e.g. dates: [{name: 双11, date: '11-11'}]")
        return value

    @field_validator("variants", mode="before")
    @classmethod
    def _variants(cls, value: Any) -> dict[str, Any]:
        if not isinstance(value, Mapping) or not value:
            raise Mistake("variants must be a mapping like {A: {weight: 50, say: ...}, B: {weight: 50, say: ...}}")
        return {str(arm): body for arm, body in value.items()}  # `1:` is an arm name, not a number

    @field_validator("window", mode="before")
    @classmethod
    def _window(cls, value: Any) -> DailyWindow:
        try:
            return DailyWindow.parse(value)
        except ValueError as exc:
            raise Mistake(f"window: {exc}") from None

    @field_validator("when", mode="before")
    @classmethod
    def _when(cls, value: Any) -> Condition:
        if value is None or not str(value).strip():
            raise Mistake("has an empty 'when' — write a condition or remove the key")
        try:
            condition = Condition(str(value), CONDITION_SCHEMA)
            # every part once, on the sample customer: what would raise at send time fails here instead
            condition.check_on({"customer": SAMPLE_CUSTOMER}, SAMPLE_FUNCTIONS)
        except ConditionError as exc:
            raise Mistake(f"when: {exc} — see README 'Conditions'") from None
        return condition

    @field_validator("tag", mode="before")
    @classmethod
    def _tag(cls, value: Any) -> str:
        if not isinstance(value, str) or not value.strip():
            raise Mistake("tag must be a tag name, e.g. tag: 已发见面礼")
        return value.strip()

    @classmethod
    def cross_checks(cls, raw: Mapping[str, Any], context: Any) -> list[Mistake]:
        mistakes = []
        if ("at" in raw) == ("on" in raw):
            mistakes.append(Mistake("needs exactly one of 'at' (offset like '3d') or 'on' (birthday/festival)"))
        if "dates" in raw and raw.get("on") != "festival":
            mistakes.append(Mistake("has 'dates' but is not 'on: festival' — remove it", at=("dates",)))
        if raw.get("on") == "festival" and "dates" not in raw:
            mistakes.append(Mistake("is 'on: festival' but has no 'dates' list, "
                                    "e.g. dates: [{name: 双11, date: '11-11'}]"))
        if ("say" in raw) == ("variants" in raw):
            mistakes.append(Mistake("needs exactly one of 'say' (the message) or 'variants' (A/B texts)"))
        brand = context.get("brand") if isinstance(context, Mapping) else None
        if brand is not None:
            mistakes += _sample_renders(raw, brand)
        return mistakes

    def step(self, key: Loc, doc: YamlDocument) -> Step:
        variants = tuple(Variant(arm, body.weight, body.say, doc.text_line(*key, "variants", arm, "say"))
                         for arm, body in (self.variants or {}).items())
        return Step(self.id, doc.line(*key), self.at, self.on, (self.time or time(10, 0)) if self.on else None,
                    tuple(d.festival() for d in self.dates or ()), self.say, variants, self.window, self.when,
                    self.reply, doc.text_line(*key, "say"), self.expire, self.tag, doc.line(*key, "when"),
                    self.on_reply.on_reply((*key, "on_reply"), doc) if self.on_reply else None)


class JourneyFile(FileModel):
    """A journey file as written (see README 'Writing a journey step')."""

    journey: str = Field(description="the journey's id, e.g. journey: new_customer")
    title: str = Field(description="give the journey a human name, e.g. title: 新客旅程")
    trigger: Trigger = Field(description=TRIGGER_HELP)
    exit_when: list[Annotated[str, BeforeValidator(_exit_reason)]] = []
    priority: int = Field(50, ge=0, le=100, strict=True)
    expire: timedelta | None = None
    interests: dict[str, str] | None = None  # FAQ intent id → the interest a customer who asks it shows
    steps: list[StepFile] = Field(min_length=1, description="a list of steps, see README 'Writing a journey step'")

    _journey = field_validator("journey", mode="before")(_identifier)
    _expire = field_validator("expire", mode="before")(_offset("'1d' or '12h'"))

    _title = field_validator("title", mode="before")(
        non_blank("has an empty 'title' — give the journey a human name, e.g. title: 新客旅程"))

    @field_validator("trigger", mode="before")
    @classmethod
    def _trigger(cls, value: Any) -> Trigger:
        try:
            return Trigger.parse(value)
        except ValueError:
            raise Mistake(f"has 'trigger: {value}' — use {TRIGGER_HELP}") from None

    @field_validator("exit_when", mode="before")
    @classmethod
    def _exit_when(cls, value: Any) -> Any:
        return [] if value is None else value

    @classmethod
    def cross_checks(cls, raw: Mapping[str, Any], context: Any) -> list[Mistake]:
        steps = raw.get("steps")
        ids = [s.get("id") if isinstance(s, Mapping) else None for s in steps] if isinstance(steps, list) else []
        seen: set[str] = set()  # a set, not a scan of the ids before: a huge file must not take quadratic time
        mistakes = []
        for index, step_id in enumerate(ids):
            if isinstance(step_id, str):
                if step_id in seen:
                    mistakes.append(Mistake("is used twice — step ids must be unique", at=("steps", index, "id")))
                seen.add(step_id)
        return mistakes + _branch_mistakes(steps if isinstance(steps, list) else [], seen)

    def journey_in(self, doc: YamlDocument) -> Journey:
        steps = tuple(step.step(("steps", index), doc) for index, step in enumerate(self.steps))
        return Journey(self.journey, self.title, self.trigger, frozenset(self.exit_when), steps, self.priority,
                       doc.path, self.expire, tuple((self.interests or {}).items()), doc.line("interests"))


def _branch_mistakes(steps: list[Any], ids: set[str]) -> list[Mistake]:
    """Every on_reply branch goes somewhere that exists: a step with `at` (not itself), end or handoff."""
    timed = {s.get("id") for s in steps if isinstance(s, Mapping) and "at" in s}
    mistakes = []
    for index, step in enumerate(steps):
        on_reply = step.get("on_reply") if isinstance(step, Mapping) else None
        branches = on_reply.get("branches") if isinstance(on_reply, Mapping) else None
        if not isinstance(branches, Mapping):
            continue
        for label, target in branches.items():
            at: Loc = ("steps", index, "on_reply", "branches", str(label))
            if not isinstance(target, str) or target in BRANCH_ENDS or not _ID.match(target):
                continue
            if target not in ids:
                mistakes.append(Mistake(f"branch {label} goes to {target!r}, which is not a step of this journey — "
                                        f"use a step id, end or handoff", at=at))
            elif target == step.get("id"):
                mistakes.append(Mistake(f"branch {label} goes back to the same step — use another step, end or "
                                        "handoff", at=at))
            elif target not in timed:
                mistakes.append(Mistake(f"branch {label} goes to {target!r}, an occasion step — a branch step needs "
                                        "'at' (its delay after the reply)", at=at))
    return mistakes


def sample_context(brand: Mapping[str, Any], occasion: str | None) -> dict[str, Any]:
    """What a step's text is rendered with by `siyu check`: the sample customer, a guide, the brand."""
    context: dict[str, Any] = {"customer": SAMPLE_CUSTOMER, "guide": SAMPLE_GUIDE, "brand": brand}
    if occasion is not None:
        context["festival"] = {"name": "双11" if occasion == "festival" else "生日", "date": date(2026, 11, 11)}
    return context


def _sample_renders(raw: Mapping[str, Any], brand: Mapping[str, Any]) -> Iterator[Mistake]:
    """Render every text of a step so a typo'd variable fails in `siyu check`, not at 3 a.m."""
    context = sample_context(brand, raw.get("on"))
    texts: list[tuple[Loc, Any]] = [(("say",), raw.get("say"))]
    if isinstance(raw.get("variants"), Mapping):
        texts += [(("variants", str(arm), "say"), body.get("say")) for arm, body in raw["variants"].items()
                  if isinstance(body, Mapping)]
    for at, text in texts:
        if not isinstance(text, str):
            continue
        try:
            template = compile_template(text)
        except TemplateProblem:
            continue  # the text's own validator reports it
        try:
            render(template, context)
        except TemplateProblem as exc:
            fix = exc.fix or "available: customer, guide, brand (and festival on occasion steps)"
            yield Mistake(f"{exc} — {fix}", at=at, text_line=exc.line)


def _step_name(raw: Any, index: int) -> str:
    steps = raw.get("steps") if isinstance(raw, Mapping) else None
    step = steps[index] if isinstance(steps, list) and index < len(steps) else None
    step_id = step.get("id") if isinstance(step, Mapping) else None
    return f"step '{step_id}'" if isinstance(step_id, str) and _ID.match(step_id) else f"step {index + 1}"


def _voice(raw: Any) -> Voice:
    def subject(loc: Loc) -> str:
        if len(loc) >= 2 and loc[0] == "steps" and isinstance(loc[1], int):
            name = _step_name(raw, loc[1])
            return f"{name} variant {loc[3]}" if len(loc) >= 4 and loc[2] == "variants" else name
        # a list item's problem names the item itself ("unknown exit reason 'bored'")
        return "" if not loc or isinstance(loc[-1], int) else "journey"
    return Voice(subject=subject, subject_names_key=False, colon=False, see="see README 'Writing a journey step'")


def parse_journey(doc: YamlDocument, brand: Mapping[str, Any] | None = None) -> tuple[Journey | None, list[Problem]]:
    """Validate one journey document; a journey comes back only when there are no problems.

    With `brand`, every text is also rendered for a sample customer, so unknown variables are problems too.
    """
    journey, problems = validate(JourneyFile, doc.data, doc, _voice(doc.data),
                                 context={"brand": brand} if brand is not None else None)
    return (journey.journey_in(doc) if journey is not None else None), problems
