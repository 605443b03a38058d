"""The console API's contract: every request body and response of `/api`, as pydantic models.

Times are ISO 8601 with an offset; `local_time` strings are the brand's (or the customer's) local
time, already formatted for people (「11-23 20:38」). Every `error` a person reads is Chinese.
"""
from __future__ import annotations

from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Role = Literal["guide", "operator"]
ConversationState = Literal["bot", "handoff", "human"]  # bot answers | waiting for a guide | a guide has it


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Response(BaseModel):
    model_config = ConfigDict(frozen=True)


class ApiError(_Response):
    """Every 4xx/5xx body: one Chinese sentence saying what happened and what to do."""

    error: str


# --- session ---------------------------------------------------------------------------------

class LoginRequest(_Request):
    staff: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


class Me(_Response):
    """Who is logged in. `csrf_token` goes into the `X-CSRF-Token` header of every POST/DELETE
    made with the cookie (null when the request used a bearer token)."""

    staff: str
    name: str
    role: Role
    csrf_token: str | None = None


# --- the guide's workspace ------------------------------------------------------------------

class Conversation(_Response):
    """One customer's 1v1 conversation; `id` is the customer's id (#id in guide notes)."""

    id: int
    channel: str
    customer: str                     # display name
    guide: str | None                 # staff id of the customer's guide
    state: ConversationState
    waiting_since: datetime | None    # when the hand-off began, while nobody has replied (state handoff)
    last_message_at: datetime | None
    last_message: str | None = None   # the start of the last message (≤ 60 characters)
    tags: list[str] = Field(default_factory=list)
    can_reply: bool = True            # False for WeCom customer contact: the guide replies in WeCom itself
    reply_note: str | None = None     # why not, in Chinese, when can_reply is False


class Reason(_Response):
    """Why the bot did what it did, for one history item. Only the fields of its kind are set."""

    kind: Literal["faq", "handoff", "journey", "decision", "guard", "guide", "system"]
    summary: str                          # Chinese one-liner: 「FAQ shipping_fee · fuzzy · 0.96」
    intent: str | None = None             # faq
    tier: str | None = None               # faq / handoff: fuzzy | semantic | llm | handoff
    confidence: float | None = None       # faq / handoff: 0–1
    journey: str | None = None            # journey / decision
    step: str | None = None
    variant: str | None = None
    decision: str | None = None           # sent | deferred | dropped | skipped …
    policy_reason: str | None = None      # the policy's reason code (quiet_hours, cap_day, …)
    rule: str | None = None               # guard: comma-separated rule codes
    action: str | None = None             # guard: delete | warn | mute | remove


class HistoryItem(_Response):
    """A message (either direction), a touch decision that sent nothing, or a guard action."""

    id: str                               # "m<message id>" | "d<touch_log id>" | "g<guard event id>"
    kind: Literal["message", "decision", "guard"]
    at: datetime
    local_time: str                       # 「2026-03-02 10:15」 in the customer's (or brand's) time zone
    direction: Literal["in", "out"] | None = None
    sender: Literal["customer", "bot", "staff"] | None = None
    sender_name: str | None = None
    text: str = ""
    message_id: int | None = None         # for teaching: POST /api/faq/examples {"message_id"}
    handed_off: bool = False              # an inbound question the bot could not answer
    delivered: bool | None = None         # outbound: reached the platform
    reason: Reason | None = None


class History(_Response):
    conversation: Conversation
    items: list[HistoryItem]              # oldest first


class ReplyRequest(_Request):
    text: str = Field(min_length=1, max_length=2000)


class ReplySent(_Response):
    """201: queued for the customer's channel and delivered at once when the platform is up."""

    message_id: int
    conversation: Conversation


class TagRequest(_Request):
    tag: str = Field(min_length=1, max_length=64)


class TagResult(_Response):
    added: bool                           # False: the customer already had it
    message: str                          # Chinese sentence for the guide
    conversation: Conversation


class TriggerRequest(_Request):
    journey: str
    step: str | None = None               # None: restart the whole journey
    dry_run: bool = False                 # True: only the policy's verdict, nothing is scheduled


class PolicyVerdict(_Response):
    verdict: Literal["send", "defer", "drop"]
    reason: str                           # reason code
    reason_text: str                      # Chinese sentence
    until: datetime | None = None         # defer: when it could go out
    until_local: str | None = None


class TriggerResult(_Response):
    scheduled: bool
    message: str                          # Chinese sentence for the guide
    preview: PolicyVerdict | None = None  # the policy's verdict if the step were due now (steps only)
    text: str | None = None               # the rendered message (steps only)


class TimelineEntry(_Response):
    at: datetime
    local_time: str
    journey: str
    step: str
    decision: str
    reason: str
    reason_text: str                      # Chinese


class Timeline(_Response):
    """The customer's touch decisions (`/why`), newest first, in their local time."""

    customer: str
    zone: str
    entries: list[TimelineEntry]
    text: str                             # the same as /why prints


# --- teaching -------------------------------------------------------------------------------

class FaqIntentSummary(_Response):
    id: str
    description: str
    answer: str
    examples: list[str]


class FaqExampleRequest(_Request):
    intent: str
    text: str = Field(min_length=1, max_length=500)
    message_id: int | None = None         # the handed-off message it came from, if any


class FaqIntentRequest(_Request):
    id: str = Field(min_length=1, max_length=64)
    answer: str = Field(min_length=1, max_length=2000)
    examples: list[str] = Field(min_length=1, max_length=50)
    description: str | None = None
    message_id: int | None = None


class FaqChange(_Response):
    """201: faq.yaml was rewritten (comments kept), checked, and the bot answers with it now."""

    intent: str
    examples: list[str]
    created: bool                         # a new intent
    message: str                          # Chinese sentence


# --- operator dashboard --------------------------------------------------------------------

class Counts(_Response):
    enrolled: int
    sent: int
    replied: int                          # replied within 48 h of the step's message
    purchased: int                        # purchased after the step's message
    reply_rate: float                     # replied / sent (0 when nothing was sent)
    purchase_rate: float                  # purchased / sent


class AbTest(_Response):
    """Two-proportion z-test of A vs B reply rates (two-sided p)."""

    metric: Literal["reply_rate"] = "reply_rate"
    a: str
    b: str
    z: float
    p: float


class FunnelStep(Counts):
    step: str
    variants: dict[str, Counts] = Field(default_factory=dict)
    ab_test: AbTest | None = None


class Funnel(_Response):
    journey: str
    title: str
    date_from: date
    date_to: date
    steps: list[FunnelStep]


class DecisionCount(_Response):
    day: date                             # brand-local day
    decision: str
    reason: str
    reason_text: str
    count: int


class Decisions(_Response):
    date_from: date
    date_to: date
    rows: list[DecisionCount]


class QuestionShare(_Response):
    period: str
    intent: str                           # "(handed off)" for hand-offs
    count: int
    share: float


class QuestionGap(_Response):
    example: str
    count: int
    variants: list[str]


class FaqInsights(_Response):
    date_from: date
    date_to: date
    shares: list[QuestionShare]
    gaps: list[QuestionGap]


class GuardRuleCount(_Response):
    rule: str
    name: str = ""                        # the rule in Chinese, as staff read it
    count: int
    actions: dict[str, int]               # action → count


class GuardSummary(_Response):
    date_from: date
    date_to: date
    rules: list[GuardRuleCount]


class GuardEventOut(_Response):
    id: int
    at: datetime
    local_time: str
    channel: str
    group: str
    member: str
    member_name: str                      # the name the member went by (their platform id when none is known)
    rule: str                             # comma-separated rule codes
    rule_names: list[str] = []            # the same rules in Chinese, as staff read them
    strike: int
    action: str
    reason: str
    excerpt: str
    verdict: Literal["spam", "not_spam"] | None = None  # a staff decision already recorded
    status: str = "acted"                 # acted | held (waits for staff, nothing public done) | spam | not_spam
    score: float | None = None            # the spam classifier's score, when it ran
    message_id: int | None = None         # the judged group message (messages.id)


class GuardVerdictResult(_Response):
    id: int
    verdict: Literal["spam", "not_spam"]
    message: str                          # Chinese sentence


class ChurnedCustomer(_Response):
    id: int
    customer: str
    channel: str
    guide: str | None
    added_at: datetime
    churned_at: datetime
    local_time: str


class Churn(_Response):
    date_from: date
    date_to: date
    customers: list[ChurnedCustomer]


class JourneyStepInfo(_Response):
    id: str
    variants: list[str]


class JourneyInfo(_Response):
    id: str
    title: str
    steps: list[JourneyStepInfo]


# --- journey preview -----------------------------------------------------------------------

class PreviewRequest(_Request):
    name: str = "预览顾客"
    tags: list[str] = Field(default_factory=list)
    interests: list[str] = Field(default_factory=list)
    source: str | None = None
    birthday: date | None = None
    timezone: str | None = None
    days: int = Field(35, ge=1, le=120)
    start: datetime | None = None         # when the customer is added (default: now)


class PreviewLine(_Response):
    at: datetime
    local_time: str
    day: int                              # days since the customer was added
    kind: Literal["enrolled", "sent", "deferred", "dropped", "exited"]
    step: str | None = None
    variant: str | None = None
    text: str | None = None               # the rendered message (sent)
    reason: str | None = None             # policy reason code
    reason_text: str | None = None        # Chinese


class Preview(_Response):
    journey: str
    lines: list[PreviewLine]
