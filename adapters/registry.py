"""Every platform siyu can run on. Adding one is one line here plus its own package."""
from __future__ import annotations

from typing import Any

from adapters import telegram, webchat, wecom
from bot.plugin import AdapterSpec

ADAPTERS: tuple[AdapterSpec[Any], ...] = (webchat.SPEC, telegram.SPEC, wecom.SPEC)
