"""`siyu eval`: the FAQ cascade as configured, measured on labelled queries (thresholds tuned first if asked)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bot.config import Settings
from bot.answers import build_understanding
from intents.cascade import Thresholds, Understanding
from intents.catalog import catalog_from_jsonl
from intents.evaluate import Report, evaluate, load_queries, score_all, tune


@dataclass(frozen=True)
class FaqEvaluation:
    """What `siyu eval` reports: the cascade used, how many queries, the metrics and any tuned thresholds."""

    understanding: Understanding
    queries: int
    result: Report
    tuned: Thresholds | None  # None unless thresholds were chosen on a development file


async def evaluate_files(settings: Settings, catalog: Path, queries: Path, tune_on: Path | None) -> FaqEvaluation:
    """Measure on `queries`, after choosing thresholds on `tune_on` when given.

    Raises OSError or ValueError (`PATH:LINE: …`) when a file cannot be read; nothing is scored then.
    """
    intents = catalog_from_jsonl(catalog)
    labelled = load_queries(queries)
    dev = load_queries(tune_on) if tune_on else None
    understanding = build_understanding(intents, settings)
    thresholds = understanding.thresholds
    tuned = tune(score_all(understanding, dev), thresholds) if dev is not None else None
    result = await evaluate(understanding, score_all(understanding, labelled), tuned or thresholds)
    return FaqEvaluation(understanding, len(labelled), result, tuned)
