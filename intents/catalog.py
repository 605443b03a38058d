"""The FAQ catalog: intents with example questions and answers, from `scripts/faq.yaml` or JSONL."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from intents.jsonl import read_jsonl

_ID = re.compile(r"^[A-Za-z][\w:.\-]*$")


@dataclass(frozen=True)
class FaqIntent:
    """One question type the bot can answer."""

    id: str
    examples: tuple[str, ...]
    answer: str
    description: str = ""
    in_groups: bool = True  # small talk is for 1v1; in a group it is noise


@dataclass(frozen=True)
class Catalog:
    """All FAQ intents plus the polite reply used when the bot is not sure."""

    intents: tuple[FaqIntent, ...]
    handoff_reply: str = "这个问题我请导购来为您解答，请稍等～"

    def get(self, intent_id: str) -> FaqIntent | None:
        return next((i for i in self.intents if i.id == intent_id), None)


class CatalogError(ValueError):
    """Raised with (key path, message) pairs for the caller to place on lines."""

    def __init__(self, issues: list[tuple[tuple[str | int, ...], str]]) -> None:
        self.issues = issues
        super().__init__("; ".join(m for _, m in issues))


def catalog_from_data(data: Any) -> Catalog:
    """Build a catalog from faq.yaml's data; collects every problem into one CatalogError."""
    issues: list[tuple[tuple[str | int, ...], str]] = []
    if not isinstance(data, dict) or not isinstance(data.get("intents"), list):
        raise CatalogError([((), "faq.yaml must have an 'intents' list of {id, examples, answer}")])
    intents: list[FaqIntent] = []
    seen: set[str] = set()
    for index, raw in enumerate(data["intents"]):
        key: tuple[str | int, ...] = ("intents", index)
        if not isinstance(raw, dict):
            issues.append((key, "each intent must be a mapping with id, examples and answer"))
            continue
        intent_id = raw.get("id")
        if not isinstance(intent_id, str) or not _ID.match(intent_id):
            issues.append((key + ("id",), f"intent id {intent_id!r} — expected a word like shipping_time"))
            continue
        if intent_id in seen:
            issues.append((key + ("id",), f"intent id '{intent_id}' is used twice — ids must be unique"))
        seen.add(intent_id)
        examples = raw.get("examples")
        if not isinstance(examples, list) or not examples or not all(isinstance(e, str) and e.strip() for e in examples):
            issues.append((key + ("examples",), f"intent '{intent_id}' needs a list of example questions"))
            continue
        answer = raw.get("answer")
        if not isinstance(answer, str) or not answer.strip():
            issues.append((key + ("answer",), f"intent '{intent_id}' needs an 'answer'"))
            continue
        in_groups = raw.get("in_groups", True)
        if not isinstance(in_groups, bool):
            issues.append((key + ("in_groups",), f"intent '{intent_id}' in_groups must be true or false"))
            continue
        intents.append(FaqIntent(intent_id, tuple(e.strip() for e in examples), answer.strip(),
                                 str(raw.get("description", "")).strip(), in_groups))
    if issues:
        raise CatalogError(issues)
    handoff = data.get("handoff_reply")
    return Catalog(tuple(intents), handoff.strip() if isinstance(handoff, str) and handoff.strip()
                   else Catalog.handoff_reply)


def catalog_from_jsonl(path: Path) -> Catalog:
    """`{"intent": id, "examples": [...], "answer": "..."}` per line (the `siyu eval` format)."""
    return Catalog(tuple(read_jsonl(path, lambda row: FaqIntent(
        str(row["intent"]), tuple(row["examples"]), str(row.get("answer", "")), str(row.get("description", ""))),
        '{"intent": id, "examples": [...], "answer": "..."}')))
