"""Reading platform request bodies as untrusted input: a malformed body is a `BadBody` (HTTP 400), never a 500.

Size is bounded before this runs: the aiohttp application's `client_max_size` makes `request.read()`
answer 413 itself (bot/app.py sets it).
"""
from __future__ import annotations

import json
from typing import Any

from aiohttp import web

UTF8_NAMES = frozenset({"utf-8", "utf8", "us-ascii", "ascii"})  # ASCII is a subset of UTF-8
MAX_JSON_DEPTH = 32  # platform payloads nest a few levels; Telegram's deepest is well under 16


class BadBody(ValueError):
    """A request body we refuse with 400: not UTF-8, not JSON, nested too deep, or the wrong shape."""

    status = 400


async def read_text(request: web.Request) -> str:
    """The body as text. Platforms send UTF-8; another declared charset, or bytes that are not UTF-8, are refused."""
    charset = (request.charset or "utf-8").strip().lower()
    if charset not in UTF8_NAMES:
        raise BadBody("the body's charset is not UTF-8")
    raw = await request.read()  # over client_max_size aiohttp raises HTTPRequestEntityTooLarge: a 413
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadBody("the body is not UTF-8") from None


def parse_json(text: str, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """JSON from untrusted text; nesting deeper than `max_depth` is refused (and never recurses the stack)."""
    try:
        value = json.loads(text)
    except RecursionError:
        raise BadBody("the JSON is nested too deeply") from None
    except ValueError:
        raise BadBody("the body is not JSON") from None
    if _depth(value) > max_depth:
        raise BadBody("the JSON is nested too deeply")
    return value


def parse_json_object(text: str, max_depth: int = MAX_JSON_DEPTH) -> dict[str, Any]:
    value = parse_json(text, max_depth)
    if not isinstance(value, dict):
        raise BadBody("the body is not a JSON object")
    return value


def _depth(value: Any) -> int:
    """How deeply containers nest in a parsed JSON value, counted without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, level)
        stack.extend((child, level + 1) for child in children)
    return deepest
