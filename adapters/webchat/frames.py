"""What the page may send over the socket, checked before anything acts on it.

A frame that is not JSON, has the wrong types, or carries text that cannot be stored (a lone
UTF-16 surrogate such as "\\ud800") becomes a Chinese error for the sender; the socket stays open.
"""
from __future__ import annotations

import json
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

MAX_CLIENT_ID = 64  # the page's own message id; scoped to the sender it must fit a 191-character key
MAX_FRAME_CHARS = 64 * 1024  # real frames are far smaller; a longer one is refused before parsing

NOT_JSON = "消息格式不对：需要一个带 type 的 JSON 对象，请刷新页面后重试"
BAD_FIELDS = "消息格式不对，请刷新页面后重试"
BAD_CHARACTERS = "消息里有无法识别的字符，没有发送，请删掉后重试"
UNKNOWN_TYPE = "不认识的消息类型，请刷新页面后重试"
TOO_LONG = "消息太长，没有发送"


class _Frame(BaseModel):
    # strict: an object where a string belongs is an error, not str(object)
    model_config = ConfigDict(extra="ignore", strict=True, frozen=True)


_STATE = re.compile(r"[A-Za-z0-9_-]{1,64}")


class JoinFrame(_Frame):
    """`{type: join, role, name, session}`: a guide's identity comes from the login cookie instead."""

    type: Literal["join"]
    role: Literal["customer", "member", "guide"] = "customer"
    name: str = Field("", max_length=200)
    session: str | None = Field(None, max_length=512)
    source: str | None = None  # `?src=<state>` of a channel-code link (bot/channel_codes.py)

    @field_validator("source", mode="before")
    @classmethod
    def _source(cls, value: object) -> str | None:
        """A code's state, or no source at all: a hand-edited link must not put text in the greeting."""
        return value if isinstance(value, str) and _STATE.fullmatch(value) else None


class SayFrame(_Frame):
    """`{type: say, id, text, mention}`; `id` is the page's message id, unique only per sender."""

    type: Literal["say"]
    text: str = Field(max_length=20000)
    id: str | None = Field(None, min_length=1, max_length=MAX_CLIENT_ID)
    mention: bool = False

    @field_validator("id")
    @classmethod
    def _printable(cls, value: str | None) -> str | None:
        # an id with control characters could not be stored, and the engine would drop the message
        if value is not None and not value.isprintable():
            raise ValueError("the message id must be printable")
        return value


Frame = JoinFrame | SayFrame


class FrameError(ValueError):
    """A frame refused; the message is for the person at the page."""


def storable(text: str) -> bool:
    """False for text UTF-8 cannot carry (lone surrogates), which no database can store either."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def parse_frame(raw: str) -> Frame:
    """The frame in `raw`, or FrameError with a message for the sender."""
    if len(raw) > MAX_FRAME_CHARS:
        raise FrameError(TOO_LONG)
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: JSON nested deeper than Python recurses
        raise FrameError(NOT_JSON) from None
    if not isinstance(data, dict) or not isinstance(data.get("type"), str):
        raise FrameError(NOT_JSON)
    model: type[Frame]
    match data["type"]:
        case "join":
            model = JoinFrame
        case "say":
            model = SayFrame
        case _:
            raise FrameError(UNKNOWN_TYPE)
    # before validation, which would only call it a wrong type; frames are flat, so the top level is all
    if not all(storable(value) for value in data.values() if isinstance(value, str)):
        raise FrameError(BAD_CHARACTERS)
    try:
        return model.model_validate(data)
    except (ValidationError, RecursionError):
        raise FrameError(BAD_FIELDS) from None
