"""The LLM tier's record: each call with its latency and pick, and whether a guide later agreed."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import LlmCall, Message


async def record_llm_call(session: AsyncSession, question: Message, model: str, latency_ms: float,
                          picked: str | None, confidence: float | None, failure: str | None, answered: bool,
                          at: datetime) -> LlmCall:
    """Remember one call for the customer's `question` (already added to the session)."""
    if question.id is None:
        await session.flush()
    call = LlmCall(message_id=question.id, model=model, latency_ms=latency_ms, picked=picked,
                   confidence=confidence, failure=failure, answered=answered, asked_at=at)
    session.add(call)
    return call


async def record_guide_verdict(session: AsyncSession, message_id: int, intent_id: str | None,
                               at: datetime | None = None) -> int:
    """A guide said what the question `message_id` really was (`intent_id`; None: not an FAQ question).

    Every LLM call about it becomes `confirmed` (it picked the same) or `corrected`; returns how many.
    A failed call picked nothing: it is confirmed only when the guide says there was nothing to pick."""
    calls = (await session.execute(select(LlmCall).where(LlmCall.message_id == message_id))).scalars().all()
    for call in calls:
        call.verdict = "confirmed" if call.picked == intent_id else "corrected"
        call.guide_intent = intent_id
        call.judged_at = at  # the caller's clock (bot/clock.py); None when it has none to give
    return len(calls)
