"""A chat's history as its members saw it: what the guard deleted stays gone, its notices stay where they
happened, and nothing shows as an empty bubble."""
from __future__ import annotations

from collections.abc import Sequence

from bot.plugin import HistoryLine
from storage.models import Message

DELETED_NOTICE = "一条消息因违反群规已被删除"
NOTICES = ("mute", "unmute", "remove")  # moderation rows whose text the group was shown
CALLED_OFF = "called off"  # how `delivery_error` starts for an action staff took back before it went out


def visible_history(rows: Sequence[Message]) -> list[HistoryLine]:
    """`rows` in order (one conversation); what a member reloading the chat should see."""
    deleted = {m.target_ref for m in rows if m.action == "delete" and m.target_ref}
    lines = []
    for m in rows:
        if m.delivery_error and m.delivery_error.startswith(CALLED_OFF):
            continue  # never shown: staff took it back before it went out
        if m.direction == "in":
            if m.platform_ref and m.platform_ref in deleted:
                continue
            ref = f"in:{m.platform_ref}" if m.platform_ref else f"in:{m.id}"
        else:
            ref = str(m.id)
        sender = "bot" if m.sender_role == "bot" else m.sender_id
        if m.action == "delete":
            lines.append(HistoryLine(ref=ref, sender=sender, text=DELETED_NOTICE, at=m.created_at, notice=True))
        elif m.action in NOTICES and m.text.strip():
            lines.append(HistoryLine(ref=ref, sender=sender, text=m.text, at=m.created_at, notice=True))
        elif m.action in (None, "say") and m.text.strip():
            lines.append(HistoryLine(ref=ref, sender=sender, text=m.text, at=m.created_at,
                                     from_guide=m.direction == "out" and m.sender_role == "staff"))
    return lines
