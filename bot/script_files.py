"""The kinds of operator script file, and how one parsed document becomes what the bot runs."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from bot.guard import GuardRules, parse_guard
from bot.journey import Journey, parse_journey
from bot.loyalty import LoyaltyProgram, parse_loyalty
from bot.problems import Problem
from bot.validation import Loc, Voice, validate
from bot.yamlsource import YamlDocument
from intents.catalog import INTENT_ID, Catalog, FaqFile

ScriptKind = Literal["journey", "faq", "guard", "loyalty"]


def kind_of(path: Path) -> ScriptKind:
    """`faq.yaml`, `guard.yaml` and `loyalty.yaml` by name; everything else the library reads is a journey."""
    if path.name == "faq.yaml":
        return "faq"
    if path.name == "guard.yaml":
        return "guard"
    if path.name == "loyalty.yaml":
        return "loyalty"
    return "journey"


@dataclass(frozen=True)
class ParsedScript:
    """One file, validated: exactly one of these is set, by its kind."""

    journey: Journey | None = None
    catalog: Catalog | None = None
    guard: GuardRules | None = None
    loyalty: LoyaltyProgram | None = None


class LenientBrand(dict[str, Any]):
    """A brand whose missing keys render as placeholders: used when the real brand is unknown."""

    def __missing__(self, key: str) -> str:
        return f"brand.{key}"


def parse_script(kind: ScriptKind, doc: YamlDocument,
                 brand: Mapping[str, Any] | None) -> tuple[ParsedScript | None, list[Problem]]:
    """Validate one document. With `brand`, every journey text is also rendered for the sample customer.

    The checking worker passes the brand (the trial render is the risky part); the parent rebuilds a
    document the worker passed without it.
    """
    if kind == "faq":
        catalog, problems = parse_faq(doc)
        return (ParsedScript(catalog=catalog) if catalog is not None else None), problems
    if kind == "guard":
        guard, problems = parse_guard(doc)
        return (ParsedScript(guard=guard) if guard is not None else None), problems
    if kind == "loyalty":
        loyalty, problems = parse_loyalty(doc)
        return (ParsedScript(loyalty=loyalty) if loyalty is not None else None), problems
    journey, problems = parse_journey(doc, brand)
    return (ParsedScript(journey=journey) if journey is not None else None), problems


def parse_faq(doc: YamlDocument) -> tuple[Catalog | None, list[Problem]]:
    """Validate faq.yaml; every problem names its line."""
    raw = doc.data

    def subject(loc: Loc) -> str:
        if len(loc) >= 2 and loc[0] == "intents" and isinstance(loc[1], int):
            intents = raw.get("intents") if isinstance(raw, Mapping) else None
            intent = intents[loc[1]] if isinstance(intents, list) and loc[1] < len(intents) else None
            intent_id = intent.get("id") if isinstance(intent, Mapping) else None
            return (f"intent '{intent_id}'" if isinstance(intent_id, str) and INTENT_ID.match(intent_id)
                    else f"intent {loc[1] + 1}")
        return ""  # generated messages name top-level keys themselves: "intents must be a list"

    voice = Voice(subject=subject, subject_names_key=False, colon=False, see="see README 'Writing an FAQ entry'")
    faq, problems = validate(FaqFile, raw, doc, voice)
    return (faq.catalog() if faq is not None else None), problems
