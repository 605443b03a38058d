"""How a platform plugs into siyu: a spec (name, settings model, factory), a narrow context the
factory builds from, and the parts it returns. The composition root loops over the specs.

Adding a channel touches only its own package plus one line in `adapters/registry.py`.
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar
from zoneinfo import ZoneInfo

from pydantic import BaseModel

from bot.clock import Clock
from bot.events import ChatType, Event
from bot.transport import EventHandler, Transport

if TYPE_CHECKING:
    from aiohttp import web

S = TypeVar("S", bound=BaseModel)
Translator = Callable[[str], Awaitable[list[Event]]]  # a stored callback payload → Events


@dataclass(frozen=True)
class HistoryLine:
    """One past message of a conversation, as a chat page shows it."""

    ref: str
    sender: str
    text: str
    at: datetime
    notice: bool = False  # a moderation notice (「已被禁言 1 小时」): the page shows a system line, not a bubble
    from_guide: bool = False  # a guide's own words (a console reply): `sender` is the guide's id on the channel


@dataclass(frozen=True)
class Standing:
    """What the moderation actions delivered so far in a group left of one member."""

    removed: bool = False
    mute_ref: int | None = None         # the outbox id of the latest mute or unmute delivered, if any
    muted_until: datetime | None = None  # that one's end, when it was a mute


class LoginResult(StrEnum):
    """What a staff login attempt came to."""

    OK = "ok"
    WRONG = "wrong"          # unknown staff id or wrong password (never says which)
    THROTTLED = "throttled"  # too many failures lately for this staff id or this client address


@dataclass(frozen=True)
class StaffIdentity:
    """A staff member as one channel knows them: config id, platform id there, display name."""

    key: str
    platform_id: str
    name: str


class AdapterStore(Protocol):
    """What adapters may remember and look up; storage stays behind this port."""

    async def get_value(self, key: str) -> str | None: ...

    async def set_value(self, key: str, value: str) -> None: ...

    async def remember_inbound(self, channel: str, key: str, payload: str) -> bool:
        """Store a callback for the inbox; False when the same one is already stored (a retry)."""
        ...

    async def delivery_window(self, channel: str, chat_id: str) -> tuple[datetime | None, int]:
        """(the customer's last message, how many of ours were delivered since)."""
        ...

    async def assisted_send_times(self, channel: str, customer: str, since: datetime) -> list[datetime]:
        """When assisted messages to `customer` were handed to the platform since `since`."""
        ...

    async def group_members(self, channel: str, group: str) -> set[str]: ...

    async def history(self, channel: str, chat_type: ChatType, chat_id: str) -> Sequence[HistoryLine]: ...

    async def is_staff(self, channel: str, external_id: str) -> bool: ...

    async def standing(self, channel: str, group: str, member: str) -> Standing:
        """Whether a delivered removal took the member out of the group, and its latest delivered mute or
        unmute: any process may have delivered them."""
        ...

    async def staff_name(self, channel: str, sender_id: str) -> str | None:
        """The display name of the staff member who sent as `sender_id` on `channel`; None if unknown."""
        ...

    async def keep_value(self, key: str, value: str) -> str:
        """Store `value` unless `key` already holds one; the stored value either way (first writer wins)."""
        ...

    async def staff_login(self, staff_key: str, password: str, client: str) -> LoginResult:
        """Check a staff password against its stored hash; failures are throttled per staff id and per client."""
        ...

    async def staff_password_stamp(self, staff_key: str) -> str | None:
        """A short fingerprint of the stored password hash (None without one): sessions carry it, so
        setting a new password ends the old sessions."""
        ...

    async def staff_identity(self, staff_key: str, channel: str) -> StaffIdentity | None:
        """The staff member's id on `channel` (their config id when they have none there); None if unknown."""
        ...


@dataclass(frozen=True)
class AdapterContext(Generic[S]):
    """Everything a factory may use: its own settings and a few engine services, nothing more.

    `handle` applies an event (delivery follows on the serve loop); `handle_now` also delivers what
    the event made due before returning, for a page that must show replies in order.
    """

    settings: S
    handle: EventHandler
    handle_now: EventHandler
    clock: Clock
    store: AdapterStore
    wake: Callable[[], None]
    zone: ZoneInfo
    staff: Mapping[str, frozenset[str]]  # channel → the platform ids of configured staff
    staff_commands: Mapping[str, str]     # command → description, for platforms with command menus

    def staff_on(self, channel: str) -> frozenset[str]:
        return self.staff.get(channel, frozenset())


@dataclass
class Adapter:
    """The running parts of one platform: transports, HTTP routes, inbox translators, lifecycle."""

    transports: Sequence[Transport]
    routes: Callable[["web.Application"], None] | None = None
    translators: Mapping[str, Translator] = field(default_factory=dict)
    start: Callable[[], Awaitable[None]] | None = None
    stop: Callable[[], Awaitable[None]] | None = None


@dataclass(frozen=True)
class AdapterSpec(Generic[S]):
    """A platform as the composition root sees it.

    `name` is its section under `adapters:` in config.yaml and its env prefix (SIYU_<NAME>_<KEY>);
    `env` lists the keys the environment may set, `secrets` those only the environment may set.
    `build` returns None when the platform is not configured.
    """

    name: str
    settings: type[S]
    build: Callable[[AdapterContext[S]], Adapter | None]
    env: tuple[str, ...] = ()
    secrets: tuple[str, ...] = ()
