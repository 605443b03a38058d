"""The group guard (群防骚扰): content and rate rules, and how punishment escalates.

Pure logic: the engine loads recent history from storage and asks here what to do.
"""
from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

from jinja2 import Template
from pydantic import BeforeValidator, Field, field_validator
from rapidfuzz import fuzz

from bot.durations import parse_duration, spoken_duration
from bot.guard_model import SpamModel, load_model
from bot.guard_similar import SampleIndex
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
    """Why a message breaks a rule: `rule` is a stable code, `detail` the reason staff read (see `finding`)."""

    rule: str
    detail: str


# Every rule's reason as staff read it (the guard log, the console, `siyu guard log`): the one place they are worded.
REASONS = {
    "blocked_type": "群里不允许发{kind}",
    "banned_word": "含违禁词「{word}」",
    "link": "含白名单以外的链接：{link}",
    "flood": "{seconds} 秒内发了 {count} 条消息（上限 {limit} 条）",
    "repeat": "{window}内同一条消息发了 {count} 次",
    "similar_spam": "与员工确认过的垃圾样本 #{sample} 相似度 {similarity:.0f}%",
    "classifier": "读起来像广告（评分 {score:.2f} ≥ {threshold:g}）",
    "classifier_review": "可能是广告（评分 {score:.2f}），等员工审核",
    "llm": "大模型判断是广告（评分 {score:.2f}）",
    "new_member_ad": "入群 {minutes} 分钟内发广告",
    "staff": "员工标记为垃圾消息",
    "staff_removal": "员工把发言人移出了群聊",
}
# Every rule's short name as staff read it in a table or chart (the console): with REASONS, the one place the
# guard's rules are worded for people; the codes themselves stay in storage, logs and CSV.
RULE_NAMES = {
    "blocked_type": "禁发的消息类型",
    "banned_word": "违禁词",
    "link": "外部链接",
    "flood": "刷屏",
    "repeat": "重复刷同一条",
    "similar_spam": "像已确认的垃圾消息",
    "classifier": "像广告",
    "classifier_review": "疑似广告，待审核",
    "llm": "大模型判断是广告",
    "new_member_ad": "新成员发广告",
    "staff": "员工标记",
    "staff_removal": "员工移出群聊",
}
CONTENT_TYPES = {"qr_code": "二维码", "mini_program": "小程序", "business_card": "名片", "image": "图片", "link": "链接卡片"}


def rule_names(rules: str) -> list[str]:
    """A guard event's comma-separated rule codes as staff read them (a code with no name stays as it is)."""
    return [RULE_NAMES.get(code, code) for code in (r.strip() for r in rules.split(",")) if code]


def finding(rule: str, **facts: Any) -> Finding:
    """A finding of `rule` with its reason worded from `facts` (REASONS names the facts each rule needs)."""
    return Finding(rule, REASONS[rule].format(**facts))


@dataclass(frozen=True)
class RecentMessage:
    """A group message seen recently (from storage), for the rate rules."""

    member: str
    group: str
    text: str
    at: datetime
    to_bot: bool = False  # a question to the bot (@bot): never flooding


@dataclass(frozen=True)
class ClassifierRules:
    """How classifier scores map to actions, and how close a message must be to a staff sample."""

    model: str | None = None   # a model file from `siyu guard train`; None: the shipped default
    act: float = 0.5           # score ≥ act: delete and a strike (chosen by cross-validation)
    review: float = 0.35       # review ≤ score < act: held for staff, nothing public
    new_member_act: float = 0.4   # the same for a member's messages within new_member.minutes of joining
    similar: float = 90.0      # 0-100: this close to a staff sample counts as that sample's label
    similar_min_length: int = 4
    llm: bool = False          # ask the configured LLM about the review band; any error keeps it held

    def model_path(self) -> Path | None:
        return Path(self.model) if self.model else None


@dataclass(frozen=True)
class Verdict:
    """What the guard makes of one message: `act` (delete, strike), `hold` (staff review), or `pass`."""

    action: str
    findings: tuple[Finding, ...] = ()
    score: float | None = None


PASS = Verdict("pass")


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
    classifier: ClassifierRules = ClassifierRules()
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
            findings.append(finding("blocked_type", kind=CONTENT_TYPES.get(content_type, content_type)))
        word = self.banned_word(text)
        if word:
            findings.append(finding("banned_word", word=word))
        link = self.foreign_link(text)
        if link:
            findings.append(finding("link", link=link))
        return findings

    # --- rates ---

    def rate_findings(self, member: str, text: str, at: datetime, recent: Sequence[RecentMessage],
                      to_bot: bool = False) -> list[Finding]:
        """Floods and repeats, judged against recent messages (which do not include this one).

        Questions to the bot are conversation, not flooding: they neither count nor get flagged."""
        findings = []
        since = at - timedelta(seconds=self.flood_seconds)
        mine = sum(1 for m in recent if m.member == member and m.at > since and not m.to_bot) + 1
        if mine > self.flood_messages and not to_bot:
            findings.append(finding("flood", seconds=self.flood_seconds, count=mine, limit=self.flood_messages))
        flat = squeeze(text)
        if len(flat) >= self.repeat_min_length:
            window_start = at - self.repeat_window
            same = sum(1 for m in recent if m.at > window_start
                       and fuzz.ratio(flat, squeeze(m.text)) >= self.repeat_similarity) + 1
            if same >= self.repeat_times:
                findings.append(finding("repeat", window=spoken_duration(self.repeat_window), count=same))
        return findings

    def action_for(self, strike: int) -> str:
        return self.actions[min(strike, len(self.actions)) - 1]

    def judge(self, text: str, content_type: str = "text", newcomer: bool = False,
              model: SpamModel | None = None, samples: SampleIndex | None = None) -> Verdict:
        """The content of one message on its own: staff samples first, then the rules, then the classifier."""
        close = samples.closest(text, self.classifier.similar, self.classifier.similar_min_length,
                                self.evasions) if samples else None
        if close is not None and not close.spam:
            return PASS  # staff cleared a message just like this one
        found = self.content_findings(text, content_type)
        # a bare link is everyday chat (a doc, a video): it is only evidence when the classifier agrees
        links = [f for f in found if f.rule == "link"]
        findings = [f for f in found if f.rule != "link"]
        if close is not None:
            findings.append(finding("similar_spam", sample=close.sample_id, similarity=close.similarity))
        score = model.score(text) if model is not None and text.strip() else None
        act = self.classifier.new_member_act if newcomer else self.classifier.act
        if score is not None and score >= act and not findings:
            findings += links or [finding("classifier", score=score, threshold=act)]
        elif links and model is None:
            findings += links  # no classifier to ask: the link rule stands alone, as before
        if findings:
            return Verdict("act", tuple(findings), score)
        if links:
            return Verdict("hold", tuple(links), score)
        if score is not None and score >= self.classifier.review:
            return Verdict("hold", (finding("classifier_review", score=score),), score)
        return Verdict("pass", (), score)

    def model(self) -> SpamModel:
        """The classifier guard.yaml names (the shipped one by default); OSError/ValueError if unreadable."""
        return load_model(self.classifier.model_path())


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


class ClassifierFile(FileModel):
    model: Word | None = None
    act: float = Field(0.5, ge=0, le=1, strict=True)
    review: float = Field(0.35, ge=0, le=1, strict=True)
    new_member_act: float = Field(0.4, ge=0, le=1, strict=True)
    similar: float = Field(90, ge=1, le=100, strict=True)
    similar_min_length: float = Field(4, ge=0, strict=True)
    llm: bool = False


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
    classifier: ClassifierFile = Field(default_factory=ClassifierFile)

    _sections = field_validator("flood", "repeat", "links", "new_member", "escalation", "evasions",
                                "classifier", mode="before")(_nothing_is_empty)
    _lists = field_validator("blocked_types", "banned_words", "exempt", mode="before")(_nothing_is_no_words)

    def rules(self, base: Path | None = None) -> GuardRules:
        c = self.classifier
        model = str((base / c.model) if base is not None and not Path(c.model).is_absolute() else c.model) \
            if c.model else None
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
            classifier=ClassifierRules(model, float(c.act), min(float(c.review), float(c.act)),
                                       float(c.new_member_act), float(c.similar), int(c.similar_min_length),
                                       c.llm),
        )


def _subject(loc: Loc) -> str:
    # a list item's problem names the item itself ("unknown action 'kick'"); others name their setting
    return "" if not loc or isinstance(loc[-1], int) else dotted(loc)


GUARD_VOICE = Voice(subject=_subject, colon=False, see="see README 'The group guard'")


def parse_guard(doc: YamlDocument) -> tuple[GuardRules | None, list[Problem]]:
    """Validate guard.yaml (an empty file means the defaults); every problem names its line."""
    guard, problems = validate(GuardFile, {} if doc.data is None else doc.data, doc, GUARD_VOICE)
    return (guard.rules(Path(doc.path).parent) if guard is not None else None), problems


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
    flagged: int  # deleted or punished
    total: int
    false_positives: tuple[tuple[str, str], ...]
    missed: tuple[str, ...]
    held_for_review: int = 0  # held for staff with no public action: not counted in flagged
    held_spam: int = 0  # how many of those were spam


def evaluate_guard(rules: GuardRules, messages: Sequence[LabelledMessage],
                   model: SpamModel | None = None) -> GuardReport:
    """Run the guard (content rules, the classifier when given, and the rate rules where member, group and t
    are given) over labelled messages. Held-for-review messages are counted apart from flagged ones."""
    recent: list[RecentMessage] = []
    flagged_true = flagged_false = spam_total = held = held_spam = 0
    false_positives: list[tuple[str, str]] = []
    missed: list[str] = []
    for message in messages:
        verdict = rules.judge(message.text, message.content_type, model=model)
        findings = list(verdict.findings) if verdict.action == "act" else []
        if message.member and message.group and message.t:
            horizon = message.t - max(rules.repeat_window, timedelta(seconds=rules.flood_seconds))
            recent = [m for m in recent if m.at > horizon]
            findings += rules.rate_findings(message.member, message.text, message.t, recent)
            recent.append(RecentMessage(message.member, message.group, message.text, message.t))
        spam_total += message.spam
        if not findings and verdict.action == "hold":
            held += 1
            held_spam += message.spam
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
                       missed=tuple(missed), held_for_review=held, held_spam=held_spam)
