"""Telegram adapter on python-telegram-bot: DMs are 1v1 conversations, supergroups are customer groups."""
from adapters.telegram.adapter import TelegramAdapter

__all__ = ["TelegramAdapter"]
