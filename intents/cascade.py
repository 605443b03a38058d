"""Deciding what to do with a customer's question: answer it, or hand it to a human."""
from __future__ import annotations

from dataclasses import dataclass

from intents.catalog import Catalog
from intents.fuzzy import Candidate, FuzzyMatcher


@dataclass(frozen=True)
class Thresholds:
    """Scores (0–100) at or above which the fuzzy tier answers on its own."""

    answer: float = 80.0


@dataclass(frozen=True)
class Decision:
    """`intent` is None for a hand-off; `tier` says who decided."""

    intent: str | None
    confidence: float
    tier: str
    candidates: tuple[Candidate, ...] = ()

    @property
    def answered(self) -> bool:
        return self.intent is not None


class Understanding:
    """The cascade the bot and `siyu eval` both run."""

    def __init__(self, catalog: Catalog, thresholds: Thresholds) -> None:
        self.catalog = catalog
        self.thresholds = thresholds
        self.fuzzy = FuzzyMatcher(catalog)

    async def decide(self, question: str) -> Decision:
        candidates = tuple(self.fuzzy.top(question))
        if candidates and candidates[0].score >= self.thresholds.answer:
            return Decision(candidates[0].intent, candidates[0].score / 100, "fuzzy", candidates)
        return Decision(None, candidates[0].score / 100 if candidates else 0.0, "handoff", candidates)
