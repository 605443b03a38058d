"""The group guard (群防骚扰): content and rate rules, and how punishment escalates.

Pure logic: the engine loads recent history from storage and asks here what to do.
"""
from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Annotated, Any

from jinja2 import Template
from pydantic import BeforeValidator, Field, field_validator
from rapidfuzz import fuzz

from bot.durations import parse_duration
from bot.problems import Problem
from bot.templates import TemplateProblem, compile_template
from bot.validation import FileModel, Loc, Mistake, Voice, dotted, validate
from bot.yamlsource import YamlDocument
from intents.normalize import fold, squeeze

ACTIONS = ("warn", "mute", "remove")
DEFAULT_WARNING = "@{{ member }} 请勿在群里发广告、链接或刷屏～"
_URL = re.compile(
    r"(?:https?://|www\.)[^\s]+"
    r"|\b[a-z0-9][a-z0-9\-]{0,62}(?:\.[a-z0-9\-]{1,63})*\.(?:com|cn|net|org|top|xyz|vip|cc|me|io|co|info|"
    r"club|shop|site|online|link|ly|tk|app|live|work|fun|ink|pro|wang|ren)\b(?:/[^\s]*)?",
    re.IGNORECASE)


@dataclass(frozen=True)
class Finding:
    """Why a message breaks a rule: `rule` is a stable code, `detail` a sentence for the log."""

    rule: str
    detail: str


@dataclass(frozen=True)
class RecentMessage:
    """A group message seen recently (from storage), for the rate rules."""

    member: str
    group: str
    text: str
    at: datetime


@dataclass(frozen=True)
class GuardRules:
    """Validated `scripts/guard.yaml`."""

    flood_messages: int = 6
    flood_seconds: int = 30
    repeat_times: int = 3
    repeat_window: timedelta = timedelta(minutes=10)
    repeat_similarity: float = 90.0
    repeat_min_length: int = 8
    allowed_domains: tuple[str, ...] = ()
    blocked_types: frozenset[str] = frozenset({"qr_code", "mini_program", "business_card"})
    banned_words: tuple[str, ...] = ()
    evasions: tuple[tuple[str, str], ...] = ()
    new_member_minutes: int = 10
    escalation_window: timedelta = timedelta(hours=24)
    actions: tuple[str, ...] = ACTIONS
    mute_for: timedelta = timedelta(hours=1)
    warning: Template | None = None
    exempt: frozenset[str] = frozenset()
    _squeezed_words: tuple[tuple[str, str], ...] = field(default=(), repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_squeezed_words", tuple((squeeze(w), w) for w in self.banned_words if squeeze(w)))

    # --- content ---

    def _unevaded(self, text: str) -> str:
        folded = fold(text)
        for wrong, right in self.evasions:  # symbols first (➕v信), then across inserted spaces (威 信)
            folded = folded.replace(wrong, right)
        flat = squeeze(folded)
        for wrong, right in self.evasions:
            if squeeze(wrong) == wrong:  # keys with symbols (+v) only make sense before squeezing
                flat = flat.replace(wrong, right)
        return flat

    def banned_word(self, text: str) -> str | None:
        flat = self._unevaded(text)
        return next((word for squeezed, word in self._squeezed_words if squeezed in flat), None)

    def foreign_link(self, text: str) -> str | None:
        for match in _URL.finditer(unicodedata.normalize("NFKC", text)):
            link = match.group(0).lower()
            host = re.sub(r"^(?:https?://)?(?:www\.)?", "", link)
            if not any(host == d or host.startswith(d + "/") or host.split("/")[0].endswith("." + d.split("/")[0])
                       and "/" not in d for d in self.allowed_domains):
                return match.group(0)
        return None

    def content_findings(self, text: str, content_type: str = "text") -> list[Finding]:
        """What is wrong with one message on its own (what `siyu guard eval` measures)."""
        findings = []
        if content_type in self.blocked_types:
            findings.append(Finding("blocked_type", f"{content_type} messages are not allowed in the group"))
        word = self.banned_word(text)
        if word:
            findings.append(Finding("banned_word", f"contains the banned word 「{word}」"))
        link = self.foreign_link(text)
        if link:
            findings.append(Finding("link", f"links outside the allow-list: {link}"))
        return findings

    # --- rates ---

    def rate_findings(self, member: str, text: str, at: datetime, recent: Sequence[RecentMessage]) -> list[Finding]:
        """Floods and repeats, judged against recent messages (which do not include this one)."""
        findings = []
        since = at - timedelta(seconds=self.flood_seconds)
        mine = sum(1 for m in recent if m.member == member and m.at > since) + 1
        if mine > self.flood_messages:
            findings.append(Finding("flood", f"{mine} messages in {self.flood_seconds}s "
                                             f"(limit {self.flood_messages})"))
        flat = squeeze(text)
        if len(flat) >= self.repeat_min_length:
            window_start = at - self.repeat_window
            same = sum(1 for m in recent if m.at > window_start
                       and fuzz.ratio(flat, squeeze(m.text)) >= self.repeat_similarity) + 1
            if same >= self.repeat_times:
                findings.append(Finding("repeat", f"the same message posted {same} times within "
                                                  f"{self.repeat_window}"))
        return findings

    def action_for(self, strike: int) -> str:
        return self.actions[min(strike, len(self.actions)) - 1]


def _word(value: Any) -> Any:
    # YAML reads 110 or 2024 as numbers; in a word list they are words
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


Word = Annotated[str, BeforeValidator(_word)]


def _nothing_is_empty(value: Any) -> Any:
    """`flood:` or `banned_words:` with nothing after it means the defaults, as if the key were absent."""
    return {} if value is None else value


def _nothing_is_no_words(value: Any) -> Any:
    return [] if value is None else value


def _duration(value: Any) -> timedelta:
    try:
        return parse_duration(value)
    except ValueError:
        raise Mistake(f"must be a duration like '10m' or '24h', got {value!r}") from None


def _action(value: Any) -> str:
    if value not in ACTIONS:
        raise Mistake(f"unknown action {value!r} — use warn, mute or remove")
    return str(value)


Duration = Annotated[timedelta, BeforeValidator(_duration)]


class FloodFile(FileModel):
    messages: float = Field(6, ge=1, strict=True)
    seconds: float = Field(30, ge=1, strict=True)


class RepeatFile(FileModel):
    times: float = Field(3, ge=2, strict=True)
    window: Duration = timedelta(minutes=10)
    similarity: float = Field(90, ge=1, strict=True)  # 0-100 after normalising; 100 = identical
    min_length: float = Field(8, ge=0, strict=True)


class LinksFile(FileModel):
    allow: list[Word] = []

    _allow = field_validator("allow", mode="before")(_nothing_is_no_words)


class NewMemberFile(FileModel):
    minutes: float = Field(10, ge=0, strict=True)


class EscalationFile(FileModel):
    window: Duration = timedelta(hours=24)
    actions: list[Annotated[str, BeforeValidator(_action)]] = list(ACTIONS)
    mute_for: Duration = timedelta(hours=1)
    warning: Template = Field(default_factory=lambda: compile_template(DEFAULT_WARNING))

    _actions = field_validator("actions", mode="before")(_nothing_is_no_words)

    @field_validator("warning", mode="before")
    @classmethod
    def _template(cls, value: Any) -> Template:
        try:
            return compile_template(str(value))
        except TemplateProblem as exc:
            raise Mistake(f"{exc} — check {{{{ }}}} and {{% %}} pairs", text_line=exc.line) from None


class GuardFile(FileModel):
    """guard.yaml as written; every rule may be left out."""

    flood: FloodFile = Field(default_factory=FloodFile)
    repeat: RepeatFile = Field(default_factory=RepeatFile)
    links: LinksFile = Field(default_factory=LinksFile)
    blocked_types: list[Word] | None = None  # None: the default types; [] blocks none
    banned_words: list[Word] = []
    evasions: dict[Word, Word] = {}
    new_member: NewMemberFile = Field(default_factory=NewMemberFile)
    escalation: EscalationFile = Field(default_factory=EscalationFile)
    exempt: list[Word] = []

    _sections = field_validator("flood", "repeat", "links", "new_member", "escalation", "evasions",
                                mode="before")(_nothing_is_empty)
    _lists = field_validator("blocked_types", "banned_words", "exempt", mode="before")(_nothing_is_no_words)

    def rules(self) -> GuardRules:
        evasions = ((fold(wrong).strip(), squeeze(right)) for wrong, right in self.evasions.items())
        return GuardRules(
            flood_messages=int(self.flood.messages),
            flood_seconds=int(self.flood.seconds),
            repeat_times=int(self.repeat.times),
            repeat_window=self.repeat.window,
            repeat_similarity=float(self.repeat.similarity),
            repeat_min_length=int(self.repeat.min_length),
            allowed_domains=tuple(d.lower() for d in self.links.allow),
            blocked_types=(frozenset(self.blocked_types) if self.blocked_types is not None
                           else GuardRules.blocked_types),
            banned_words=tuple(self.banned_words),
            evasions=tuple(sorted((p for p in evasions if p[0]), key=lambda p: -len(p[0]))),
            new_member_minutes=int(self.new_member.minutes),
            escalation_window=self.escalation.window,
            actions=tuple(self.escalation.actions) or ACTIONS,
            mute_for=self.escalation.mute_for,
            warning=self.escalation.warning,
            exempt=frozenset(self.exempt),
        )


def _subject(loc: Loc) -> str:
    # a list item's problem names the item itself ("unknown action 'kick'"); others name their setting
    return "" if not loc or isinstance(loc[-1], int) else dotted(loc)


GUARD_VOICE = Voice(subject=_subject, colon=False, see="see README 'The group guard'")


def parse_guard(doc: YamlDocument) -> tuple[GuardRules | None, list[Problem]]:
    """Validate guard.yaml (an empty file means the defaults); every problem names its line."""
    guard, problems = validate(GuardFile, {} if doc.data is None else doc.data, doc, GUARD_VOICE)
    return (guard.rules() if guard is not None else None), problems


@dataclass(frozen=True)
class LabelledMessage:
    """One line of a `siyu guard eval` file."""

    text: str
    spam: bool
    member: str | None = None
    group: str | None = None
    t: datetime | None = None
    content_type: str = "text"


@dataclass(frozen=True)
class GuardReport:
    """Precision first: how many flagged messages were spam, and how much spam was flagged."""

    precision: float
    recall: float
    flagged: int
    total: int
    false_positives: tuple[tuple[str, str], ...]
    missed: tuple[str, ...]


def evaluate_guard(rules: GuardRules, messages: Sequence[LabelledMessage]) -> GuardReport:
    """Run the content rules (and the rate rules where member, group and t are given) over labelled messages."""
    recent: list[RecentMessage] = []
    flagged_true = flagged_false = spam_total = 0
    false_positives: list[tuple[str, str]] = []
    missed: list[str] = []
    for message in messages:
        findings = rules.content_findings(message.text, message.content_type)
        if message.member and message.group and message.t:
            horizon = message.t - max(rules.repeat_window, timedelta(seconds=rules.flood_seconds))
            recent = [m for m in recent if m.at > horizon]
            findings += rules.rate_findings(message.member, message.text, message.t, recent)
            recent.append(RecentMessage(message.member, message.group, message.text, message.t))
        spam_total += message.spam
        if findings:
            if message.spam:
                flagged_true += 1
            else:
                flagged_false += 1
                false_positives.append((message.text, "; ".join(f.detail for f in findings)))
        elif message.spam:
            missed.append(message.text)
    flagged = flagged_true + flagged_false
    return GuardReport(precision=flagged_true / flagged if flagged else 1.0,
                       recall=flagged_true / spam_total if spam_total else 1.0,
                       flagged=flagged, total=len(messages), false_positives=tuple(false_positives),
                       missed=tuple(missed))
