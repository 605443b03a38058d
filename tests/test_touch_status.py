"""The touch lifecycle: every status change goes through one module, which refuses moves it does not have."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select

from storage.db import Database
from storage.models import Contact, Touch
from storage.touch_status import IllegalTransition, TouchStatus, allowed, move, release

NOW = datetime(2026, 3, 2, 2, 0, tzinfo=timezone.utc)


def test_only_the_drawn_moves_exist() -> None:
    assert allowed(TouchStatus.PENDING, TouchStatus.CLAIMED)
    assert allowed(TouchStatus.CLAIMED, TouchStatus.AWAITING_GUIDE)
    assert allowed(TouchStatus.AWAITING_GUIDE, TouchStatus.SENT)
    assert not allowed(TouchStatus.SENT, TouchStatus.AWAITING_GUIDE)  # a sent touch is never rewound
    assert not allowed(TouchStatus.PENDING, TouchStatus.SENT)        # nothing is sent without a claim
    for final in (TouchStatus.SENT, TouchStatus.SKIPPED, TouchStatus.DROPPED, TouchStatus.CANCELLED):
        assert not any(allowed(final, target) for target in TouchStatus)


async def test_moves_are_guarded_by_the_previous_state(db_url: str) -> None:
    db = Database(db_url)
    await db.upgrade()
    try:
        async with db.session() as session, session.begin():
            contact = Contact(channel="test", external_id="c1", name="c1", tags=[], interests=[], opted_out=False,
                              churned=False, replies=0, added_at=NOW)
            session.add(contact)
            await session.flush()
            touch = Touch(contact_id=contact.id, journey_id="j", step_id="s", idempotency_key="k", due_at=NOW,
                          status=TouchStatus.CLAIMED, claimed_by="worker-a", claimed_until=NOW + timedelta(minutes=2),
                          created_at=NOW)
            session.add(touch)
            await session.flush()
            touch_id = touch.id
        async with db.session() as session, session.begin():
            assert not await release(session, touch_id, "worker-b", TouchStatus.SENT)  # not b's claim
            assert await release(session, touch_id, "worker-a", TouchStatus.AWAITING_GUIDE, finished_at=NOW)
            assert not await release(session, touch_id, "worker-a", TouchStatus.SENT)  # no longer claimed
            with pytest.raises(IllegalTransition):
                await move(session, Touch.id == touch_id, (TouchStatus.SENT,), TouchStatus.AWAITING_GUIDE)
            assert await move(session, Touch.id == touch_id, (TouchStatus.AWAITING_GUIDE,), TouchStatus.SENT) == [
                touch_id]
        async with db.session() as session:
            stored = await session.scalar(select(Touch).where(Touch.id == touch_id))
        assert stored is not None and stored.status == TouchStatus.SENT and stored.claimed_by is None
    finally:
        await db.close()
