"""Fuzzy matching of a question against every example phrasing of every intent (rapidfuzz, vectorised)."""
from __future__ import annotations

from collections import Counter
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
    # fuzz.ratio from above (ratio ≤ 2·shared / (len(q) + len(e))), and an inverted index of characters
    # finds them. Of those, the ones with the highest bound are scored first; the rest only where the bound
    # can still beat the k-th best intent found so far (at 10,000 phrasings: tens scored, not thousands).
    NARROW_ABOVE = 2000
    NARROW_FLOOR = 0.5
    FIRST_BATCH = 32

    def __init__(self, catalog: Catalog) -> None:
        self._intents = [intent.id for intent in catalog.intents if intent.examples]
        self._examples = [e for intent in catalog.intents for e in intent.examples]
        self._choices = [normalize(e) for e in self._examples]
        sizes = [len(intent.examples) for intent in catalog.intents if intent.examples]
        self._starts = np.cumsum([0] + sizes[:-1]).astype(np.int64)  # examples are grouped by intent
        self._owner = np.repeat(np.arange(len(sizes)), sizes) if sizes else np.zeros(0, np.int64)
        # character → (examples holding it, how often each holds it, the most any holds it); None: score all
        self._has: dict[str, tuple[np.ndarray, np.ndarray, int]] | None = None
        if len(self._choices) > self.NARROW_ABOVE:
            postings: dict[str, tuple[list[int], list[int]]] = {}
            for row, choice in enumerate(self._choices):
                for char, count in Counter(choice).items():
                    rows, counts = postings.setdefault(char, ([], []))
                    rows.append(row)
                    counts.append(count)
            self._has = {char: (np.array(rows, np.int32), np.array(counts, np.int16), max(counts))
                         for char, (rows, counts) in postings.items()}
            self._lengths = np.array([len(c) for c in self._choices], np.float32)

    def _ratios(self, query: str, rows: np.ndarray) -> np.ndarray:
        """fuzz.ratio × 100 (rounded) of `query` against the examples at `rows`."""
        return process.cdist([query], [self._choices[i] for i in rows], scorer=fuzz.ratio, dtype=np.uint8)[0]

    def _narrowed(self, query: str, k: int) -> list[Candidate]:
        assert self._has is not None
        holders, weights = [], []  # characters in common, with multiplicity: one bincount over the postings
        for char, wanted in Counter(query).items():
            posting = self._has.get(char)
            if posting is not None:
                holders.append(posting[0])
                weights.append(posting[1] if posting[2] <= wanted else np.minimum(posting[1], wanted))
        if not holders:
            return []
        shared = np.bincount(np.concatenate(holders), np.concatenate(weights), minlength=len(self._choices))
        bound = shared * (200 / (len(query) + self._lengths))  # × 100, like the scores
        near = np.flatnonzero(bound >= self.NARROW_FLOOR * 100 - 1e-6)  # a bound of exactly the floor counts
        bound = bound[near]
        if not len(near):
            return []
        if len(near) > self.FIRST_BATCH:  # the likeliest first, then only what can still enter the top k
            first = np.argpartition(-bound, self.FIRST_BATCH - 1)[: self.FIRST_BATCH]
            scores = self._ratios(query, near[first])
            kth, seen = 0, set()  # the k-th best intent so far: walk the scores down until k intents
            for at in np.argsort(-scores.astype(np.int16)).tolist():
                seen.add(int(self._owner[near[first[at]]]))
                if len(seen) == k:
                    kth = int(scores[at])
                    break
            rest = np.ones(len(near), bool)
            rest[first] = False
            rest &= bound > kth - 1  # rounded scores: a bound just under kth can still round up to it
            rows = np.concatenate([near[first], near[rest]])
            scores = np.concatenate([scores, self._ratios(query, near[rest])]) if rest.any() else scores
        else:
            rows, scores = near, self._ratios(query, near)
        # best score first; ties go to the earlier example, as in the full scan
        order = np.lexsort((rows, -scores.astype(np.int16)))
        owners = self._owner[rows[order]]
        _, firsts = np.unique(owners, return_index=True)  # each intent's best example
        candidates = []
        for at in np.sort(firsts)[:k]:
            if scores[order[at]] == 0:
                break  # nothing else came near
            candidates.append(Candidate(self._intents[owners[at]], float(scores[order[at]]) / 100,
                                        self._examples[rows[order[at]]]))
        return candidates

    def top(self, question: str, k: int = 5) -> list[Candidate]:
        query = normalize(question)
        if not query or not self._choices or k < 1:
            return []
        if self._has is not None:
            return self._narrowed(query, k)
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
