"""The touch lifecycle: every status a touch can have, and the only code that changes it.

    pending ──claim──▶ claimed ──▶ sent | awaiting_guide | skipped | dropped | cancelled
       ▲                  │  └──(lease expired: another worker claims it again)
       └────defer─────────┘
    awaiting_guide ──▶ sent (the guide confirmed) | dropped (not in time, or refused)
    pending ──▶ cancelled (the journey ended)

Each move is one guarded UPDATE whose WHERE names the states it may leave, so a racing
worker or a stale caller changes nothing and learns so from the row count.
"""
from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import ColumnElement, and_, or_, update
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import Touch


class TouchStatus(StrEnum):
    PENDING = "pending"
    CLAIMED = "claimed"
    SENT = "sent"
    AWAITING_GUIDE = "awaiting_guide"
    SKIPPED = "skipped"
    DROPPED = "dropped"
    CANCELLED = "cancelled"


# where each status may be reached from
_FROM: dict[TouchStatus, frozenset[TouchStatus]] = {
    TouchStatus.PENDING: frozenset({TouchStatus.CLAIMED}),
    TouchStatus.CLAIMED: frozenset({TouchStatus.PENDING, TouchStatus.CLAIMED}),
    TouchStatus.SENT: frozenset({TouchStatus.CLAIMED, TouchStatus.AWAITING_GUIDE}),
    TouchStatus.AWAITING_GUIDE: frozenset({TouchStatus.CLAIMED}),
    TouchStatus.SKIPPED: frozenset({TouchStatus.CLAIMED}),
    TouchStatus.DROPPED: frozenset({TouchStatus.CLAIMED, TouchStatus.AWAITING_GUIDE}),
    TouchStatus.CANCELLED: frozenset({TouchStatus.PENDING, TouchStatus.CLAIMED}),
}
ACTIVE = (TouchStatus.PENDING, TouchStatus.CLAIMED)  # not yet decided
FINISHED = frozenset({TouchStatus.SENT, TouchStatus.SKIPPED, TouchStatus.DROPPED, TouchStatus.CANCELLED})


class IllegalTransition(ValueError):
    """A caller asked for a move the lifecycle does not have (a bug, not a race)."""


def allowed(source: TouchStatus, target: TouchStatus) -> bool:
    return source in _FROM[target]


def _check(sources: Iterable[TouchStatus], target: TouchStatus) -> list[TouchStatus]:
    wanted = list(sources)
    illegal = [s for s in wanted if not allowed(s, target)]
    if illegal:
        raise IllegalTransition(f"a touch cannot go from {', '.join(illegal)} to {target}")
    return wanted


async def move(session: AsyncSession, where: ColumnElement[bool], sources: Iterable[TouchStatus],
               target: TouchStatus, **values: Any) -> list[int]:
    """Move every touch matching `where` and in one of `sources` to `target`; returns the ids moved."""
    previous = _check(sources, target)
    if target in FINISHED or target is TouchStatus.PENDING:
        values.setdefault("claimed_by", None)
        values.setdefault("claimed_until", None)
    # no session sync: callers read the row again when they need its new state, and skip a SELECT per move
    result = await session.execute(
        update(Touch).where(where, Touch.status.in_(previous)).values(status=target, **values)
        .returning(Touch.id).execution_options(synchronize_session=False))
    return list(result.scalars().all())


async def release(session: AsyncSession, touch_id: int, worker: str, target: TouchStatus, **values: Any) -> bool:
    """Finish or defer a claimed touch, only while `worker` still holds the claim."""
    moved = await move(session, and_(Touch.id == touch_id, Touch.claimed_by == worker), (TouchStatus.CLAIMED,),
                       target, **values)
    return bool(moved)


def due_to_claim(now: datetime) -> ColumnElement[bool]:
    """Pending touches that are due, and claims whose lease ran out (their worker died)."""
    return or_(due_pending(now), expired_claims(now))


def due_pending(now: datetime) -> ColumnElement[bool]:
    return and_(Touch.status == TouchStatus.PENDING, Touch.due_at <= now)


def expired_claims(now: datetime) -> ColumnElement[bool]:
    return and_(Touch.status == TouchStatus.CLAIMED, Touch.claimed_until < now)


def claim_values(worker: str, now: datetime, lease: timedelta) -> dict[str, Any]:
    """What a claim writes: the claimant, its lease, and one more attempt."""
    _check((TouchStatus.PENDING, TouchStatus.CLAIMED), TouchStatus.CLAIMED)
    return {"status": TouchStatus.CLAIMED, "claimed_by": worker, "claimed_until": now + lease,
            "attempts": Touch.attempts + 1}
