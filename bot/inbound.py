"""Inbound input cleaned at the boundary, once for every channel, before the engine stores or reads it.

Platforms (and people pretending to be them) can send text no database should see: lone surrogates
that cannot be encoded, NUL that PostgreSQL refuses, control characters, megabytes in one message.
`Engine.handle` passes every Event through `clean_event`, so no channel needs its own rules.
"""
from __future__ import annotations

import logging
import re
from dataclasses import replace

from bot.events import Event

log = logging.getLogger(__name__)

# C0 controls except \t and \n, DEL, C1 controls, and surrogate code points (never valid on their own)
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")
_LINE_BREAKS = re.compile("\r\n?")
# widths of the storage columns these values land in (storage/models.py)
ID_WIDTH = 128          # contacts.external_id, messages.chat_id / sender_id
MESSAGE_ID_WIDTH = 191  # processed_inbound.message_id
NAME_WIDTH = 128        # contacts.name, contacts.source
TAG_WIDTH = 64


def clean(text: str) -> str:
    """Text without lone surrogates, NUL or other control characters; \\n and \\t stay, \\r\\n becomes \\n."""
    return _UNSAFE.sub("", _LINE_BREAKS.sub("\n", text))


def cut_note(limit: int) -> str:
    """What a message cut to `limit` characters says about it (the guide and the history see it)."""
    return f"（消息过长，已截取前 {limit} 字）"


def cap(text: str, limit: int) -> str:
    """At most `limit` characters of `text`; a longer text is cut there and the cut is noted."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}\n{cut_note(limit)}"


def _short(value: str | None, width: int) -> str | None:
    return clean(value)[:width] if value else value


def _words(values: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(word for word in (_short(v, TAG_WIDTH) for v in values) if word)


def _storable_id(value: str | None, width: int) -> bool:
    """Ids are the platform's, never rewritten: one that is not short, clean text cannot be real."""
    return value is None or (isinstance(value, str) and len(value) <= width and not _UNSAFE.search(value))


def clean_event(event: Event, max_chars: int) -> Event | None:
    """The event with clean, capped text and profile; None when its ids could not be stored as they are."""
    if not (_storable_id(event.sender_id, ID_WIDTH) and _storable_id(event.chat_id, ID_WIDTH)
            and _storable_id(event.message_id, MESSAGE_ID_WIDTH)):
        log.warning("dropping a %s event whose ids are not short, clean text", event.channel)
        return None
    text = event.text if isinstance(event.text, str) else ""
    profile = event.profile
    return replace(
        event,
        text=cap(clean(text), max_chars),
        tag=_short(event.tag, TAG_WIDTH),
        profile=replace(
            profile,
            name=_short(profile.name, NAME_WIDTH),
            source=_short(profile.source, NAME_WIDTH),
            tags=_words(profile.tags),
            interests=_words(profile.interests),
        ),
    )
