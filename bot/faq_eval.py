"""`siyu eval`: the FAQ cascade as configured, measured on labelled queries (thresholds tuned first if asked)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bot.config import Settings
from bot.answers import build_understanding
from intents.calibrated import CalibratedIndex, Estimate
from intents.cascade import Thresholds, Understanding
from intents.catalog import catalog_from_jsonl
from intents.evaluate import (MAX_WRONG, LabelledQuery, Report, evaluate, load_queries, noise_aware_budget,
                              score_all, tune)
from intents.holdout import split_tune_report


@dataclass(frozen=True)
class FaqEvaluation:
    """What `siyu eval` reports: the cascade used, how many queries, the metrics and any tuned thresholds."""

    understanding: Understanding
    queries: int
    result: Report
    tuned: Thresholds | None  # None unless thresholds were chosen on a development file
    budget: float = MAX_WRONG  # the wrong rate allowed on the development file (MAX_WRONG less its noise)
    estimate: Estimate | None = None  # cross-validated over the catalog, at the thresholds used
    out_of_scope: float = 0.0  # the share of out-of-scope queries the estimate assumes (the dev file's)


async def evaluate_files(settings: Settings, catalog: Path, queries: Path, tune_on: Path | None) -> FaqEvaluation:
    """Measure on `queries`, after choosing thresholds on `tune_on` when given.

    Raises OSError or ValueError (`PATH:LINE: …`) when a file cannot be read; nothing is scored then.
    """
    intents = catalog_from_jsonl(catalog)
    labelled = load_queries(queries)
    dev = load_queries(tune_on) if tune_on else None
    return await evaluate_queries(build_understanding(intents, settings), labelled, dev)


async def evaluate_queries(understanding: Understanding, labelled: list[LabelledQuery],
                           dev: list[LabelledQuery] | None) -> FaqEvaluation:
    """Measure on `labelled`, after choosing thresholds on `dev` when given (the configured ones otherwise)."""
    thresholds = understanding.thresholds
    budget = noise_aware_budget(MAX_WRONG, len(dev)) if dev is not None else MAX_WRONG
    tuned = tune(score_all(understanding, dev), thresholds, budget) if dev is not None else None
    result = await evaluate(understanding, score_all(understanding, labelled), tuned or thresholds)
    reference = dev if dev is not None else labelled
    out_of_scope = sum(1 for q in reference if q.intent is None) / (len(reference) or 1)
    estimate = None
    if isinstance(understanding.semantic, CalibratedIndex):
        estimate = understanding.semantic.estimate((tuned or thresholds).semantic_answer, out_of_scope)
    return FaqEvaluation(understanding, len(labelled), result, tuned, budget, estimate, out_of_scope)


@dataclass(frozen=True)
class HoldoutEvaluation:
    """One labelled file split in two: thresholds tuned on one half, both they and the configured ones
    measured on the other half, which nothing was tuned on."""

    tune_lines: int
    report_lines: int
    tuned: FaqEvaluation    # thresholds chosen on the tune half, measured on the report half
    default: FaqEvaluation  # the configured thresholds on the same report half: the same-run baseline

    def as_dict(self) -> dict[str, object]:
        """The figures `python -m bench faq` and `siyu eval --holdout` print."""
        def metrics(run: FaqEvaluation) -> dict[str, object]:
            return {k: v for k, v in run.result.as_dict().items() if k != "confusions"}

        estimate = self.tuned.estimate
        thresholds = self.tuned.tuned or self.tuned.understanding.thresholds
        semantic = self.tuned.understanding.semantic
        return {
            "tune_lines": self.tune_lines, "report_lines": self.report_lines,
            "semantic": semantic.name if semantic else "none",
            "tuned": metrics(self.tuned), "default": metrics(self.default),
            "cv_estimate": None if estimate is None else {
                "correct": round(estimate.correct, 4), "wrong": round(estimate.wrong, 4),
                "wrong_in_scope": round(estimate.wrong_in_scope, 4),
                "answered_out_of_scope": round(estimate.answered_out_of_scope, 4),
                "out_of_scope": round(self.tuned.out_of_scope, 4)},
            "thresholds": {"fuzzy_answer": thresholds.fuzzy_answer, "semantic_answer": thresholds.semantic_answer,
                           "wrong_budget_on_tune_half": round(self.tuned.budget, 4),
                           "default_fuzzy_answer": self.default.understanding.thresholds.fuzzy_answer,
                           "default_semantic_answer": self.default.understanding.thresholds.semantic_answer},
        }


async def evaluate_holdout(settings: Settings, catalog: Path, queries: Path, seed: int) -> HoldoutEvaluation:
    """Split `queries` by intent (`intents.holdout`), tune on one half, report on the other.

    Raises OSError or ValueError (`PATH:LINE: …`) when a file cannot be read; nothing is scored then.
    """
    intents = catalog_from_jsonl(catalog)
    tune_half, report_half = split_tune_report(load_queries(queries), seed)
    tuned = await evaluate_queries(build_understanding(intents, settings), report_half, tune_half)
    # A cascade of its own, warmed on the tune half as tuning warmed the first: the query-embedding cache
    # would otherwise time the report half's second pass from memory.
    plain = build_understanding(intents, settings)
    score_all(plain, tune_half)
    default = await evaluate_queries(plain, report_half, None)
    return HoldoutEvaluation(len(tune_half), len(report_half), tuned, default)
