"""`siyu check`: every problem in config.yaml and the scripts, and none that a broken config caused.

Scripts are checked in a killable worker with limits (bot/script_sandbox.py), so a hostile file is a
problem line and `siyu check` still finishes.

Scripts render with the brand from config.yaml, so a config that does not load must not be replaced
by defaults: the default brand lacks the operator's keys and every `{{ brand.… }}` would be reported.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from bot.config_loader import load_config
from bot.library import ScriptLibrary
from bot.problems import Problem, ScriptError
from bot.script_files import LenientBrand
from bot.yamlsource import load_yaml

__all__ = ["LenientBrand", "brand_of_broken_config", "check_everything"]


def check_everything(config: Path, scripts: Path) -> list[Problem]:
    """Config problems first, then script problems.

    With a broken config the scripts are still checked: with the brand as written when it is usable,
    otherwise without checking which brand keys templates use.
    """
    try:
        settings = load_config(config)
    except ScriptError as exc:
        return exc.problems + ScriptLibrary(scripts, brand_of_broken_config(config)).reload(force=True)
    return ScriptLibrary(scripts, settings.brand).reload(force=True)


def brand_of_broken_config(config: Path) -> dict[str, Any]:
    """The `brand:` mapping as written when it has a name; otherwise a LenientBrand over what there is."""
    doc, _ = load_yaml(config)
    data = doc.data if doc is not None else None
    brand = data.get("brand") if isinstance(data, dict) else None
    if isinstance(brand, dict) and isinstance(brand.get("name"), str):
        return dict(brand)
    return LenientBrand(brand if isinstance(brand, dict) else {})
