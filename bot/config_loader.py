"""config.yaml read with every registered adapter's own settings section.

Part of the composition root (with bot/app.py): the only modules in `bot/` that import `adapters/`.
It stays light — adapters' settings models only — so `siyu check` loads no platform client.
"""
from __future__ import annotations

from pathlib import Path

from adapters.registry import ADAPTERS
from bot.config import Settings, load_settings


def load_config(path: Path, env: dict[str, str] | None = None) -> Settings:
    return load_settings(path, env, ADAPTERS)
