"""Applying the group guard: find what a message breaks, count strikes, queue delete/warn/mute/remove."""
from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from bot.events import ActionKind, ChatType, Event
from bot.guard import Finding, GuardRules, RecentMessage
from bot.metrics import Metrics
from bot.templates import TemplateProblem, render
from storage import repo
from storage.models import GuardEvent, Group

log = logging.getLogger(__name__)


class GroupModerator:
    """Decides and records punishments inside the engine's transaction; the outbox carries them out."""

    def __init__(self, metrics: Metrics | None = None) -> None:
        self.metrics = metrics or Metrics()

    async def review(self, session: AsyncSession, rules: GuardRules, event: Event, group: Group,
                     member_name: str) -> bool:
        """True when the message broke a rule (the bot then says nothing else about it)."""
        if event.sender_id in rules.exempt:
            return False
        now = event.at
        findings = rules.content_findings(event.text, event.content_type)
        since = now - max(rules.repeat_window, timedelta(seconds=rules.flood_seconds))
        recent = [RecentMessage(m.sender_id, m.chat_id, m.text, m.created_at)
                  for m in await repo.recent_group_messages(session, event.channel, since)]
        findings += rules.rate_findings(event.sender_id, event.text, now, recent)
        if not findings:
            return False

        membership = await repo.membership_of(session, group, event.sender_id)
        content_rule = any(f.rule in ("banned_word", "link", "blocked_type") for f in findings)
        newcomer = membership is not None and now - membership.joined_at <= timedelta(minutes=rules.new_member_minutes)
        strike = await repo.strikes_since(session, event.channel, group.external_id, event.sender_id,
                                          now - rules.escalation_window) + 1
        if content_rule and newcomer:
            findings.append(Finding("new_member_ad", f"posted within {rules.new_member_minutes} min of joining"))
            action = "remove"
        else:
            action = rules.action_for(strike)
        self._queue(session, rules, event, group, member_name, action, now)
        reason = "; ".join(f.detail for f in findings)
        session.add(GuardEvent(channel=event.channel, group_id=group.external_id, member_id=event.sender_id,
                               message_ref=event.message_id, rule=",".join(f.rule for f in findings),
                               strike=strike, action=action, reason=reason, excerpt=event.text[:200], at=now))
        log.info("guard: %s in %s — %s (strike %d → %s)", event.sender_id, group.external_id, reason, strike, action)
        for finding in findings:
            self.metrics.guard_actions.labels(finding.rule, action).inc()
        return True

    def _queue(self, session: AsyncSession, rules: GuardRules, event: Event, group: Group, member_name: str,
               action: str, now: datetime) -> None:
        def op(kind: ActionKind, text: str = "", until: datetime | None = None) -> None:
            key = f"guard:{event.channel}:{event.message_id}:{kind.value}" if event.message_id else None
            repo.add_message(session, channel=event.channel, chat_type=ChatType.GROUP.value,
                             chat_id=group.external_id, direction="out", sender_role="bot", sender_id="bot",
                             text=text, action=kind.value, target_id=event.sender_id, target_ref=event.message_id,
                             until=until, idempotency_key=key, created_at=now)

        if event.message_id:
            op(ActionKind.DELETE)
        if action == "warn":
            op(ActionKind.SAY, self._warning(rules, member_name))
        elif action == "mute":
            op(ActionKind.MUTE, f"{member_name} 已被禁言 {rules.mute_for}", now + rules.mute_for)
        else:
            op(ActionKind.REMOVE, f"{member_name} 多次违规，已被移出群聊")

    @staticmethod
    def _warning(rules: GuardRules, member: str) -> str:
        if rules.warning is None:
            return f"@{member} 请勿在群里发广告、链接或刷屏～"
        try:
            return render(rules.warning, {"member": member})
        except TemplateProblem:
            return f"@{member} 请勿在群里发广告、链接或刷屏～"
