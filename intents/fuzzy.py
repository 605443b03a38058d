"""Fuzzy matching of a question against every example phrasing of every intent (rapidfuzz, vectorised)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from rapidfuzz import fuzz, process

from intents.catalog import Catalog
from intents.normalize import normalize

@dataclass(frozen=True)
class Candidate:
    """An intent and how well the question matched it; `score` is 0–1 for every tier."""

    intent: str
    score: float
    example: str = ""


class FuzzyMatcher:
    """Edit-distance similarity to the closest example, one vectorised C++ call (`cdist`) over all examples.

    `fuzz.ratio` on normalised text treats Chinese per character and English per letter alike;
    WRatio/partial scorers were measured worse on short queries (one shared token scores high).
    """

    def __init__(self, catalog: Catalog) -> None:
        self._intents = [intent.id for intent in catalog.intents if intent.examples]
        self._examples = [e for intent in catalog.intents for e in intent.examples]
        self._choices = [normalize(e) for e in self._examples]
        sizes = [len(intent.examples) for intent in catalog.intents if intent.examples]
        self._starts = np.cumsum([0] + sizes[:-1]).astype(np.int64)  # examples are grouped by intent

    def top(self, question: str, k: int = 5) -> list[Candidate]:
        query = normalize(question)
        if not query or not self._choices:
            return []
        scores = process.cdist([query], self._choices, scorer=fuzz.ratio, dtype=np.uint8)[0]
        per_intent = np.maximum.reduceat(scores, self._starts).astype(np.int16)  # signed: we negate it
        k = min(k, len(per_intent))
        best = np.argpartition(-per_intent, k - 1)[:k]
        best = best[np.argsort(-per_intent[best], kind="stable")]
        ends = np.r_[self._starts[1:], len(scores)]
        candidates = []
        for i in best:
            start = self._starts[i]
            example = start + int(np.argmax(scores[start:ends[i]]))
            candidates.append(Candidate(self._intents[i], float(per_intent[i]) / 100, self._examples[example]))
        return candidates
