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

    # In a big catalog only examples that could reach `NARROW_FLOOR` are scored: shared characters bound
    # fuzz.ratio from above (ratio ≤ 2·shared / (len(q) + len(e))), and one sparse product finds them.
    NARROW_ABOVE = 2000
    NARROW_FLOOR = 0.5

    def __init__(self, catalog: Catalog) -> None:
        self._intents = [intent.id for intent in catalog.intents if intent.examples]
        self._examples = [e for intent in catalog.intents for e in intent.examples]
        self._choices = [normalize(e) for e in self._examples]
        sizes = [len(intent.examples) for intent in catalog.intents if intent.examples]
        self._starts = np.cumsum([0] + sizes[:-1]).astype(np.int64)  # examples are grouped by intent
        self._owner = np.repeat(np.arange(len(sizes)), sizes) if sizes else np.zeros(0, np.int64)
        self._chars: dict[str, int] = {}
        self._has = None
        if len(self._choices) > self.NARROW_ABOVE:
            from scipy.sparse import csr_matrix

            rows, cols = [], []
            for row, choice in enumerate(self._choices):
                for char in set(choice):
                    rows.append(row)
                    cols.append(self._chars.setdefault(char, len(self._chars)))
            self._has = csr_matrix((np.ones(len(rows), np.float32), (rows, cols)),
                                   shape=(len(self._choices), len(self._chars)))
            self._lengths = np.array([len(c) for c in self._choices], np.float32)

    def _scores(self, query: str) -> np.ndarray:
        """fuzz.ratio × 100 against every example (0 for examples that cannot reach the floor)."""
        if self._has is None:
            return process.cdist([query], self._choices, scorer=fuzz.ratio, dtype=np.uint8)[0]
        counts = np.zeros(len(self._chars), np.float32)
        for char in query:
            column = self._chars.get(char)
            if column is not None:
                counts[column] += 1
        bound = 2 * (self._has @ counts) / (len(query) + self._lengths)
        near = np.flatnonzero(bound >= self.NARROW_FLOOR)
        scores = np.zeros(len(self._choices), np.uint8)
        if len(near):
            scores[near] = process.cdist([query], [self._choices[i] for i in near], scorer=fuzz.ratio,
                                         dtype=np.uint8)[0]
        return scores

    def top(self, question: str, k: int = 5) -> list[Candidate]:
        query = normalize(question)
        if not query or not self._choices:
            return []
        scores = self._scores(query)
        per_intent = np.maximum.reduceat(scores, self._starts).astype(np.int16)  # signed: we negate it
        k = min(k, len(per_intent))
        best = np.argpartition(-per_intent, k - 1)[:k]
        best = best[np.argsort(-per_intent[best], kind="stable")]
        ends = np.r_[self._starts[1:], len(scores)]
        candidates = []
        for i in best:
            if self._has is not None and per_intent[i] == 0:
                break  # nothing else came near
            start = self._starts[i]
            example = start + int(np.argmax(scores[start:ends[i]]))
            candidates.append(Candidate(self._intents[i], float(per_intent[i]) / 100, self._examples[example]))
        return candidates
