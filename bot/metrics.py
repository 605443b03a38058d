"""Every Prometheus metric siyu exports, defined once, on a registry per App.

A registry per App (not prometheus_client's global one) lets tests and `siyu simulate` run several
Apps in one process. The engine parts receive the App's `Metrics` and add one-line increments;
`/metrics` (bot/app.py) refreshes the queue depths with a few COUNT queries, then renders.
"""
from __future__ import annotations

from datetime import datetime

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import InboxItem, Message, Touch
from storage.touch_status import TouchStatus

CONTENT_TYPE = CONTENT_TYPE_LATEST
MAX_INBOX_ATTEMPTS = 5  # the inbox gives an item up after this many tries (storage/repo.py unprocessed_inbox)
# how late a due touch was claimed, and how long a message waited to be handed over: seconds to a day
LAG_BUCKETS = (0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 24 * 3600)
DELIVERY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 3600)


class Metrics:
    """The counters, histograms and gauges of one App."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.inbound = Counter(
            "siyu_inbound_messages", "Messages received from people, by channel and chat (direct, group)",
            ["channel", "chat"], registry=r)
        self.faq_decisions = Counter(
            "siyu_faq_decisions", "FAQ cascade decisions by the tier that decided (handoff: no tier was sure)",
            ["tier"], registry=r)
        self.handoffs = Counter(
            "siyu_handoffs", "Conversations handed to a guide because the bot could not answer", ["channel"],
            registry=r)
        self.touches = Counter(
            "siyu_touch_decisions", "Scheduler decisions on proactive touches (sent, deferred, dropped, …) "
            "with the policy's reason", ["decision", "reason"], registry=r)
        self.scheduler_lag = Histogram(
            "siyu_scheduler_lag_seconds", "How late a due touch was when the scheduler took it up",
            buckets=LAG_BUCKETS, registry=r)
        self.scheduler_failures = Counter(
            "siyu_scheduler_pass_failures", "Serve-loop passes that raised (the outbox keeps the work)",
            registry=r)
        self.delivered = Counter(
            "siyu_messages_delivered", "Outbound messages and actions accepted by the platform", ["channel"],
            registry=r)
        self.delivery_latency = Histogram(
            "siyu_delivery_latency_seconds", "From queued to accepted by the platform", ["channel"],
            buckets=DELIVERY_BUCKETS, registry=r)
        self.delivery_failures = Counter(
            "siyu_delivery_failures", "Failed deliveries: retry (tried again later), gave_up, or in_doubt "
            "(may have arrived; not sent again)",
            ["channel", "outcome"], registry=r)
        self.guard_actions = Counter(
            "siyu_guard_actions", "Group guard punishments, by the rule broken and the action taken",
            ["rule", "action"], registry=r)
        self.queue_depth = Gauge(
            "siyu_queue_depth", "Work waiting: touches_due (pending and due), touches_scheduled (pending), "
            "messages_undelivered, inbox_unprocessed; refreshed at each scrape", ["queue"], registry=r)

    def observe_delivery(self, channel: str, queued_at: datetime, now: datetime) -> None:
        self.delivered.labels(channel).inc()
        self.delivery_latency.labels(channel).observe(max((now - queued_at).total_seconds(), 0.0))

    def observe_lag(self, due_at: datetime, now: datetime) -> None:
        self.scheduler_lag.observe(max((now - due_at).total_seconds(), 0.0))

    async def refresh_queue_depths(self, session: AsyncSession, now: datetime) -> None:
        """A few COUNT queries on indexed columns (awaited: nothing blocks the event loop)."""
        for queue, depth in (await queue_depths(session, now)).items():
            self.queue_depth.labels(queue).set(depth)

    def render(self) -> bytes:
        return generate_latest(self.registry)


async def queue_depths(session: AsyncSession, now: datetime) -> dict[str, int]:
    pending = Touch.status == TouchStatus.PENDING
    queries = {
        "touches_due": select(func.count()).select_from(Touch).where(pending, Touch.due_at <= now),
        "touches_scheduled": select(func.count()).select_from(Touch).where(pending),
        "messages_undelivered": select(func.count()).select_from(Message).where(
            Message.direction == "out", Message.delivered_at.is_(None), Message.delivery_error.is_(None),
            Message.awaiting_until.is_(None)),
        "inbox_unprocessed": select(func.count()).select_from(InboxItem).where(
            InboxItem.processed_at.is_(None), InboxItem.attempts < MAX_INBOX_ATTEMPTS),
    }
    return {queue: int(await session.scalar(query) or 0) for queue, query in queries.items()}
