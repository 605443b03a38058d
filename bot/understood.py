"""The FAQ decision for one event's text, made before its transaction opens.

Matching can be model work (embeddings, an LLM call); done inside the transaction it would hold the
database — on SQLite, every other writer — for as long as the model takes.
"""
from __future__ import annotations

from dataclasses import dataclass

from intents.cascade import Decision
from intents.catalog import FaqIntent


@dataclass(frozen=True)
class Understood:
    """Which FAQ intent a message is (None: not sure enough to answer), and the cascade's decision."""

    intent: FaqIntent | None
    decision: Decision
