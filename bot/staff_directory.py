"""Who is staff: exactly the identities config.yaml names, known in memory.

Storage mirrors them (`Engine.sync_staff`) for the console and for queries; a customer's message need not
ask the database whether its sender is a guide, the configuration already says.
"""
from __future__ import annotations

from collections.abc import Iterable

from bot.config import StaffMember
from bot.plugin import StaffIdentity


class StaffDirectory:
    """Looks up a sender among the configured staff identities."""

    def __init__(self, members: Iterable[StaffMember]) -> None:
        self._by_identity = {(channel, platform_id): StaffIdentity(m.id, platform_id, m.name)
                             for m in members for channel, platform_id in m.identities.items()}

    def lookup(self, channel: str, platform_id: str) -> StaffIdentity | None:
        return self._by_identity.get((channel, platform_id))

    def identities(self) -> list[tuple[tuple[str, str], StaffIdentity]]:
        """((channel, platform id), identity) of every configured staff identity."""
        return list(self._by_identity.items())
