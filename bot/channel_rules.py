"""The platform's own limits as pure rules: quota periods and reply windows.

The policy plans with these before a touch is sent, and adapters check the same rules again
at delivery as a backstop, so each limit is written once.
"""
from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime, time, timedelta, timezone
from typing import NamedTuple
from zoneinfo import ZoneInfo

from bot.transport import ChannelLimits


class Block(NamedTuple):
    """Why a send must wait, and until when (ordered by `until`, so max() is the last to clear)."""

    until: datetime
    reason: str
    detail: str


class Refusal(NamedTuple):
    """Why a send can never go out (waiting will not help)."""

    reason: str
    detail: str


def first_of_next_month(day: date) -> date:
    return (day.replace(day=1) + timedelta(days=32)).replace(day=1)


def local_midnight(day: date, zone: ZoneInfo) -> datetime:
    """The start of `day` in `zone`, as UTC."""
    return datetime.combine(day, time.min, tzinfo=zone).astimezone(timezone.utc)


def same_local_day(moment: datetime, day: date, zone: ZoneInfo) -> bool:
    return moment.astimezone(zone).date() == day


def same_local_month(moment: datetime, day: date, zone: ZoneInfo) -> bool:
    local = moment.astimezone(zone)
    return (local.year, local.month) == (day.year, day.month)


def month_cap(limits: ChannelLimits, day: date) -> int | None:
    """The platform's monthly cap in the month of `day` (some platforms allow as many as days in it)."""
    if limits.month_is_days:
        return (first_of_next_month(day) - day.replace(day=1)).days
    return limits.per_customer_month


def window_refusal(limits: ChannelLimits | None, last_inbound_at: datetime | None, used: int,
                   now: datetime) -> Refusal | None:
    """A reply window that is closed or used up cannot reopen by waiting."""
    if limits is None or limits.reply_window is None:
        return None
    if last_inbound_at is None or now - last_inbound_at > limits.reply_window:
        return Refusal("channel_window_closed", f"the channel only allows messages within {limits.reply_window} "
                                                "of the customer's last message")
    if limits.window_messages is not None and used >= limits.window_messages:
        return Refusal("channel_window_full", f"{used} messages already sent since the customer's last message "
                                              f"(the channel allows {limits.window_messages})")
    return None


def quota_blocks(limits: ChannelLimits | None, sent: Sequence[datetime], now: datetime,
                 zone: ZoneInfo) -> list[Block]:
    """The platform's per-customer day and month quotas, counted on the times of earlier sends."""
    if limits is None:
        return []
    today = now.astimezone(zone).date()
    blocks = []
    if limits.per_customer_day is not None:
        if sum(1 for t in sent if same_local_day(t, today, zone)) >= limits.per_customer_day:
            blocks.append(Block(local_midnight(today + timedelta(days=1), zone), "channel_quota_day",
                                f"the platform allows {limits.per_customer_day} per customer per day"))
    cap = month_cap(limits, today)
    if cap is not None and sum(1 for t in sent if same_local_month(t, today, zone)) >= cap:
        blocks.append(Block(local_midnight(first_of_next_month(today), zone), "channel_quota_month",
                            f"the platform allows {cap} per customer this month"))
    return blocks


# Channels where a customer who removed us (deleted the guide, left, blocked the bot) can still be
# messaged. On WeCom a customer who deleted the guide is gone, and a Telegram user who blocked the bot
# cannot be written to: neither is listed, so win-back journeys never try there. Web chat keeps the
# conversation, and the customer reads it when they come back.
REACHABLE_AFTER_REMOVAL = frozenset({"webchat"})


def reachable_after_removal(channel: str) -> bool:
    """Whether the platform still permits contacting a customer who removed us (win-back may try)."""
    return channel in REACHABLE_AFTER_REMOVAL
