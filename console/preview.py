"""Journey preview: one imagined customer goes through one journey on a virtual clock.

The real scheduler, policy and templates run against a private in-memory database, as in
`siyu simulate`, so the timeline shows exactly what this customer would receive and why not,
and nothing touches the brand's data or reaches a platform.
"""
from __future__ import annotations

import asyncio
from datetime import timedelta
from zoneinfo import ZoneInfo

from bot.app import App
from bot.clock import VirtualClock
from bot.commands import reason_text
from bot.contacts import known_timezone
from bot.events import Action
from console.auth import Refused
from console.dashboard import NO_JOURNEY
from console.models import Preview, PreviewLine, PreviewRequest
from storage import repo
from storage.models import Contact

CHANNEL = "preview"
BAD_TIMEZONE = "时区 '{zone}' 不认识：请用 IANA 名称，例如 Asia/Shanghai"
MAX_PASSES = 2000  # a journey of a few dozen steps needs far fewer; a runaway script stops here
KIND = {"sent": "sent", "deferred": "deferred"}


class _Nowhere:
    """The preview's platform: accepts every message and shows it to nobody."""

    channel = CHANNEL

    async def deliver(self, action: Action) -> None:
        return None


class JourneyPreview:
    """Runs previews one at a time (each starts a small private App)."""

    def __init__(self, app: App) -> None:
        self.app = app
        self._lock = asyncio.Lock()

    async def run(self, journey_id: str, request: PreviewRequest) -> Preview:
        if journey_id not in self.app.library.journeys:
            known = ", ".join(sorted(self.app.library.journeys)) or "无"
            raise Refused(404, NO_JOURNEY.format(journey=journey_id, known=known))
        if request.timezone and known_timezone(request.timezone) is None:
            raise Refused(422, BAD_TIMEZONE.format(zone=request.timezone))
        async with self._lock:
            return await self._run(journey_id, request)

    async def _run(self, journey_id: str, request: PreviewRequest) -> Preview:
        brand_zone = ZoneInfo(self.app.settings.policy.timezone)
        start = request.start or self.app.clock.now()
        clock = VirtualClock(start)
        settings = self.app.settings.model_copy(update={"database_url": "sqlite+aiosqlite://"})
        sim = App(settings, self.app.library.root, clock, worker_id="preview", adapters=())
        sim.add_transport(_Nowhere())
        try:
            await sim.db.upgrade()
            await asyncio.to_thread(sim.library.reload)
            await sim.engine.sync_staff()
            journey = sim.library.journeys.get(journey_id)
            if journey is None:  # the file broke between the two loads
                raise Refused(409, NO_JOURNEY.format(journey=journey_id, known="请稍后再试"))
            async with sim.db.session() as session, session.begin():
                contact = Contact(channel=CHANNEL, external_id="preview-customer", name=request.name,
                                  guide_key=settings.default_guide, source=request.source, tags=sorted(request.tags),
                                  interests=sorted(request.interests), birthday=request.birthday,
                                  timezone=request.timezone, opted_out=False, churned=False, replies=0,
                                  added_at=start)
                session.add(contact)
                await session.flush()
                await sim.runner.enrol(session, contact, journey, start)
            zone = ZoneInfo(request.timezone) if request.timezone else brand_zone
            lines = [PreviewLine(at=start, local_time=f"{start.astimezone(zone):%Y-%m-%d %H:%M}", day=0,
                                 kind="enrolled", text=journey.title)]
            end = start + timedelta(days=request.days)
            for _ in range(MAX_PASSES):
                async with sim.db.session() as session:
                    due = await repo.next_due_at(session)
                if due is None or due > end:
                    break
                clock.set(max(due, clock.now()))
                for outcome in await sim.scheduler.run_due():
                    if outcome.journey_id != journey_id:
                        continue
                    local = outcome.at.astimezone(zone)
                    kind = KIND.get(outcome.decision, "dropped")
                    until = f"（延后到 {outcome.until.astimezone(zone):%m-%d %H:%M}）" if outcome.until else ""
                    lines.append(PreviewLine(
                        at=outcome.at, local_time=f"{local:%Y-%m-%d %H:%M}", kind=kind,
                        day=(local.date() - start.astimezone(zone).date()).days, step=outcome.step_id,
                        variant=outcome.variant, text=outcome.text, reason=outcome.reason,
                        reason_text=reason_text(outcome.reason) + until))
            return Preview(journey=journey_id, lines=lines)
        finally:
            await sim.close()
