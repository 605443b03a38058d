"""Telegram adapter on python-telegram-bot: DMs are 1v1 conversations, supergroups are customer groups."""
from __future__ import annotations

from adapters.telegram.settings import TelegramSettings
from bot.plugin import Adapter, AdapterContext, AdapterSpec

CHANNEL = "telegram"


def build(context: AdapterContext[TelegramSettings]) -> Adapter | None:
    """On when SIYU_TELEGRAM_TOKEN is set; guides are staff with a telegram identity."""
    settings = context.settings
    if not settings.token:
        return None
    from adapters.telegram.adapter import TelegramAdapter  # python-telegram-bot only when Telegram is on

    # the one place the secrets are unwrapped: the platform client needs them in plain text
    webhook_secret = settings.webhook_secret.get_secret_value() if settings.webhook_secret else None
    telegram = TelegramAdapter(settings.token.get_secret_value(), settings.api_base, context.handle, context.clock,
                               sorted(context.staff_on(CHANNEL)), dict(context.staff_commands), settings.mode,
                               settings.webhook_url, webhook_secret)
    return Adapter(transports=[telegram], routes=telegram.install if settings.mode == "webhook" else None,
                   start=telegram.start, stop=telegram.stop)


SPEC = AdapterSpec("telegram", TelegramSettings, build, env=("token", "api_base", "webhook_secret"),
                   secrets=("token", "webhook_secret"))
