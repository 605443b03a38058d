"""The group guard (群防骚扰): content and rate rules, and how punishment escalates.

Pure logic: the engine loads recent history from storage and asks here what to do.
"""
from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import zhconv
from jinja2 import Template
from rapidfuzz import fuzz

from bot.durations import parse_duration
from bot.problems import Problem
from bot.templates import TemplateProblem, compile_template
from bot.yamlsource import YamlDocument

ACTIONS = ("warn", "mute", "remove")
_URL = re.compile(
    r"(?:https?://|www\.)[^\s]+"
    r"|\b[a-z0-9][a-z0-9\-]{0,62}(?:\.[a-z0-9\-]{1,63})*\.(?:com|cn|net|org|top|xyz|vip|cc|me|io|co|info|"
    r"club|shop|site|online|link|ly|tk|app|live|work|fun|ink|pro|wang|ren)\b(?:/[^\s]*)?",
    re.IGNORECASE)


def fold(text: str) -> str:
    """Full-width → half-width, traditional → simplified, lower case; symbols kept (➕ means 加)."""
    return zhconv.convert(unicodedata.normalize("NFKC", text), "zh-cn").lower()


def squeeze(text: str) -> str:
    """Folded text with everything but letters and digits removed: 兼 职.日-结 → 兼职日结."""
    return "".join(c for c in fold(text) if unicodedata.category(c)[0] in "LN")


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


def parse_guard(doc: YamlDocument) -> tuple[GuardRules | None, list[Problem]]:
    """Validate guard.yaml; every problem names its line."""
    problems: list[Problem] = []
    data = doc.data or {}
    if not isinstance(data, dict):
        return None, [doc.problem((), "guard.yaml must be a mapping of rules")]
    known = {"flood", "repeat", "links", "blocked_types", "banned_words", "evasions", "new_member",
             "escalation", "exempt"}
    for key in sorted(set(data) - known):
        problems.append(doc.problem((key,), f"unknown rule '{key}' — expected one of {', '.join(sorted(known))}"))

    def number(section: str, name: str, default: float, low: float = 1) -> Any:
        value = (data.get(section) or {}).get(name, default)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value < low:
            problems.append(doc.problem((section, name), f"{section}.{name} must be a number ≥ {low:g}, got {value!r}"))
            return default
        return value

    def duration(section: str, name: str, default: str) -> timedelta:
        value = (data.get(section) or {}).get(name, default)
        try:
            return parse_duration(value)
        except ValueError:
            problems.append(doc.problem((section, name),
                                        f"{section}.{name}: {value!r} — expected a duration like '10m' or '24h'"))
            return parse_duration(default)

    def words(key: str) -> tuple[str, ...]:
        value = data.get(key) or []
        if not isinstance(value, list) or not all(isinstance(v, (str, int)) for v in value):
            problems.append(doc.problem((key,), f"{key} must be a list of words"))
            return ()
        return tuple(str(v) for v in value)

    actions = tuple((data.get("escalation") or {}).get("actions", ACTIONS))
    for i, action in enumerate(actions):
        if action not in ACTIONS:
            problems.append(doc.problem(("escalation", "actions", i),
                                        f"unknown action {action!r} — use warn, mute or remove"))
    warning = None
    text = (data.get("escalation") or {}).get("warning", "@{{ member }} 请勿在群里发广告、链接或刷屏～")
    try:
        warning = compile_template(str(text))
    except TemplateProblem as exc:
        problems.append(doc.problem(("escalation", "warning"), f"warning {exc}"))
    evasions = data.get("evasions") or {}
    if not isinstance(evasions, dict):
        problems.append(doc.problem(("evasions",), "evasions must map a spelling to what it stands for"))
        evasions = {}
    pairs = tuple(sorted(((fold(str(k)).strip(), squeeze(str(v))) for k, v in evasions.items()
                          if fold(str(k)).strip()), key=lambda p: -len(p[0])))
    blocked = words("blocked_types")
    rules = GuardRules(
        flood_messages=int(number("flood", "messages", 6)),
        flood_seconds=int(number("flood", "seconds", 30)),
        repeat_times=int(number("repeat", "times", 3, 2)),
        repeat_window=duration("repeat", "window", "10m"),
        repeat_similarity=float(number("repeat", "similarity", 90)),
        repeat_min_length=int(number("repeat", "min_length", 8, 0)),
        allowed_domains=tuple(d.lower() for d in (data.get("links") or {}).get("allow", []) or []),
        blocked_types=frozenset(blocked) if "blocked_types" in data else GuardRules.blocked_types,
        banned_words=words("banned_words"),
        evasions=pairs,
        new_member_minutes=int(number("new_member", "minutes", 10, 0)),
        escalation_window=duration("escalation", "window", "24h"),
        actions=actions or ACTIONS,
        mute_for=duration("escalation", "mute_for", "1h"),
        warning=warning,
        exempt=frozenset(words("exempt")),
    )
    return (None if problems else rules), problems


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
