"""An optional second opinion on the guard's review band, from the same OpenAI-compatible endpoint the FAQ
uses. Strict JSON or nothing: any error, timeout or odd answer leaves the message held for staff."""
from __future__ import annotations

import logging

from intents.llm import LlmError, ask_json, json_client

log = logging.getLogger(__name__)

SYSTEM_PROMPT = (
    "You moderate a brand's customer group chat (Chinese). Decide whether one member's message is an "
    "advertisement or scam (selling, recruiting, 微商/代购, 刷单/兼职, loans, red packets, QR-code or group "
    "invitations, pulling members to another shop or group) or ordinary talk (questions about products, "
    "prices, orders, delivery, skin; greetings; chat). Answer with strict JSON only: "
    '{"spam": true|false, "confidence": <number 0..1>}. When unsure, answer false.'
)


class SpamJudge:
    """Asks the model once per message; None whenever it could not give a clear, well-formed answer."""

    def __init__(self, base_url: str, model: str, api_key: str, timeout: float = 3.0,
                 min_confidence: float = 0.8) -> None:
        self.model = model
        self.min_confidence = min_confidence
        self.client = json_client(base_url, api_key, timeout)
        self.calls = 0
        self.failures = 0

    async def is_spam(self, text: str) -> bool | None:
        """True (an ad), False (ordinary talk) or None (no clear answer: keep it for staff)."""
        self.calls += 1
        try:
            spam, confidence = await ask_json(self.client, self.model, SYSTEM_PROMPT, f"Message: {text[:1000]}",
                                              lambda data: (data["spam"], float(data.get("confidence", 0))))
        except LlmError as exc:
            return self._fail(exc.kind)  # never exc.detail: it may echo the customer's message
        if not isinstance(spam, bool):
            return self._fail("spam is not true or false")
        if confidence < self.min_confidence:
            return None
        return spam

    def _fail(self, why: str) -> None:
        self.failures += 1
        log.warning("guard LLM: %s; the message stays held for staff", why)  # never the message: it may be PII
        return None


def spam_judge(base_url: str | None, model: str, api_key_env: str, timeout: float) -> SpamJudge | None:
    """The judge for the FAQ's LLM settings (config.yaml `llm:`), or None while no endpoint is configured.
    guard.yaml `classifier.llm: true` decides whether the guard asks it."""
    import os

    if not base_url:
        return None
    return SpamJudge(base_url, model, os.environ.get(api_key_env, ""), timeout)
