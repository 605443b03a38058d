"""Deciding what to do with a customer's question: answer it, or hand it to a human.

fuzzy (near-exact wording) → semantic (paraphrases) → LLM for the grey zone → hand-off.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass

from intents.catalog import Catalog
from intents.fuzzy import Candidate, FuzzyMatcher
from intents.llm import LlmClassifier
from intents.semantic import SemanticIndex, build_semantic_index


@dataclass(frozen=True)
class Thresholds:
    """Scores (0–1) at which each tier may answer; below `llm_floor` the LLM is not even asked."""

    fuzzy_answer: float = 0.9
    semantic_answer: float = 0.6
    llm_floor: float = 0.3
    llm_accept: float = 0.7


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

    def __init__(self, catalog: Catalog, thresholds: Thresholds, semantic: str = "auto",
                 llm: LlmClassifier | None = None, top_k: int = 5) -> None:
        self.catalog = catalog
        self.thresholds = thresholds
        self.fuzzy = FuzzyMatcher(catalog)
        self.semantic: SemanticIndex | None = build_semantic_index(catalog, semantic)
        self.llm = llm
        self.top_k = top_k

    def scores(self, question: str) -> tuple[list[Candidate], list[Candidate]]:
        """Both offline tiers' top-k (what tuning replays with other thresholds)."""
        fuzzy = self.fuzzy.top(question, self.top_k)
        semantic = self.semantic.top(question, self.top_k) if self.semantic else []
        return fuzzy, semantic

    async def decide(self, question: str) -> Decision:
        fuzzy, semantic = await asyncio.to_thread(self.scores, question)  # embedding is CPU work
        return await self.decide_from(question, fuzzy, semantic, self.thresholds)

    async def decide_from(self, question: str, fuzzy: list[Candidate], semantic: list[Candidate],
                          t: Thresholds, use_llm: bool = True) -> Decision:
        offline = offline_decision(fuzzy, semantic, t)
        if offline.answered or self.llm is None or not use_llm:
            return offline
        candidates = semantic or fuzzy
        if not candidates or candidates[0].score < t.llm_floor:
            return offline
        verdict = await self.llm.classify(question, candidates)
        if verdict is not None and verdict.intent is not None and verdict.confidence >= t.llm_accept:
            return Decision(verdict.intent, verdict.confidence, "llm", tuple(candidates))
        return Decision(None, verdict.confidence if verdict else 0.0, "handoff", tuple(candidates))


def offline_decision(fuzzy: list[Candidate], semantic: list[Candidate], t: Thresholds) -> Decision:
    """The fuzzy and semantic tiers alone (pure, so threshold tuning can replay it cheaply)."""
    if fuzzy and fuzzy[0].score >= t.fuzzy_answer:
        return Decision(fuzzy[0].intent, fuzzy[0].score, "fuzzy", tuple(fuzzy))
    if semantic and semantic[0].score >= t.semantic_answer:
        return Decision(semantic[0].intent, semantic[0].score, "semantic", tuple(semantic))
    best = semantic or fuzzy
    return Decision(None, best[0].score if best else 0.0, "handoff", tuple(best))
