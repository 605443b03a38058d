"""渠道活码: one acquisition channel with several guides, a `state` that names it on every add, and tags.

On WeCom the code is a 「联系我」 QR code the platform makes (add_contact_way); WeCom spreads the
customers who scan it over its guides and hands the state back with each add. On Telegram it is a
deep link `https://t.me/<bot>?start=<state>` and on web chat `<public url>/?src=<state>`: siyu spreads
those customers over the guides itself, in turn. Either way the customer's source becomes the code's
name and the code's tags are applied (so `tag_added:` journeys start).
"""
from __future__ import annotations

import hashlib
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import case, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.transport import MakesContactCodes
from storage.models import ChannelCode, Contact

if TYPE_CHECKING:
    from bot.app import App

CHANNELS = ("wecom", "telegram", "webchat")
_BOT_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{3,31}$")
AddTag = Callable[[AsyncSession, Contact, str, datetime], Awaitable[bool]]


class ChannelCodeError(ValueError):
    """The operator asked for a code that cannot be made."""


@dataclass(frozen=True)
class CodeStats:
    """One channel code and what it brought: customers added, who replied, who bought."""

    name: str
    channel: str
    state: str
    guides: tuple[str, ...]
    tags: tuple[str, ...]
    link: str
    adds: int
    replies: int
    purchases: int

    def line(self) -> str:
        tags = f"，标签 {'、'.join(self.tags)}" if self.tags else ""
        return (f"{self.name}（{self.channel}，state {self.state}）导购 {'、'.join(self.guides)}{tags}："
                f"添加 {self.adds}，回复 {self.replies}，购买 {self.purchases}\n  {self.link}")


def state_for(name: str) -> str:
    """A short ASCII state for a code name: WeCom allows 30 characters, Telegram's start payload [A-Za-z0-9_-]."""
    return "cc_" + hashlib.sha256(name.encode()).hexdigest()[:12]


async def create_channel_code(app: App, name: str, guides: Sequence[str], tags: Sequence[str] = (),
                              channel: str = "wecom", bot_username: str | None = None) -> CodeStats:
    """Create a channel code (the console can call this too). Raises ChannelCodeError."""
    name = name.strip()
    if not name:
        raise ChannelCodeError("a channel code needs a name, e.g. siyu channel-code create 门店A扫码 --guides a,b")
    if channel not in CHANNELS:
        raise ChannelCodeError(f"unknown channel {channel!r} — use {', '.join(CHANNELS)}")
    guides = [g.strip() for g in guides if g.strip()]
    if not guides:
        raise ChannelCodeError("--guides needs at least one guide id from staff: in config.yaml")
    if (unknown := app.settings.unknown_guide(guides)) is not None:
        raise ChannelCodeError(unknown)
    known = {m.id: m for m in app.settings.staff}
    state = state_for(name)
    async with app.db.session() as session:
        if await session.scalar(select(ChannelCode.id).where(ChannelCode.name == name)) is not None:
            raise ChannelCodeError(f"there is already a channel code named {name!r} — pick another name")
    config_id = None
    if channel == "wecom":
        transport = app.transports.get("wecom")
        if not isinstance(transport, MakesContactCodes):
            raise ChannelCodeError("WeCom is not configured (adapters.wecom in config.yaml) — or use "
                                   "--channel telegram/webchat")
        ids = [known[g].identities.get("wecom") for g in guides]
        missing = [g for g, i in zip(guides, ids) if not i]
        if missing:
            raise ChannelCodeError(f"{', '.join(missing)} have no wecom identity under staff: in config.yaml")
        code = await transport.create_contact_code(state, [i for i in ids if i], name)
        config_id, link = code.config_id, code.qr_code
    elif channel == "telegram":
        if not bot_username or not _BOT_NAME.match(bot_username.removeprefix("@")):
            raise ChannelCodeError("--bot needs the Telegram bot's username, e.g. --bot shanchaji_bot")
        link = f"https://t.me/{bot_username.removeprefix('@')}?start={state}"
    else:
        link = f"{app.settings.server.public_url.rstrip('/')}/?src={state}"
    async with app.db.session() as session, session.begin():
        session.add(ChannelCode(name=name, state=state, channel=channel, guides=list(guides), tags=list(tags),
                                config_id=config_id, link=link, created_at=app.clock.now()))
    return CodeStats(name, channel, state, tuple(guides), tuple(tags), link, 0, 0, 0)


async def apply_channel_code(session: AsyncSession, contact: Contact, now: datetime, add_tag: AddTag,
                             spread: bool) -> ChannelCode | None:
    """A customer added with a code's state: the code becomes their source and its tags theirs.

    `spread`: pick their guide from the code's guides in turn (where the platform did not say whose they are).
    """
    if not contact.source:
        return None
    code = await session.scalar(select(ChannelCode).where(ChannelCode.state == contact.source))
    if code is None:
        return None
    if spread and code.guides:
        earlier = await session.scalar(select(func.count()).select_from(Contact).where(
            Contact.source == code.name, Contact.id != contact.id))
        contact.guide_key = code.guides[int(earlier or 0) % len(code.guides)]
    contact.source = code.name
    for tag in code.tags:
        await add_tag(session, contact, tag, now)
    return code


async def code_stats(app: App) -> list[CodeStats]:
    """Every channel code with its adds, replies and purchases, oldest first."""
    async with app.db.session() as session:
        codes = (await session.scalars(select(ChannelCode).order_by(ChannelCode.id))).all()
        counts = {row[0]: row[1:] for row in (await session.execute(
            select(Contact.source, func.count(),
                   func.sum(case((Contact.replies > 0, 1), else_=0)),
                   func.sum(case((Contact.purchased_at.isnot(None), 1), else_=0)))
            .where(Contact.source.in_([c.name for c in codes])).group_by(Contact.source))).all()}
    stats = []
    for code in codes:
        adds, replies, purchases = counts.get(code.name, (0, 0, 0))
        stats.append(CodeStats(code.name, code.channel, code.state, tuple(code.guides), tuple(code.tags), code.link,
                               int(adds or 0), int(replies or 0), int(purchases or 0)))
    return stats
