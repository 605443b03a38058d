"""Group members' display names as the guard saw them, so staff read 「卖包」 rather than `c_spam016`.

Most group members are not contacts (they never added a guide), so the name a platform gave with the
message the guard acted on is kept beside the guard's log; a contact's own name wins when there is one.
"""
from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from storage import repo
from storage.models import Contact, KeyValue

NAME_KEY = "guard:name:{channel}:{member}"


async def remember_name(session: AsyncSession, channel: str, member: str, name: str, now: datetime) -> None:
    """Keep the name `member` went by when the guard judged them (nothing when the platform gave none)."""
    if name and name != member:
        await repo.set_value(session, NAME_KEY.format(channel=channel, member=member), name, now)


async def display_names(session: AsyncSession, members: Iterable[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """(channel, member id) → the name staff should read; the member id itself when no name is known."""
    wanted = set(members)
    if not wanted:
        return {}
    names = {pair: pair[1] for pair in wanted}
    keys = {NAME_KEY.format(channel=c, member=m): (c, m) for c, m in wanted}
    for key, value in (await session.execute(select(KeyValue.key, KeyValue.value)
                                             .where(KeyValue.key.in_(list(keys))))).all():
        names[keys[key]] = value
    contacts = await session.execute(select(Contact.channel, Contact.external_id, Contact.name)
                                     .where(tuple_(Contact.channel, Contact.external_id).in_(list(wanted))))
    for channel, member, name in contacts.all():
        if name:
            names[(channel, member)] = name
    return names
