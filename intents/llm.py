"""The LLM tier: any OpenAI-compatible endpoint picks one of the candidate intents, or none.

Anything but a well-formed answer naming a candidate (bad JSON, unknown id, timeout, HTTP error)
is treated as "not sure", so the cascade hands off instead of guessing.
"""
from __future__ import annotations

import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from intents.catalog import Catalog
from intents.fuzzy import Candidate
from intents.normalize import normalize

if TYPE_CHECKING:
    from openai import AsyncOpenAI

log = logging.getLogger(__name__)
T = TypeVar("T")

SYSTEM_PROMPT = (
    "You classify a customer's message for a customer-service bot. You are given candidate FAQ intents "
    "with descriptions and example questions. Answer with strict JSON only: "
    '{"intent": "<one candidate id or none>", "confidence": <number 0..1>}. '
    'Use "none" when no candidate fits the message well; a wrong answer is worse than none.'
)


def json_client(base_url: str, api_key: str, timeout: float) -> AsyncOpenAI:
    """A client for an OpenAI-compatible endpoint that never retries: a slow model must not hold a reply up."""
    import openai  # not at module level: slow to import, and most commands never ask a model

    return openai.AsyncOpenAI(base_url=base_url, api_key=api_key or "not-needed", timeout=timeout, max_retries=0)


class LlmError(Exception):
    """Why a model gave no usable answer. `kind` is safe for any log; `detail` may echo the customer's words."""

    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind
        self.detail = detail


async def ask_json(client: AsyncOpenAI, model: str, system: str, user: str, read: Callable[[Any], T]) -> T:
    """One strict-JSON chat completion, its fields taken out by `read`.

    Raises LlmError on a timeout, an HTTP or API error, or an answer that is not JSON `read` can use."""
    import openai  # already loaded by json_client; this only binds the name for the except clauses

    try:
        response = await client.chat.completions.create(
            model=model, temperature=0, response_format={"type": "json_object"},
            messages=[{"role": "system", "content": system}, {"role": "user", "content": user}])
        content = response.choices[0].message.content or ""
    except openai.APITimeoutError:
        raise LlmError("timed out") from None
    except openai.OpenAIError as exc:
        raise LlmError(type(exc).__name__, str(exc)) from None
    try:
        return read(json.loads(content))
    except (ValueError, KeyError, TypeError, AttributeError):
        raise LlmError("not the JSON asked for", repr(content[:80])) from None


@dataclass(frozen=True)
class LlmAsked:
    """One real call to the model (a cached answer is not one): what storage records of it."""

    model: str
    latency_ms: float
    intent: str | None
    confidence: float | None
    failure: str | None  # why its answer was not usable; None when it answered within bounds


@dataclass(frozen=True)
class LlmVerdict:
    """What the model said, already checked: `intent` is a candidate id or None."""

    intent: str | None
    confidence: float


class LlmClassifier:
    """Asks the model once per (question, candidates); answers are cached and calls counted."""

    def __init__(self, catalog: Catalog, base_url: str, model: str, api_key: str, timeout: float = 3.0,
                 cache_size: int = 4096) -> None:
        self.catalog = catalog
        self.model = model
        self.client = json_client(base_url, api_key, timeout)
        self.calls = 0
        self.failures = 0
        self._cache: OrderedDict[tuple[str, tuple[str, ...]], LlmVerdict | None] = OrderedDict()
        self._cache_size = cache_size

    def _prompt(self, question: str, candidates: Sequence[Candidate]) -> str:
        lines = [f"Customer message: {question}", "", "Candidates:"]
        for candidate in candidates:
            intent = self.catalog.get(candidate.intent)
            if intent is None:
                continue
            examples = "; ".join(intent.examples[:5])
            lines.append(f"- id: {intent.id} | description: {intent.description or '-'} | examples: {examples}")
        return "\n".join(lines)

    async def classify(self, question: str, candidates: Sequence[Candidate]) -> LlmVerdict | None:
        """The model's pick among `candidates`, or None when it failed or answered out of bounds."""
        return (await self.classify_recorded(question, candidates))[0]

    async def classify_recorded(self, question: str, candidates: Sequence[Candidate]
                                ) -> tuple[LlmVerdict | None, LlmAsked | None]:
        """`classify`, plus what to record when the model was really asked (None: answered from the cache)."""
        ids = tuple(c.intent for c in candidates)
        key = (normalize(question), ids)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key], None
        self.calls += 1
        why: list[str] = []
        began = time.perf_counter()
        verdict = await self._ask(question, candidates, set(ids), why)
        asked = LlmAsked(self.model, (time.perf_counter() - began) * 1000, verdict.intent if verdict else None,
                         verdict.confidence if verdict else None, why[0].split(":")[0][:255] if why else None)
        self._cache[key] = verdict
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return verdict, asked

    async def _ask(self, question: str, candidates: Sequence[Candidate], ids: set[str],
                   why: list[str]) -> LlmVerdict | None:
        try:
            intent, confidence = await ask_json(
                self.client, self.model, SYSTEM_PROMPT, self._prompt(question, candidates),
                lambda data: (data["intent"], float(data.get("confidence", 0))))
        except LlmError as exc:
            return self._fail(str(exc), why)
        if intent in (None, "none", ""):
            return LlmVerdict(None, confidence)
        if intent not in ids:
            return self._fail(f"named {intent!r}, which is not a candidate", why)
        return LlmVerdict(str(intent), max(0.0, min(1.0, confidence)))

    def _fail(self, reason: str, why: list[str]) -> None:
        self.failures += 1
        why.append(reason)
        log.warning("LLM classifier: %s; handing off instead", reason)
        return None
