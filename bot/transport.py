"""The narrow interface between the engine and every transport, with the types both sides share.

It lives in `bot/` beside Event and Action so the engine never imports `adapters/`. Delivery is the
one required ability; the others are explicit protocols a transport declares by inheriting them.
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Protocol, runtime_checkable

from bot.events import Action, Address, Event

EventHandler = Callable[[Event], Awaitable[None]]


@dataclass(frozen=True)
class ChannelLimits:
    """What a channel allows, declared by its adapter so the policy can plan before anything is sent.

    `reply_window`: proactive messages only this long after the customer's last message, and at most
    `window_messages` of ours in that window. `per_customer_day` / `per_customer_month` cap proactive
    sends per customer (`month_is_days` = as many as days in the month). `assisted`: a person confirms.
    """

    assisted: bool = False
    reply_window: timedelta | None = None
    window_messages: int | None = None
    per_customer_day: int | None = None
    per_customer_month: int | None = None
    month_is_days: bool = False


@dataclass(frozen=True)
class Pending:
    """The platform took the message but a person must still send it (WeCom's assisted sending)."""

    platform_ref: str
    expires_at: datetime


class PendingState(StrEnum):
    """What the platform says about a message a person was asked to send."""

    SENT = "sent"
    FAILED = "failed"
    WAITING = "waiting"


@dataclass(frozen=True)
class PendingMessage:
    """An assisted message the platform still holds: its reference, the customer and the guide."""

    platform_ref: str | None
    chat_id: str
    sender_id: str | None


class DeliveryError(Exception):
    """A platform refused or failed a delivery. `retry_after` (seconds) when it said when to try again;
    `pause_channel` when the whole channel is throttled (flood control), not just this recipient."""

    def __init__(self, message: str, retry_after: float | None = None, permanent: bool = False,
                 pause_channel: bool = False) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.permanent = permanent
        self.pause_channel = pause_channel


class DeliveryInDoubt(DeliveryError):
    """The request may have reached the platform, but no answer came (a timeout or a connection lost
    after sending): not a refusal. The dispatcher repeats it only where the platform drops repeats
    (`DedupesRepeats`); anything else is recorded as in doubt and never sent twice."""


class Transport(Protocol):
    """What the engine needs from an adapter: a channel name and a way to deliver an Action."""

    channel: str

    async def deliver(self, action: Action) -> Pending | None:
        """Hand one action to the platform; raise DeliveryError on failure (DeliveryInDoubt when it may
        have arrived anyway); return Pending when a person must confirm it. The outbox repeats an action
        after a crash only where the transport declares `DedupesRepeats` for it."""
        ...


@runtime_checkable
class Limited(Protocol):
    """A transport whose platform limits proactive messages; the policy plans with `limits`."""

    @property
    def limits(self) -> ChannelLimits: ...


@runtime_checkable
class ConfirmsPending(Protocol):
    """A transport whose deliveries may return Pending, and that can ask the platform how they went."""

    async def check_pending(self, message: PendingMessage) -> PendingState: ...


@runtime_checkable
class LinksConversations(Protocol):
    """A transport whose platform has its own link to open a conversation."""

    def conversation_link(self, chat_id: str) -> str: ...


FOREVER = timedelta.max  # a repeat window with no end: the platform never takes the same action twice


@runtime_checkable
class DedupesRepeats(Protocol):
    """A transport whose platform drops a repeat of an action it already took — it dedupes on the
    message id (`action.ref`), or honours an idempotency key derived from it — so the outbox may hand
    that action over again after a crash. Actions it does not cover are never repeated once a call
    may have reached the platform: they are recorded as in doubt and the guide is told."""

    def repeat_window(self, action: Action) -> timedelta | None:
        """How long after the first attempt a repeat of `action` is still dropped by the platform:
        FOREVER when it always is (also for an action that changes nothing there), None when the
        platform would deliver the repeat."""
        ...


class HandoverState(StrEnum):
    """Where a platform's hand-over of one customer to another guide stands (在职/离职继承)."""

    WAITING = "waiting"    # asked; the customer may still refuse, or the platform has not moved them yet
    ACCEPTED = "accepted"  # the new guide has the customer
    REFUSED = "refused"    # the customer refused, or the new guide has too many customers
    FAILED = "failed"      # the platform would not start it (not a contact of the old guide, …)


@dataclass(frozen=True)
class Handover:
    """One customer's hand-over as the platform reports it; `detail` says why (for people, no PII)."""

    customer: str
    state: HandoverState
    detail: str = ""


@runtime_checkable
class HandsOverCustomers(Protocol):
    """A transport whose platform owns which guide has a customer, and moves them on request."""

    async def hand_over(self, from_guide: str, to_guide: str, customers: Sequence[str],
                        departed: bool) -> list[Handover]:
        """Ask the platform to move `customers` (platform ids) between guides (their platform ids)."""
        ...

    async def handover_results(self, from_guide: str, to_guide: str, departed: bool) -> list[Handover]:
        """What the platform says now about the hand-overs between these two guides."""
        ...


@dataclass(frozen=True)
class ContactCode:
    """A platform's 「联系我」 code: its id there and the QR image customers scan."""

    config_id: str
    qr_code: str


@runtime_checkable
class MakesContactCodes(Protocol):
    """A transport whose platform makes QR codes that spread new customers over several guides."""

    async def create_contact_code(self, state: str, guides: Sequence[str], remark: str) -> ContactCode:
        """One multi-guide code; each customer added through it arrives with `state`."""
        ...


@dataclass(frozen=True)
class MemberMessage:
    """A group member's message as siyu stored it, for a transport that is the group's platform itself."""

    address: Address
    ref: str         # the platform's message id: what the guard's DELETE names (`Action.target_ref`)
    sender_id: str
    text: str
    at: datetime
    name: str | None = None  # the name it came with; None: the transport looks the sender up itself


@runtime_checkable
class ConnectedHere(Protocol):
    """A transport whose recipients connect to siyu itself (web chat sockets), not to a platform: no
    platform quota applies, and since a recipient may be connected to another process sharing the
    database, every action it delivers is also relayed to the others (PostgreSQL LISTEN/NOTIFY). So is
    a group member's message: here siyu is the platform that shows it to the other members."""

    def connected_here(self, address: Address) -> bool:
        """Whether someone `address` reaches holds a connection to this process."""
        ...

    async def show(self, message: MemberMessage) -> None:
        """Show a member's message that another process received to the group's members connected here."""
        ...
