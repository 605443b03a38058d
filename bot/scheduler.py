"""The durable scheduler: claims due touches from storage, asks the policy, renders, queues the message.

Exactly once: a touch's message is inserted in the same transaction that marks the touch sent,
and that transaction only commits while this worker still holds the claim. A worker that dies
mid-way leaves a claim that expires and is taken over; its uncommitted work never happened.
"""
from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import and_, select
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession

from bot.channel_rules import reachable_after_removal
from bot.clock import Clock
from bot.conditions import ConditionError
from bot.config import Settings
from bot.conversation_log import note_to_guide
from bot.enrolment import JourneyRunner
from bot.events import ChatType
from bot.facts import customer_view, customer_zone
from bot.journey import Journey, Step
from bot.library import ScriptLibrary
from bot.loyalty import PointsBook, replay
from bot.metrics import Metrics
from bot.policy import PolicyDecision, Rules, TouchPolicy, TouchRequest, Verdict
from bot.transport import ChannelLimits
from bot.templates import TemplateProblem, render
from storage import repo
from storage.db import Database, queued_outbound
from storage.models import Contact, Enrolment, Message, PointsEntry, Touch, TouchLog
from storage.repo import ContactRow, EnrolmentRow, TouchRow
from storage.touch_status import ACTIVE, TouchStatus, move, release

log = logging.getLogger(__name__)

HISTORY = timedelta(days=32)  # enough for the rolling week and the calendar month
MANUAL_PRIORITY = 100         # a guide asked for it by hand
MAX_CLAIMS = 5                # claimed this often without a decision: its processing keeps failing
SQLITE_BATCH = 50             # on SQLite a batch holds the only write lock, and live replies wait for all of it

# the batch decides from plain rows (storage/repo.py `claimed_touches`), a single touch from ORM objects
AnyTouch = Touch | TouchRow
AnyContact = Contact | ContactRow
AnyEnrolment = Enrolment | EnrolmentRow


class LostClaim(Exception):
    """Another worker took this touch over (our lease expired); our transaction must roll back."""


@dataclass(frozen=True)
class TouchOutcome:
    """What happened to one touch in one pass; the simulation and tests read these."""

    touch_id: int
    contact_id: int
    journey_id: str
    step_id: str
    decision: str
    reason: str
    at: datetime
    variant: str | None = None
    text: str | None = None
    until: datetime | None = None
    # outbound messages it queued, claimed for the caller when run_due was asked to (a greeting to deliver now)
    queued: tuple[Message, ...] = field(default=(), compare=False, repr=False)


class Scheduler:
    """Runs due touches; `run_due()` is one pass, safe to call from many processes at once."""

    def __init__(self, db: Database, library: ScriptLibrary, settings: Settings, clock: Clock,
                 runner: JourneyRunner, worker_id: str,
                 limits_for: Callable[[str], ChannelLimits | None] = lambda channel: None,
                 metrics: Metrics | None = None) -> None:
        self.limits_for = limits_for  # what each channel allows, as its adapter declares it
        self.metrics = metrics or Metrics()
        self.db = db
        self.library = library
        self.settings = settings
        self.clock = clock
        self.runner = runner
        self.worker_id = worker_id
        self.policy = TouchPolicy()
        self._rules: dict[str, Rules] = {}
        self.lease = timedelta(seconds=settings.scheduler.lease_seconds)
        self._told: set[tuple[str, str, str, int]] = set()  # (guide, journey, step, scripts version) told

    @property
    def batch_size(self) -> int:
        configured = self.settings.scheduler.batch
        return configured if self.db.dialect == "postgresql" else min(configured, SQLITE_BATCH)

    async def run_due(self, contacts: Collection[int] | None = None, claim_for: Collection[str] = (),
                      claimed_until: datetime | None = None) -> list[TouchOutcome]:
        """Claim and process every touch due now (only these customers', when given), batch after batch,
        until none is left. Messages on `claim_for` channels are claimed until `claimed_until` in the
        touch's own transaction, for the caller to deliver at once (`TouchOutcome.queued`)."""
        outcomes, _ = await self.run_some(None, contacts, claim_for, claimed_until)
        return outcomes

    async def run_some(self, max_batches: int | None, contacts: Collection[int] | None = None,
                       claim_for: Collection[str] = (),
                       claimed_until: datetime | None = None) -> tuple[list[TouchOutcome], bool]:
        """As `run_due`, but at most `max_batches` batches: (what was decided, whether more may be due)."""
        outcomes: list[TouchOutcome] = []
        batches = 0
        while True:
            claimed, done = await self.run_batch(contacts, claim_for, claimed_until)
            outcomes += done
            batches += 1
            if claimed < self.batch_size:
                return outcomes, False  # a short batch (or none) means nothing else was due
            if max_batches is not None and batches >= max_batches:
                return outcomes, True

    async def run_batch(self, contacts: Collection[int] | None = None, claim_for: Collection[str] = (),
                        claimed_until: datetime | None = None) -> tuple[int, list[TouchOutcome]]:
        """Claim one batch of due touches and decide it: (how many were claimed, what was committed).

        A worker with a large backlog calls this in a loop and keeps no more than one batch in memory.
        """
        now = self.clock.now()
        async with self.db.session() as session, session.begin():
            ids = await repo.claim_due_touches(session, self.worker_id, now, self.lease,
                                               self.batch_size, contacts)
        if not ids:
            return 0, []
        if claimed_until is None and len(ids) > 1:
            # the whole batch in one transaction; a greeting to deliver at once (claimed_until) goes touch by
            # touch, since its caller needs the ORM messages it queued
            told = set(self._told)
            try:
                async with self.db.session() as session, session.begin():
                    outcomes, lags = await self._process_batch(session, ids)
            except Exception as exc:
                self._told = told  # the guide notes of the rolled-back batch were never sent
                if _ends_the_pass(exc):
                    raise
                # nothing of the batch happened (it rolled back) and the claims are still ours: each touch
                # now gets its own transaction, so the one that fails cannot take the others with it
                log.warning("a batch of %d touches failed with %s at %s; each is tried on its own",
                            len(ids), type(exc).__name__, _where(exc))
            else:
                for due_at, at in lags:
                    self.metrics.observe_lag(due_at, at)
                # committed; one increment per kind of decision, not per touch
                for (decision, reason), n in Counter((o.decision, o.reason) for o in outcomes).items():
                    self.metrics.touches.labels(decision, reason).inc(n)
                return len(ids), outcomes
        return len(ids), await self._each(ids, claim_for, claimed_until)

    async def _each(self, ids: list[int], claim_for: Collection[str],
                    claimed_until: datetime | None) -> list[TouchOutcome]:
        """Touch by touch, one transaction each."""
        outcomes: list[TouchOutcome] = []
        for touch_id in ids:
            try:
                async with self.db.session() as session, session.begin():
                    outcome = await self._process(session, touch_id)
                    if outcome is not None and claimed_until is not None:
                        outcome = self._claimed(outcome, queued_outbound(session), claim_for, claimed_until)
            except LostClaim:
                log.warning("touch %s was taken over by another worker", touch_id)
                continue
            except Exception as exc:
                if _ends_the_pass(exc):
                    raise
                # one touch's failure must not stop everyone else's: its transaction rolled back, its
                # claim expires and it is tried again, until MAX_CLAIMS drops it (no PII in this line)
                log.error("touch %s failed with %s at %s; it is retried once its claim expires",
                          touch_id, type(exc).__name__, _where(exc))
                continue
            if outcome is not None:
                outcomes.append(outcome)
                self.metrics.touches.labels(outcome.decision, outcome.reason).inc()  # committed
        return outcomes

    @staticmethod
    def _claimed(outcome: TouchOutcome, queued: list[Message], channels: Collection[str],
                 until: datetime) -> TouchOutcome:
        mine = tuple(m for m in queued if m.channel in channels)
        for message in mine:
            message.delivery_claimed_until, message.delivery_attempts = until, 1
        return replace(outcome, queued=mine) if mine else outcome

    async def _process(self, session: AsyncSession, touch_id: int) -> TouchOutcome | None:
        now = self.clock.now()
        row = (await session.execute(
            select(Touch, Contact, Enrolment).join(Contact, Contact.id == Touch.contact_id)
            .outerjoin(Enrolment, Enrolment.id == Touch.enrolment_id).where(Touch.id == touch_id))).first()
        if row is None:
            return None
        touch, contact, enrolment = row
        if touch.claimed_by != self.worker_id or touch.status != TouchStatus.CLAIMED:
            return None
        self.metrics.observe_lag(touch.due_at, now)
        journey = self.library.journeys.get(touch.journey_id)
        step = journey.step(touch.step_id) if journey else None

        if touch.attempts > MAX_CLAIMS:
            return await self._finish(session, touch, TouchStatus.DROPPED, "too_many_attempts",
                                      f"claimed {touch.attempts} times without finishing; see the error log", now)
        if journey is None or step is None:
            return await self._finish(session, touch, TouchStatus.DROPPED, "script_removed",
                                      f"{touch.journey_id}.{touch.step_id} is no longer in the scripts", now)
        if enrolment is not None and enrolment.status != "active":
            return await self._finish(session, touch, TouchStatus.CANCELLED, "enrolment_ended",
                                      f"journey ended ({enrolment.exit_reason})", now)
        held = await self.runner.held_until(session, contact, enrolment, touch, now)  # a guide has the chat
        if held is not None:
            return await self._defer(session, touch, PolicyDecision(Verdict.DEFER, "paused", "导购接管中，旅程暂停", held),
                                     now)
        if step.when is not None and touch.triggered_by is None:
            functions = await self._condition_functions(session, contact, enrolment, journey)
            points, level = await PointsBook(self.library.loyalty).facts(session, contact, now)
            try:
                passed = step.when.evaluate({"customer": customer_view(contact, now, points, level)}, functions)
            except ConditionError as exc:
                return await self._script_error(session, touch, contact, enrolment, journey, step,
                                                step.when_line or step.line, f"when: {exc}", now)
            if not passed:
                outcome = await self._finish(session, touch, TouchStatus.SKIPPED, "condition_false",
                                             f"when: {step.when.source}", now)
                await self._after(session, touch, contact, enrolment, journey, step, now)
                return outcome

        decision = self.policy.decide(await self._request(session, touch, contact, journey, step, now))
        if decision.verdict is Verdict.DEFER:
            return await self._defer(session, touch, decision, now)
        if decision.verdict is Verdict.DROP:
            outcome = await self._finish(session, touch, TouchStatus.DROPPED, decision.reason, decision.detail, now)
            if decision.reason in ("opted_out", "churned"):
                await self.runner.exit(session, contact, decision.reason, now, self.library.journeys)
            return outcome
        return await self._send(session, touch, contact, enrolment, journey, step, decision, now)

    async def _process_batch(self, session: AsyncSession,
                             ids: list[int]) -> tuple[list[TouchOutcome], list[tuple[datetime, datetime]]]:
        """Decide a whole batch in one transaction with a few set-based reads and bulk writes.

        The same decisions as `_process`, touch by touch: the common cases are decided here from facts
        loaded for the whole batch; anything with side effects of its own (a guide holding the chat, an
        exit, a script error, a customer's second touch in the batch, a reply-window channel) goes
        through `_process` afterwards, in this transaction, once the batch's own writes are in. Any
        failure rolls the whole batch back; the caller then tries each touch on its own.
        Returns the outcomes in id order and (due_at, now) of each decision, for the lag metric.
        """
        now = self.clock.now()
        rows = [(t, c, e) for t, c, e in await repo.claimed_touches(session, ids)
                if t.claimed_by == self.worker_id and t.status == TouchStatus.CLAIMED]
        contact_ids = {c.id for _, c, _ in rows}
        sent = await repo.proactive_sends_by_contact(session, contact_ids, now - HISTORY)
        due = await repo.due_touches_by_contact(session, contact_ids, now)
        by_enrolment = await repo.touches_by_enrolment(session, contact_ids,
                                                       {e.id for _, _, e in rows if e is not None})
        facts = await self._loyalty_facts(session, [c for _, c, _ in rows], now)

        batch = _Batch(now, {channel: self.limits_for(channel) for channel in {c.channel for _, c, _ in rows}},
                       self.library.journeys)
        later: list[int] = []  # decided by `_process` once the batch's writes are in
        seen: set[int] = set()  # a customer's next touch must see what their first one did: it waits its turn
        for touch, contact, enrolment in rows:
            if contact.id in seen or not self._decide_in_batch(batch, touch, contact, enrolment, sent, due,
                                                               by_enrolment, facts):
                later.append(touch.id)
            seen.add(contact.id)
        # written before `_process` loads the later touches' ORM objects, so they see the batch's changes
        await batch.write(session, self.worker_id, [c for _, c, _ in rows], [e for _, _, e in rows if e is not None])
        outcomes = batch.outcomes
        for touch_id in later:
            outcome = await self._process(session, touch_id)
            if outcome is not None:
                outcomes.append(outcome)
        order = {touch_id: n for n, touch_id in enumerate(ids)}
        outcomes.sort(key=lambda o: order[o.touch_id])
        if batch.sent:
            log.info("sent %d touches in one batch (%d decided on their own)", batch.sent, len(later))
        return outcomes, batch.lags

    def _decide_in_batch(self, batch: "_Batch", touch: TouchRow, contact: ContactRow, enrolment: EnrolmentRow | None,
                         sent: dict[int, list[datetime]], due: dict[int, list[tuple[int, str, str | None]]],
                         by_enrolment: dict[int, list[Any]], facts: dict[int, tuple[int, str]]) -> bool:
        """`_process` for one touch from the batch's facts; False leaves it to `_process` (nothing recorded)."""
        now = batch.now
        journey, step = batch.script(touch.journey_id, touch.step_id)
        limits = batch.limits[contact.channel]
        if limits is not None and limits.reply_window is not None:
            return False  # the window needs the conversation's delivery counts
        if touch.attempts > MAX_CLAIMS:
            batch.finish(touch, TouchStatus.DROPPED, "too_many_attempts",
                         f"claimed {touch.attempts} times without finishing; see the error log")
            return True
        if journey is None or step is None:
            batch.finish(touch, TouchStatus.DROPPED, "script_removed",
                         f"{touch.journey_id}.{touch.step_id} is no longer in the scripts")
            return True
        if enrolment is not None and enrolment.status != "active":
            batch.finish(touch, TouchStatus.CANCELLED, "enrolment_ended", f"journey ended ({enrolment.exit_reason})")
            return True
        if enrolment is not None and enrolment.paused_at is not None and touch.triggered_by is None:
            return False  # a guide took the chat over: `held_until` may resume the journey
        if step.on is not None and enrolment is not None:
            return False  # a yearly step schedules its next occurrence
        touches = by_enrolment.get(enrolment.id, []) if enrolment is not None else []
        points, level = facts[contact.id]
        if step.when is not None and touch.triggered_by is None:
            finished = {step_id: finished_at for _, step_id, _, finished_at in touches}
            try:
                passed = step.when.evaluate({"customer": customer_view(contact, now, points, level)},
                                            self._functions(contact, enrolment, journey, finished))
            except ConditionError:
                return False  # a script error: `_process` drops it and tells the guide
            if not passed:
                batch.finish(touch, TouchStatus.SKIPPED, "condition_false", f"when: {step.when.source}")
                self._complete(enrolment, journey, touch, touches, now)
                return True
        rivals = [(j, by) for touch_id, j, by in due.get(contact.id, []) if touch_id != touch.id]
        decision = self.policy.decide(self._request_from(touch, contact, journey, step, now,
                                                         sent.get(contact.id, []), rivals, 0, limits,
                                                         batch.journeys))
        if decision.verdict is Verdict.DEFER:
            batch.release(touch, TouchStatus.PENDING, "deferred", decision.reason, decision.detail,
                          due_at=decision.until, reason=decision.reason, attempts=0)
            batch.outcomes.append(TouchOutcome(touch.id, touch.contact_id, touch.journey_id, touch.step_id,
                                               "deferred", decision.reason, now, until=decision.until))
            return True
        if decision.verdict is Verdict.DROP:
            if decision.reason in ("opted_out", "churned"):
                return False  # the customer leaves their journeys too
            batch.finish(touch, TouchStatus.DROPPED, decision.reason, decision.detail)
            return True
        variant = step.choose_variant(journey.id, contact.id)
        try:
            text = render(step.template_for(variant), self._render_context(contact, touch, now, points, level))
        except TemplateProblem:
            return False  # a script error: `_process` drops it and tells the guide
        guide_key = contact.guide_key or self.settings.default_guide
        guide = self.settings.guide(guide_key)
        sender = guide.identities.get(contact.channel, "bot") if guide else "bot"
        batch.message(contact, sender, text, touch.id, f"touch:{touch.idempotency_key}")
        status = TouchStatus.AWAITING_GUIDE if limits is not None and limits.assisted else TouchStatus.SENT
        detail = decision.detail + (f"; variant {variant.name}" if variant else "")
        if touch.triggered_by:
            detail += f"; triggered by {touch.triggered_by}"
        batch.release(touch, status, "sent", decision.reason, detail, proactive=not step.reply, finished_at=now,
                      variant=variant.name if variant else None, reason=decision.reason)
        if enrolment is not None and variant is not None:
            enrolment.variants = {**(enrolment.variants or {}), step.id: variant.name}
        self.runner.listen(enrolment, step, now)  # an on_reply step hears the next reply
        if step.tag and step.tag not in (contact.tags or []):
            contact.tags = sorted({*(contact.tags or []), step.tag})
            batch.message(contact, sender, step.tag, None, f"tag:{touch.idempotency_key}", action="tag",
                          target_id=contact.external_id)
        self._complete(enrolment, journey, touch, touches, now)
        batch.sent += 1
        batch.outcomes.append(TouchOutcome(touch.id, contact.id, journey.id, step.id, "sent", decision.reason, now,
                                           variant.name if variant else None, text))
        return True

    @staticmethod
    def _complete(enrolment: EnrolmentRow | None, journey: Journey, touch: TouchRow, touches: list[Any],
                  now: datetime) -> None:
        """`_after` for a journey without yearly steps, from the batch's snapshot of the enrolment's touches."""
        if enrolment is None or any(s.on is not None for s in journey.steps):
            return
        if not any(touch_id != touch.id and status in ACTIVE for touch_id, _, status, _ in touches):
            enrolment.status, enrolment.exited_at, enrolment.exit_reason = "completed", now, "completed"

    async def _loyalty_facts(self, session: AsyncSession, contacts: list[ContactRow],
                             now: datetime) -> dict[int, tuple[int, str]]:
        """`PointsBook.facts` for many customers: one read of their ledger rows."""
        program = self.library.loyalty
        if program is None:
            return {c.id: (0, c.level or "") for c in contacts}
        entries: dict[int, list[PointsEntry]] = {}
        if contacts:
            for entry in (await session.scalars(select(PointsEntry).where(
                    repo.ids_in(session, PointsEntry.contact_id, [c.id for c in contacts])))).all():
                entries.setdefault(entry.contact_id, []).append(entry)
        nothing = replay([], now).balance  # most customers have no ledger rows: replayed once, not per customer
        return {c.id: (replay(entries[c.id], now).balance if c.id in entries else nothing,
                       program.level(c.level).name) for c in contacts}

    def rules_for(self, journey_id: str) -> Rules:
        if journey_id not in self._rules:
            self._rules[journey_id] = Rules.from_settings(self.settings.policy, journey_id)
        return self._rules[journey_id]

    def priority_of(self, journey_id: str, triggered_by: str | None,
                    journeys: Mapping[str, Journey] | None = None) -> int:
        """The touch's priority; `journeys`: the library's, when the caller already has them (a batch)."""
        if triggered_by is not None:
            return MANUAL_PRIORITY
        journey = (self.library.journeys if journeys is None else journeys).get(journey_id)
        return journey.priority if journey else 0

    async def _request(self, session: AsyncSession, touch: Touch, contact: Contact, journey: Journey, step: Step,
                       now: datetime) -> TouchRequest:
        """Load what the policy needs: recent sends, competing touches, the customer's last message."""
        if step.reply:
            sent: list[datetime] = []
            rivals: list[tuple[str, str | None]] = []
        else:
            sent = await repo.proactive_sends_since(session, contact.id, now - HISTORY)
            rivals = await repo.competing_touches(session, contact.id, touch.id, now)
        limits = self.limits_for(contact.channel)
        window_used = 0
        if limits is not None and limits.reply_window is not None:
            _, window_used = await repo.delivery_window(session, contact.channel, contact.external_id)
        return self._request_from(touch, contact, journey, step, now, sent, rivals, window_used, limits,
                                  self.library.journeys)

    def _request_from(self, touch: AnyTouch, contact: AnyContact, journey: Journey, step: Step, now: datetime,
                      sent: list[datetime], rivals: list[tuple[str, str | None]], window_used: int,
                      limits: ChannelLimits | None, journeys: Mapping[str, Journey]) -> TouchRequest:
        """The policy's question, from facts already loaded (one touch's queries, or a batch's)."""
        competing = None if step.reply else max((self.priority_of(j, by, journeys) for j, by in rivals),
                                                default=None)
        return TouchRequest(
            now=now, zone=customer_zone(contact, self.settings.policy.timezone), rules=self.rules_for(journey.id),
            opted_out=contact.opted_out, reply=step.reply,
            # a win-back journey may still write where the platform permits it (bot/channel_rules.py)
            churned=contact.churned and not (journey.trigger.kind == "churned"
                                             and reachable_after_removal(contact.channel)), window=step.window,
            priority=self.priority_of(journey.id, touch.triggered_by, journeys), competing_priority=competing,
            triggered_by=touch.triggered_by, first_due_at=touch.first_due_at, expire=journey.expire_of(step),
            last_inbound_at=contact.last_inbound_at, sent=[] if step.reply else sent,
            channel=limits, window_used=window_used)

    async def _send(self, session: AsyncSession, touch: Touch, contact: Contact, enrolment: Enrolment | None,
                    journey: Journey, step: Step, decision: PolicyDecision, now: datetime) -> TouchOutcome:
        variant = step.choose_variant(journey.id, contact.id)
        points, level = await PointsBook(self.library.loyalty).facts(session, contact, now)
        try:
            text = render(step.template_for(variant), self._render_context(contact, touch, now, points, level))
        except TemplateProblem as exc:
            return await self._script_error(session, touch, contact, enrolment, journey, step,
                                            step.text_line(variant) + exc.line - 1, str(exc), now)
        guide_key = contact.guide_key or self.settings.default_guide
        guide = self.settings.guide(guide_key)
        sender = guide.identities.get(contact.channel, "bot") if guide else "bot"
        message = repo.add_message(
            session, channel=contact.channel, chat_type=ChatType.DIRECT.value, chat_id=contact.external_id,
            direction="out", sender_role="bot", sender_id=sender, contact_id=contact.id, text=text,
            touch_id=touch.id, idempotency_key=f"touch:{touch.idempotency_key}", created_at=now)
        # on an assisted channel a person still has to send it: the platform's confirmation finishes it
        limits = self.limits_for(contact.channel)
        status = TouchStatus.AWAITING_GUIDE if limits is not None and limits.assisted else TouchStatus.SENT
        if not await release(session, touch.id, self.worker_id, status, finished_at=now,
                             variant=variant.name if variant else None, reason=decision.reason):
            raise LostClaim(touch.id)
        detail = decision.detail + (f"; variant {variant.name}" if variant else "")
        if touch.triggered_by:
            detail += f"; triggered by {touch.triggered_by}"
        repo.log_decision(session, touch, "sent", decision.reason, detail, now, proactive=not step.reply)
        if enrolment is not None and variant is not None:
            enrolment.variants = {**(enrolment.variants or {}), step.id: variant.name}
        self.runner.listen(enrolment, step, now)  # an on_reply step hears the next reply
        if step.tag and step.tag not in (contact.tags or []):
            contact.tags = sorted({*(contact.tags or []), step.tag})
            repo.add_message(session, channel=contact.channel, chat_type=ChatType.DIRECT.value,
                             chat_id=contact.external_id, direction="out", sender_role="bot", sender_id=sender,
                             contact_id=contact.id, text=step.tag, action="tag", target_id=contact.external_id,
                             idempotency_key=f"tag:{touch.idempotency_key}", created_at=now)
        await self._after(session, touch, contact, enrolment, journey, step, now)
        await session.flush()
        log.info("sent %s.%s to contact %s (message %s)", journey.id, step.id, contact.id, message.id)
        return TouchOutcome(touch.id, contact.id, journey.id, step.id, "sent", decision.reason, now,
                            variant.name if variant else None, text)

    async def _defer(self, session: AsyncSession, touch: Touch, decision: PolicyDecision,
                     now: datetime) -> TouchOutcome:
        # a deferral is a decision, so the count of undecided claims starts again
        if not await release(session, touch.id, self.worker_id, TouchStatus.PENDING, due_at=decision.until,
                             reason=decision.reason, attempts=0):
            raise LostClaim(touch.id)
        repo.log_decision(session, touch, "deferred", decision.reason, decision.detail, now)
        return TouchOutcome(touch.id, touch.contact_id, touch.journey_id, touch.step_id, "deferred",
                            decision.reason, now, until=decision.until)

    async def _finish(self, session: AsyncSession, touch: Touch, status: TouchStatus, reason: str, detail: str,
                      now: datetime) -> TouchOutcome:
        if not await release(session, touch.id, self.worker_id, status, reason=reason, finished_at=now):
            raise LostClaim(touch.id)
        repo.log_decision(session, touch, status, reason, detail, now)
        return TouchOutcome(touch.id, touch.contact_id, touch.journey_id, touch.step_id, status, reason, now)

    async def _script_error(self, session: AsyncSession, touch: Touch, contact: Contact, enrolment: Enrolment | None,
                            journey: Journey, step: Step, line: int, problem: str, now: datetime) -> TouchOutcome:
        """A condition or text that fails for this customer: drop only this touch, tell the guide once.

        The journey goes on (the next steps, next year's occasion), as after a false condition.
        """
        where = f"{journey.path}:{line}"
        outcome = await self._finish(session, touch, TouchStatus.DROPPED, "script_error", f"{where}: {problem}", now)
        await self._after(session, touch, contact, enrolment, journey, step, now)
        log.error("%s: step '%s' failed for contact %s, touch dropped (script_error) — fix the script and run "
                  "siyu check", where, step.id, contact.id)
        await self._tell_guide(session, contact, journey, step, where, now)
        return outcome

    async def _tell_guide(self, session: AsyncSession, contact: Contact, journey: Journey, step: Step, where: str,
                          now: datetime) -> None:
        """One note per guide and broken step (per scripts version), like a hand-off note: not one per customer."""
        key = contact.guide_key or self.settings.default_guide
        told = (key or "", journey.id, step.id, self.library.version)
        if key is None or told in self._told:
            return
        text = (f"【话术出错】「{journey.title}」的步骤 {step.id} 出错，发给 {contact.name}（#{contact.id}）的这条消息"
                f"已取消，其他顾客照常发送。请运营修改 {where} 后运行 siyu check；同一步骤不再逐条提醒。")
        if await note_to_guide(session, key, contact.channel, contact.id, text, now):
            self._told.add(told)
        else:
            log.warning("no guide to tell about the script error for contact %s", contact.id)

    async def _after(self, session: AsyncSession, touch: Touch, contact: Contact, enrolment: Enrolment | None,
                     journey: Journey, step: Step, now: datetime) -> None:
        """Yearly steps schedule their next occurrence; a journey with nothing left completes."""
        if enrolment is None:
            return
        if step.on is not None:
            await self.runner.schedule_step(session, contact, enrolment, step, now, after=touch.due_at.date())
            return
        if all(s.on is None for s in journey.steps) and not await repo.has_other_active_touches(
                session, enrolment.id, touch.id):
            enrolment.status, enrolment.exited_at, enrolment.exit_reason = "completed", now, "completed"

    async def _condition_functions(self, session: AsyncSession, contact: Contact, enrolment: Enrolment | None,
                                   journey: Journey) -> dict[str, Any]:
        finished = {t.step_id: t.finished_at for t in await repo.enrolment_touches(session, enrolment.id)} \
            if enrolment else {}
        return self._functions(contact, enrolment, journey, finished)

    @staticmethod
    def _functions(contact: AnyContact, enrolment: AnyEnrolment | None, journey: Journey,
                   finished: dict[str, datetime | None]) -> dict[str, Any]:
        """The functions `when:` may call; `finished` is when each step's touch of this enrolment finished."""

        def replied_since(step_id: str) -> bool:
            finished_at = finished.get(step_id)
            step = journey.step(step_id)
            if finished_at is not None:
                since = finished_at
            elif enrolment is not None and step is not None and step.at is not None:
                since = enrolment.enrolled_at + step.at
            else:
                return False
            return contact.last_inbound_at is not None and contact.last_inbound_at >= since

        def has_tag(tag: str) -> bool:
            return tag in (contact.tags or [])

        return {"replied_since": replied_since, "has_tag": has_tag}

    def _render_context(self, contact: AnyContact, touch: AnyTouch, now: datetime, points: int = 0,
                        level: str = "") -> dict[str, Any]:
        guide = self.settings.guide(contact.guide_key)
        context: dict[str, Any] = {
            "customer": customer_view(contact, now, points, level),
            "guide": {"id": guide.id, "name": guide.name} if guide else {"id": "", "name": "您的专属顾问"},
            "brand": self.settings.brand,
        }
        if touch.occasion:
            context["festival"] = {"name": touch.occasion, "date": touch.due_at.date()}
        return context


class _Batch:
    """A batch's decisions, kept in memory and written with a few statements when the batch is decided."""

    def __init__(self, now: datetime, limits: dict[str, ChannelLimits | None], journeys: dict[str, Journey]) -> None:
        self.now = now
        self.limits = limits  # each channel's, asked once per batch
        self.journeys = journeys  # the library's, read once per batch (each read builds the dict)
        self._scripts: dict[tuple[str, str], tuple[Journey | None, Step | None]] = {}
        self.outcomes: list[TouchOutcome] = []
        self.lags: list[tuple[datetime, datetime]] = []
        self.sent = 0
        self._moves: dict[tuple[Any, ...], list[int]] = {}  # (status, values) -> touch ids
        self._log: list[dict[str, Any]] = []
        self._messages: list[dict[str, Any]] = []

    def script(self, journey_id: str, step_id: str) -> tuple[Journey | None, Step | None]:
        """The touch's journey and step (None: no longer in the scripts), looked up once per batch."""
        key = (journey_id, step_id)
        if key not in self._scripts:
            journey = self.journeys.get(journey_id)
            self._scripts[key] = (journey, journey.step(step_id) if journey else None)
        return self._scripts[key]

    def release(self, touch: TouchRow, status: TouchStatus, decision: str, why: str, detail: str,
                proactive: bool = True, **values: Any) -> None:
        """`release` (with `values`) and `log_decision` (with `decision`, `why` and `detail`) for one touch."""
        self._moves.setdefault((status, *sorted(values.items())), []).append(touch.id)
        self._log.append({"contact_id": touch.contact_id, "touch_id": touch.id, "journey_id": touch.journey_id,
                          "step_id": touch.step_id, "decision": decision, "reason": why, "detail": detail,
                          "proactive": proactive, "at": self.now})
        self.lags.append((touch.due_at, self.now))

    def finish(self, touch: TouchRow, status: TouchStatus, reason: str, detail: str) -> None:
        """`_finish` for one touch."""
        self.release(touch, status, status.value, reason, detail, reason=reason, finished_at=self.now)
        self.outcomes.append(TouchOutcome(touch.id, touch.contact_id, touch.journey_id, touch.step_id, status,
                                          reason, self.now))

    def message(self, contact: ContactRow, sender: str, text: str, touch_id: int | None, key: str,
                action: str = "say", target_id: str | None = None) -> None:
        self._messages.append({
            "channel": contact.channel, "chat_type": ChatType.DIRECT.value, "chat_id": contact.external_id,
            "direction": "out", "sender_role": "bot", "sender_id": sender, "contact_id": contact.id, "text": text,
            "action": action, "target_id": target_id, "touch_id": touch_id, "idempotency_key": key,
            "created_at": self.now})

    async def write(self, session: AsyncSession, worker: str, contacts: list[ContactRow],
                    enrolments: list[EnrolmentRow]) -> None:
        """One guarded UPDATE per kind of decision, the log and the messages in one COPY (or executemany)
        each, and what changed on the customers and enrolments in one UPDATE per table and set of columns.

        The touches are locked by this transaction (PostgreSQL) or the database is (SQLite), so every move
        must find its rows; one that does not means our claim was lost, and the batch rolls back."""
        changed: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
        for model, objects in ((Contact, contacts), (Enrolment, enrolments)):
            for row in {id(obj): obj.changes() for obj in objects}.values():  # once per customer, enrolment
                if row:
                    changed.setdefault((model, *row), []).append(row)
        for (model, *_), rows in changed.items():
            await repo.update_rows(session, model, rows)
        for (status, *values), touch_ids in self._moves.items():
            moved = await move(session, and_(repo.ids_in(session, Touch.id, touch_ids), Touch.claimed_by == worker),
                               (TouchStatus.CLAIMED,), status, **dict(values))
            if len(moved) != len(touch_ids):
                raise LostClaim(sorted(set(touch_ids) - set(moved)))
        await repo.add_rows(session, TouchLog, self._log)
        await repo.add_rows(session, Message, self._messages)


def _ends_the_pass(exc: Exception) -> bool:
    """Failures of the process or the database, not of one touch: every other touch would fail the same way.

    They end the pass (the serve loop logs it and tries again); claims taken so far expire and are taken over.
    """
    if isinstance(exc, (OSError, MemoryError, OperationalError, InterfaceError)):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


_PROJECT = str(Path(__file__).resolve().parent.parent)


def _where(exc: BaseException) -> str:
    """`file:line` of our deepest frame the exception passed: enough to find the bug, without its values."""
    where = "?"
    tb = exc.__traceback__
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if (filename.startswith(_PROJECT) and "site-packages" not in filename) or where == "?":
            where = f"{filename.removeprefix(_PROJECT + '/')}:{tb.tb_lineno}"
        tb = tb.tb_next
    return where
