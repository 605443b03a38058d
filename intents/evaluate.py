"""Measuring the cascade on labelled queries, and choosing thresholds on a development file."""
from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

from intents.cascade import Decision, Thresholds, Understanding, offline_decision
from intents.fuzzy import Candidate
from intents.jsonl import read_jsonl

MAX_WRONG = 0.05


@dataclass(frozen=True)
class LabelledQuery:
    text: str
    intent: str | None  # None: out of scope, the bot must not answer it


@dataclass(frozen=True)
class Scored:
    """A query with both offline tiers' candidates, so thresholds can be replayed without rescoring."""

    query: LabelledQuery
    fuzzy: list[Candidate]
    semantic: list[Candidate]
    offline_ms: float


@dataclass(frozen=True)
class Report:
    correct: float
    wrong: float
    handoff: float
    accuracy: float
    oos_precision: float
    oos_recall: float
    p50_ms: float
    p99_ms: float
    confusions: list[dict[str, object]] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {"correct": round(self.correct, 4), "wrong": round(self.wrong, 4), "handoff": round(self.handoff, 4),
                "accuracy": round(self.accuracy, 4), "oos_precision": round(self.oos_precision, 4),
                "oos_recall": round(self.oos_recall, 4), "p50_ms": round(self.p50_ms, 3),
                "p99_ms": round(self.p99_ms, 3), "confusions": self.confusions}


def load_queries(path: Path) -> list[LabelledQuery]:
    return read_jsonl(path, lambda row: LabelledQuery(str(row["text"]), row.get("intent")),
                      '{"text": ..., "intent": id or null}')


def score_all(understanding: Understanding, queries: list[LabelledQuery]) -> list[Scored]:
    scored = []
    for query in queries:
        began = time.perf_counter()
        fuzzy, semantic = understanding.scores(query.text)
        scored.append(Scored(query, fuzzy, semantic, (time.perf_counter() - began) * 1000))
    return scored


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def report(pairs: list[tuple[LabelledQuery, Decision]], latencies_ms: list[float]) -> Report:
    n = len(pairs) or 1
    in_scope = [(q, d) for q, d in pairs if q.intent is not None]
    out_scope = [(q, d) for q, d in pairs if q.intent is None]
    correct = sum(1 for q, d in pairs if d.intent is not None and d.intent == q.intent)
    wrong = sum(1 for q, d in pairs if d.intent is not None and d.intent != q.intent)
    handed = [(q, d) for q, d in pairs if d.intent is None]
    oos_handed = sum(1 for q, _ in handed if q.intent is None)
    confusions = Counter((q.intent or "(out of scope)", d.intent) for q, d in pairs
                         if d.intent is not None and d.intent != q.intent)
    return Report(
        correct=correct / n, wrong=wrong / n, handoff=len(handed) / n,
        accuracy=sum(1 for q, d in in_scope if d.intent == q.intent) / (len(in_scope) or 1),
        oos_precision=oos_handed / len(handed) if handed else 1.0,
        oos_recall=oos_handed / len(out_scope) if out_scope else 1.0,
        p50_ms=_percentile(latencies_ms, 0.5), p99_ms=_percentile(latencies_ms, 0.99),
        confusions=[{"expected": e, "answered": a, "count": c} for (e, a), c in confusions.most_common(10)])


async def evaluate(understanding: Understanding, scored: list[Scored], thresholds: Thresholds) -> Report:
    """Run the full cascade (LLM included when configured) with `thresholds`."""
    pairs, latencies = [], []
    for item in scored:
        began = time.perf_counter()
        decision = await understanding.decide_from(item.query.text, item.fuzzy, item.semantic, thresholds)
        latencies.append(item.offline_ms + (time.perf_counter() - began) * 1000)
        pairs.append((item.query, decision))
    return report(pairs, latencies)


def noise_aware_budget(max_wrong: float, queries: int, z: float = 1.0) -> float:
    """The wrong rate to allow on a development file of `queries` lines so that the rate on unseen
    queries stays within `max_wrong` one standard error out (z=1: about 5 times in 6).

    On 135 lines a wrong rate measures ±1.9 points, so a threshold that just makes 5 % there is as likely as
    not to miss it on new queries; the largest w/n with w/n + z·√(w/n·(1−w/n)/n) ≤ max_wrong is kept."""
    n = max(queries, 1)
    allowed = 0
    for wrong in range(n + 1):
        rate = wrong / n
        if rate + z * math.sqrt(rate * (1 - rate) / n) > max_wrong:
            break
        allowed = wrong
    return allowed / n


def _cut_below(score: float) -> float:
    """A 4-decimal threshold that still admits `score` (rounding up would leave out the very item it came from)."""
    return math.floor(score * 10_000) / 10_000


def tune(scored: list[Scored], base: Thresholds, max_wrong: float = MAX_WRONG) -> Thresholds:
    """Maximise `correct` subject to `wrong` ≤ max_wrong, over the offline tiers' thresholds."""
    fuzzy_grid = sorted({_cut_below(c.score) for s in scored for c in s.fuzzy[:1]} | {1.01})
    semantic_grid = sorted({_cut_below(c.score) for s in scored for c in s.semantic[:1]} | {1.01})
    n = len(scored) or 1
    best: tuple[float, float, Thresholds] = (-1.0, 0.0, base)
    for f in fuzzy_grid:
        for m in semantic_grid:
            t = replace(base, fuzzy_answer=f, semantic_answer=m)
            decisions = [(s.query, offline_decision(s.fuzzy, s.semantic, t)) for s in scored]
            wrong = sum(1 for q, d in decisions if d.intent is not None and d.intent != q.intent) / n
            if wrong > max_wrong:
                continue
            correct = sum(1 for q, d in decisions if d.intent is not None and d.intent == q.intent) / n
            # prefer more correct, then fewer wrong, then stricter thresholds (safer on unseen data)
            key = (correct, -wrong)
            if key > (best[0], best[1]) or (key == (best[0], best[1]) and (f, m) > (best[2].fuzzy_answer,
                                                                                best[2].semantic_answer)):
                best = (correct, -wrong, t)
    return best[2]
