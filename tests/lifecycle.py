"""What the lifecycle tests share: their scripts (journeys that listen to purchases, tags, levels,
churn and silence) and a readable view of a customer's points ledger."""
from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path

from sqlalchemy import select

from bot.business_events import BusinessEvents
from storage.models import Contact, PointsEntry
from tests.harness import ROOT, SCRIPTS, SHANGHAI, Harness

LIFECYCLE = ROOT / "tests" / "data" / "lifecycle"


def lifecycle_scripts(tmp_path: Path) -> Path:
    """tests/data/lifecycle's journeys and FAQ, with the fixture loyalty.yaml and guard.yaml."""
    scripts = tmp_path / "scripts"
    shutil.copytree(LIFECYCLE / "journeys", scripts / "journeys")
    shutil.copy(LIFECYCLE / "faq.yaml", scripts / "faq.yaml")
    # the shared fixture program, answering the lifecycle FAQ's 「查积分」 with the customer's own points
    loyalty = (SCRIPTS / "loyalty.yaml").read_text(encoding="utf-8") + "\nbalance_intent: check_points\n"
    (scripts / "loyalty.yaml").write_text(loyalty, encoding="utf-8")
    shutil.copy(SCRIPTS / "guard.yaml", scripts / "guard.yaml")
    return scripts


@asynccontextmanager
async def lifecycle_harness(db_url: str, start: datetime, tmp_path: Path) -> AsyncIterator[Harness]:
    """A harness on the lifecycle scripts, closed afterwards."""
    harness = await Harness.create(db_url, start, lifecycle_scripts(tmp_path))
    try:
        yield harness
    finally:
        await harness.close()


def events_of(h: Harness) -> BusinessEvents:
    """The harness's business-event intake, as the brand's systems would post to it."""
    return BusinessEvents(h.app.db, h.app.engine.contacts, h.clock)


async def contact_of(h: Harness, customer: str) -> Contact:
    async with h.app.db.session() as session:
        contact = await session.scalar(select(Contact).where(Contact.external_id == customer))
    assert contact is not None
    return contact


async def ledger(h: Harness, customer: str) -> list[str]:
    """`d<day> <reason> <+/-points> <detail>` per ledger row, in the order they happened."""
    contact = await contact_of(h, customer)
    async with h.app.db.session() as session:
        rows = (await session.scalars(select(PointsEntry).where(PointsEntry.contact_id == contact.id)
                                      .order_by(PointsEntry.at, PointsEntry.id))).all()
    return [f"d{(row.at.astimezone(SHANGHAI).date() - h.start.date()).days} {row.reason} {row.delta:+d} {row.detail}" for row in rows]
