"""The FAQ matchers the engine answers with, rebuilt off the event loop when the catalog changes."""
from __future__ import annotations

import asyncio
import logging
import os
from datetime import datetime
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncSession

from bot.config import Settings
from bot.library import ScriptLibrary
from bot.metrics import Metrics
from intents.cascade import Decision, Thresholds, Understanding
from intents.catalog import Catalog, FaqIntent
from storage.llm_calls import record_llm_call
from storage.models import Message


def build_understanding(catalog: Catalog, settings: Settings) -> Understanding:
    """The FAQ cascade as configured; the LLM tier only when a base_url is set."""
    faq, llm_settings = settings.faq, settings.llm
    llm = None
    if llm_settings.base_url:
        from intents.llm import LlmClassifier  # the openai client only when an LLM is configured

        llm = LlmClassifier(catalog, llm_settings.base_url, llm_settings.model,
                            os.environ.get(llm_settings.api_key_env, ""), llm_settings.timeout_seconds)
    thresholds = Thresholds(faq.fuzzy_answer, faq.semantic_answer, faq.llm_floor, faq.llm_accept)
    cache = Path(faq.embedding_cache) if faq.embedding_cache else None
    return Understanding(catalog, thresholds, faq.semantic, llm, embed_chars=faq.embed_chars, cache_dir=cache)


MATCH_CHARS = 200  # how much of a message the FAQ matchers read


log = logging.getLogger(__name__)


class Answers:
    """Decides which FAQ intent a question is; keeps the matchers for the current catalog."""

    def __init__(self, library: ScriptLibrary, settings: Settings, metrics: Metrics | None = None) -> None:
        self.library = library
        self.settings = settings
        self.metrics = metrics or Metrics()
        self._understanding: Understanding | None = None
        self._version = -1

    @property
    def understanding(self) -> Understanding:
        """The current matchers. After an FAQ edit the previous ones keep answering until
        refresh() has rebuilt them off the event loop."""
        if self._understanding is None:
            self._understanding = build_understanding(self.library.catalog, self.settings)
            self._version = self.library.version
        return self._understanding

    async def refresh(self) -> None:
        """Rebuild the matchers after the scripts changed; embedding a catalog is CPU work, so in a thread.

        A catalog the matchers cannot be built from (say, examples that are only punctuation) keeps the
        previous matchers answering, and is reported once per scripts version."""
        if self._understanding is not None and self._version == self.library.version:
            return
        version = self.library.version
        try:
            self._understanding = await asyncio.to_thread(build_understanding, self.library.catalog, self.settings)
        except Exception as exc:
            log.error("faq.yaml: the FAQ matchers cannot be built from this catalog (%s: %s) — the previous "
                      "answers keep running; fix the examples and run siyu check", type(exc).__name__, exc)
        self._version = version

    async def decide(self, text: str) -> tuple[FaqIntent | None, Decision]:
        """The intent to answer with (None: not sure enough), and the cascade's decision.

        Only the start of a message is matched: an FAQ question is short, and the semantic tier's cost
        grows with length (seconds at a few thousand characters)."""
        question = text[:MATCH_CHARS]
        understanding = self.understanding
        # a near-exact wording is answered by the fuzzy tier whatever the others score, so the semantic
        # tier (milliseconds of Python holding the GIL, on every message) runs only when fuzzy is unsure
        fuzzy = await asyncio.to_thread(understanding.fuzzy.top, question, understanding.top_k)
        decision = await understanding.decide_from(question, fuzzy, [], understanding.thresholds, use_llm=False)
        if decision.tier != "fuzzy":
            decision = await understanding.decide(question)
        self.metrics.faq_decisions.labels(decision.tier).inc()
        intent = self.library.catalog.get(decision.intent) if decision.intent else None
        return intent, decision

    @staticmethod
    async def record_llm(session: AsyncSession, question: Message, decision: Decision, at: datetime) -> None:
        """Store the LLM tier's call behind `decision`, if it made one (in the event's transaction)."""
        asked = decision.llm
        if asked is not None:
            await record_llm_call(session, question, asked.model, asked.latency_ms, asked.intent, asked.confidence,
                                  asked.failure, decision.tier == "llm", at)

    @property
    def handoff_reply(self) -> str:
        return self.library.catalog.handoff_reply

    @property
    def ack_reply(self) -> str:
        """faq.yaml's light reply to 「好的」「👍」; empty: the bot says nothing."""
        return self.library.catalog.ack_reply
