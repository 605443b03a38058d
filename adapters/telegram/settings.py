"""`adapters.telegram` in config.yaml; the token and webhook secret come from the environment only."""
from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import ConfigDict, Field, SecretStr

from bot.validation import FileModel, Mistake

DEFAULT_API_BASE = "https://api.telegram.org/bot"
SECRET_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,256}")  # what Telegram accepts as a webhook secret_token


def _plain(value: Any) -> str:
    return value.get_secret_value() if isinstance(value, SecretStr) else str(value or "")


class TelegramSettings(FileModel):
    """Enabled by SIYU_TELEGRAM_TOKEN (never put the token in config.yaml).

    Webhook mode needs SIYU_TELEGRAM_WEBHOOK_SECRET: without it anyone could post updates as any user,
    guides included, so siyu refuses to start.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Literal["polling", "webhook"] = "polling"
    api_base: str = DEFAULT_API_BASE  # SIYU_TELEGRAM_API_BASE (a local Bot API server, tests)
    webhook_url: str | None = None    # public https URL ending in /telegram/webhook
    # SecretStr: repr() and str() show ******; only the adapter factory unwraps them
    token: SecretStr | None = Field(None, exclude=True)
    webhook_secret: SecretStr | None = Field(None, exclude=True)

    @classmethod
    def cross_checks(cls, raw: Mapping[str, Any], context: Any) -> list[Mistake]:
        """Webhook mode (with a token, so Telegram is on) needs a usable secret and a URL."""
        if raw.get("mode") != "webhook" or not _plain(raw.get("token")):
            return []
        mistakes: list[Mistake] = []
        secret = _plain(raw.get("webhook_secret"))
        if not secret:
            mistakes.append(Mistake(
                "webhook needs SIYU_TELEGRAM_WEBHOOK_SECRET — set it to a long random string of letters, digits, "
                "_ and - (Telegram sends it with every update; siyu refuses updates without it), or use "
                "mode: polling", at=("mode",)))
        elif not SECRET_TOKEN.fullmatch(secret):
            mistakes.append(Mistake(
                "SIYU_TELEGRAM_WEBHOOK_SECRET may only hold letters, digits, _ and - (1–256 of them) — "
                "Telegram refuses any other secret; generate a new one", at=("webhook_secret",)))
        if not raw.get("webhook_url"):
            mistakes.append(Mistake(
                "webhook needs webhook_url — set adapters.telegram.webhook_url to the public https address "
                "ending in /telegram/webhook", at=("mode",)))
        return mistakes
