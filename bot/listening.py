"""Journeys that listen: a step's `on_reply` branches on what the customer's next reply means, and FAQ
topics a customer asks about become their interests.

A reply's labels, most specific first: the FAQ intent it matched, then `question` (it reads as a
question), or else `negative` or `positive`. Opting out is not a label
here: it ends every journey before anything listens (see bot/direct.py).
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncSession

from bot.enrolment import JourneyRunner
from bot.journey import BRANCH_ENDS, REPLY_LABELS, Journey
from bot.problems import Problem
from intents.catalog import Catalog
from intents.normalize import normalize
from storage.models import Contact, Enrolment, TouchLog

if TYPE_CHECKING:
    from bot.library import ScriptLibrary

_QUESTION = re.compile(r"[?？]|吗|呢$|怎么|多少|什么|哪|几[个天号点]|是否|能不能|可不可以|有没有|如何|为啥|为什么")
_NEGATIVE = ("不用", "不要", "不需要", "算了", "没兴趣", "不感兴趣", "不了", "不想", "暂时不", "没必要", "no")
_POSITIVE = ("好的", "好呀", "好啊", "好滴", "可以", "想要", "需要", "要的", "行", "嗯", "谢谢", "感兴趣", "ok", "好", "要")


def reply_labels(text: str, intent_id: str | None) -> list[str]:
    """What a reply means, most specific first (pure)."""
    folded = normalize(text)
    labels = [intent_id] if intent_id else []
    if _QUESTION.search(text) or _QUESTION.search(folded):
        labels.append("question")
    elif any(word in folded for word in _NEGATIVE):
        labels.append("negative")
    elif any(word in folded for word in _POSITIVE):
        labels.append("positive")
    return labels


@dataclass
class Heard:
    """What the journeys made of a reply: the branches taken, and whether a person should answer it."""

    branches: list[tuple[str, str, str, str]] = field(default_factory=list)  # (journey, step, label, target)
    hand_off: bool = False

    @property
    def took_reply(self) -> bool:
        """A journey answers this reply itself (a branch step, or the end): no hand-off needed."""
        return bool(self.branches) and not self.hand_off


class Listening:
    """Hears a customer's 1v1 reply on behalf of their journeys."""

    def __init__(self, library: "ScriptLibrary", runner: JourneyRunner) -> None:
        self.library = library
        self.runner = runner

    async def heard(self, session: AsyncSession, contact: Contact, text: str, intent_id: str | None,
                    now: datetime, enrolments: Sequence[Enrolment]) -> Heard:
        """`enrolments`: the customer's live ones (`repo.live_enrolments`), as this transaction left them."""
        journeys = self.library.journeys
        if intent_id:
            learn_interests(contact, intent_id, journeys)
        heard = Heard()
        # a journey whose last step listens has completed, and a branch takes it up again
        listening = [e for e in enrolments if e.status in ("active", "completed")
                     and e.listening_until is not None and e.listening_until > now]
        if not listening:
            return heard
        labels = reply_labels(text, intent_id)
        for enrolment in listening:
            step_id = enrolment.listening_step
            enrolment.listening_step = enrolment.listening_until = None  # the next reply only
            journey = journeys.get(enrolment.journey_id)
            step = journey.step(step_id) if journey and step_id else None
            if journey is None or step is None or step.on_reply is None:
                continue
            chosen = step.on_reply.target(labels)
            if chosen is None:  # nothing to branch on: the journey goes on, and a reply still ends it if it says so
                if journey.exits_on("replied"):
                    await self.runner.exit_one(session, enrolment, "replied", now)
                continue
            label, target = chosen
            heard.branches.append((journey.id, step.id, label, target))
            session.add(TouchLog(contact_id=contact.id, journey_id=journey.id, step_id=step.id, decision="branched",
                                 reason=label, detail=f"on_reply → {target}", proactive=False, at=now))
            if target == "end":
                await self.runner.exit_one(session, enrolment, "branched", now)
            elif target == "handoff":
                heard.hand_off = True
            else:
                branch = journey.step(target)
                if branch is not None:
                    if enrolment.status == "completed":
                        enrolment.status, enrolment.exited_at, enrolment.exit_reason = "active", None, None
                    await self.runner.schedule_branch(session, contact, enrolment, branch, step.id, now)
        return heard


def learn_interests(contact: Contact, intent_id: str, journeys: Mapping[str, Journey]) -> None:
    """A customer who asks about an FAQ topic mapped to an interest has that interest from now on."""
    learned = {interest for journey in journeys.values() for intent, interest in journey.interests
               if intent == intent_id}
    if learned - set(contact.interests or []):
        contact.interests = sorted({*(contact.interests or []), *learned})


def reply_label_problems(journeys: Mapping[str, Journey], catalog: Catalog) -> list[Problem]:
    """Branch labels and interest keys must be FAQ intent ids (or a reply label): a typo would never match."""
    problems = []
    for journey in journeys.values():
        where = journey.path
        for step in journey.steps:
            on_reply = step.on_reply
            for (label, _), line in zip(on_reply.branches, on_reply.lines) if on_reply else ():
                if label not in REPLY_LABELS and catalog.get(label) is None:
                    problems.append(Problem(where, line, f"step '{step.id}' on_reply branch {label!r} "
                                            f"is not an FAQ intent id — use an id from faq.yaml or "
                                            f"{', '.join(REPLY_LABELS)}"))
        for intent, _ in journey.interests:
            if catalog.get(intent) is None:
                problems.append(Problem(where, journey.interests_line, f"interests: {intent!r} is not an FAQ intent "
                                        "id — use an id from faq.yaml"))
    return problems


__all__ = ["BRANCH_ENDS", "Heard", "Listening", "learn_interests", "reply_label_problems", "reply_labels"]
