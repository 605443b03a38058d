"""`adapters.telegram` in config.yaml; the token and webhook secret come from the environment only."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

DEFAULT_API_BASE = "https://api.telegram.org/bot"


class TelegramSettings(BaseModel):
    """Enabled by SIYU_TELEGRAM_TOKEN (never put the token in config.yaml)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Literal["polling", "webhook"] = "polling"
    api_base: str = DEFAULT_API_BASE  # SIYU_TELEGRAM_API_BASE (a local Bot API server, tests)
    webhook_url: str | None = None    # public https URL ending in /telegram/webhook
    token: str | None = Field(None, exclude=True)
    webhook_secret: str | None = Field(None, exclude=True)
