"""Deciding what to do with a customer's question: answer it, or hand it to a human.

empty / acknowledgement → fuzzy (near-exact wording) → calibrated (how likely the best intent is right)
→ LLM for the grey zone → hand-off.
"""
from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from intents.catalog import Catalog
from intents.fuzzy import Candidate, FuzzyMatcher
from intents.kinds import is_acknowledgement, is_empty
from intents.llm import LlmAsked, LlmClassifier
from intents.semantic import SemanticIndex, build_semantic_index

# Model work runs here, never on the event loop; a burst of long messages queues instead of starting
# one thread each (the embedding engine is parallel inside one call already).
_WORKERS = ThreadPoolExecutor(max_workers=2, thread_name_prefix="understanding")

QUIET_KINDS = frozenset({"empty", "ack"})


@dataclass(frozen=True)
class Thresholds:
    """Scores (0–1) at which each tier may answer; below `llm_floor` the LLM is not even asked.

    With the calibrated tier, `semantic_answer` is a probability of being right, not a similarity."""

    fuzzy_answer: float = 0.9
    semantic_answer: float = 0.6
    llm_floor: float = 0.3
    llm_accept: float = 0.7


@dataclass(frozen=True)
class Decision:
    """`intent` is None for a hand-off or a quiet message; `tier` says who decided; `kind` what it is:
    faq / chitchat / decline (answered with that intent), empty / ack (no reply is needed, nobody is
    called), or handoff (not sure: a guide answers)."""

    intent: str | None
    confidence: float
    tier: str
    candidates: tuple[Candidate, ...] = ()
    kind: str = "handoff"
    llm: LlmAsked | None = None  # the LLM tier's call, when it was asked for this decision (to be recorded)

    @property
    def answered(self) -> bool:
        return self.intent is not None

    @property
    def quiet(self) -> bool:
        """Not a question at all: no FAQ answer and no hand-off."""
        return self.kind in QUIET_KINDS


class Understanding:
    """The cascade the bot and `siyu eval` both run."""

    def __init__(self, catalog: Catalog, thresholds: Thresholds, semantic: str = "auto",
                 llm: LlmClassifier | None = None, top_k: int = 5, embed_chars: int = 128,
                 cache_dir: Path | None = None) -> None:
        self.catalog = catalog
        self.thresholds = thresholds
        self.fuzzy = FuzzyMatcher(catalog)
        self.semantic: SemanticIndex | None = build_semantic_index(catalog, semantic, embed_chars, cache_dir)
        self.llm = llm
        self.top_k = top_k

    def scores(self, question: str) -> tuple[list[Candidate], list[Candidate]]:
        """Both offline tiers' top-k (what tuning replays with other thresholds)."""
        fuzzy = self.fuzzy.top(question, self.top_k)
        semantic = self.semantic.top(question, self.top_k) if self.semantic else []
        return fuzzy, semantic

    async def decide(self, question: str) -> Decision:
        if is_empty(question):
            return Decision(None, 1.0, "empty", kind="empty")
        loop = asyncio.get_running_loop()
        fuzzy, semantic = await loop.run_in_executor(_WORKERS, self.scores, question)  # CPU work
        return await self.decide_from(question, fuzzy, semantic, self.thresholds)

    async def decide_from(self, question: str, fuzzy: list[Candidate], semantic: list[Candidate],
                          t: Thresholds, use_llm: bool = True) -> Decision:
        offline = self._kind(offline_decision(fuzzy, semantic, t))
        if offline.tier != "fuzzy" and is_acknowledgement(question):
            return Decision(None, 1.0, "ack", offline.candidates, kind="ack")
        if offline.answered or self.llm is None or not use_llm:
            return offline
        candidates = semantic or fuzzy
        if not candidates or candidates[0].score < t.llm_floor:
            return offline
        verdict, asked = await self.llm.classify_recorded(question, candidates)
        if verdict is not None and verdict.intent is not None and verdict.confidence >= t.llm_accept:
            return self._kind(Decision(verdict.intent, verdict.confidence, "llm", tuple(candidates), llm=asked))
        return Decision(None, verdict.confidence if verdict else 0.0, "handoff", tuple(candidates), llm=asked)

    def _kind(self, decision: Decision) -> Decision:
        if decision.intent is None:
            return decision
        intent = self.catalog.get(decision.intent)
        return Decision(decision.intent, decision.confidence, decision.tier, decision.candidates,
                        intent.kind if intent is not None else "faq", decision.llm)


def offline_decision(fuzzy: list[Candidate], semantic: list[Candidate], t: Thresholds) -> Decision:
    """The fuzzy and semantic tiers alone (pure, so threshold tuning can replay it cheaply)."""
    if fuzzy and fuzzy[0].score >= t.fuzzy_answer:
        return Decision(fuzzy[0].intent, fuzzy[0].score, "fuzzy", tuple(fuzzy), "faq")
    if semantic and semantic[0].score >= t.semantic_answer:
        return Decision(semantic[0].intent, semantic[0].score, "semantic", tuple(semantic), "faq")
    best = semantic or fuzzy
    return Decision(None, best[0].score if best else 0.0, "handoff", tuple(best))
