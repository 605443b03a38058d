"""Fuzzy matching of a question against every example phrasing of every intent (rapidfuzz, vectorised)."""
from __future__ import annotations

import re
from dataclasses import dataclass

from rapidfuzz import fuzz, process

from intents.catalog import Catalog
from intents.normalize import normalize

_CJK = re.compile(r"([\u3400-\u9fff\uf900-\ufaff])")


def tokenize(text: str) -> str:
    """Normalised text with every CJK character its own token, so token scorers work without spaces."""
    return " ".join(_CJK.sub(r" \1 ", normalize(text)).split())


@dataclass(frozen=True)
class Candidate:
    """An intent and how well the question matched it; `score` is 0–1 for every tier."""

    intent: str
    score: float
    example: str = ""


class FuzzyMatcher:
    """Edit-distance similarity to the closest example, one C++ call over all examples.

    `fuzz.ratio` on normalised text treats Chinese per character and English per letter alike;
    WRatio/partial scorers were measured worse on short queries (one shared token scores high).
    """

    def __init__(self, catalog: Catalog) -> None:
        self._intent_of: list[str] = []
        self._examples: list[str] = []
        self._choices: list[str] = []
        for intent in catalog.intents:
            for example in intent.examples:
                self._intent_of.append(intent.id)
                self._examples.append(example)
                self._choices.append(normalize(example))

    def top(self, question: str, k: int = 5) -> list[Candidate]:
        query = normalize(question)
        if not query or not self._choices:
            return []
        hits = process.extract(query, self._choices, scorer=fuzz.ratio, limit=k * 5)
        best: dict[str, Candidate] = {}
        for _choice, score, index in hits:
            intent = self._intent_of[index]
            if intent not in best:
                best[intent] = Candidate(intent, float(score) / 100, self._examples[index])
        return sorted(best.values(), key=lambda c: -c.score)[:k]
