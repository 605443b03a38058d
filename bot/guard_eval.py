"""`siyu guard eval`: labelled group messages from JSONL, run through the scripts' guard rules."""
from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from bot.guard import GuardReport, LabelledMessage, evaluate_guard
from bot.library import ScriptLibrary
from bot.problems import ScriptError
from intents.jsonl import read_jsonl


def load_labelled(path: Path) -> list[LabelledMessage]:
    """`{"text", "spam", optional "member", "group", "t", "type"}` per line; ValueError `PATH:LINE: …`."""
    def build(row: dict[str, Any]) -> LabelledMessage:
        when = datetime.fromisoformat(str(row["t"])) if row.get("t") else None
        if when is not None and when.tzinfo is None:
            raise ValueError("t needs a UTC offset")
        return LabelledMessage(str(row["text"]), bool(row["spam"]), row.get("member"), row.get("group"),
                               when, str(row.get("type", "text")))

    return read_jsonl(path, build, '{"text": ..., "spam": true|false}')


def evaluate_file(scripts: Path, brand: dict[str, Any], labelled: Path) -> GuardReport:
    """The scripts' guard rules on `labelled`.

    Raises ScriptError when the scripts have problems (the rules would not be the operator's),
    ValueError or OSError when the labelled file or the classifier's model cannot be read.
    """
    library = ScriptLibrary(scripts, brand)
    problems = library.reload()
    if problems:
        raise ScriptError(problems)
    rules = library.guard
    return evaluate_guard(rules, load_labelled(labelled), rules.model())
