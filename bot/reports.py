"""The text operators read from `siyu guard`, `siyu faq` and `siyu eval`: formatting only, no I/O."""
from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # only for hints: this module stays importable without the storage or ML stack
    from bot.guard import GuardReport
    from intents.cascade import Thresholds, Understanding
    from intents.evaluate import Report
    from intents.insights import Gap, Share
    from storage.models import GuardEvent


def guard_log_lines(events: Sequence[GuardEvent]) -> list[str]:
    """Newest first: when, where, who, strike → action, rule, reason and the start of the message."""
    if not events:
        return ["no guard actions yet"]
    return [f"{e.at:%Y-%m-%d %H:%M}Z  {e.channel}:{e.group_id}  {e.member_id}  strike {e.strike} → "
            f"{e.action}  [{e.rule}] {e.reason}  «{e.excerpt[:40]}»" for e in events]


def guard_eval_json(report: GuardReport) -> str:
    """One JSON object: precision, recall, flagged, total."""
    return json.dumps({"precision": round(report.precision, 4), "recall": round(report.recall, 4),
                       "flagged": report.flagged, "total": report.total})


def guard_eval_lines(report: GuardReport) -> list[str]:
    """The scores, then every false positive (with the rule that fired) and every missed spam message."""
    lines = [f"precision {report.precision:.3f}  recall {report.recall:.3f}  flagged {report.flagged}/{report.total}",
             f"false positives ({len(report.false_positives)}):"]
    lines += [f"  ✗ {text}  ← {why}" for text, why in report.false_positives]
    lines.append(f"missed spam ({len(report.missed)}):")
    lines += [f"  · {text}" for text in report.missed]
    return lines


def gap_lines(gaps: Sequence[Gap], days: int) -> list[str]:
    """Clustered unanswered questions, most asked first, with the other wordings of each."""
    if not gaps:
        return [f"no unanswered questions in the last {days} days"]
    lines = []
    for gap in gaps:
        others = "；".join(v for v in gap.variants if v != gap.example)
        lines.append(f"{gap.count:>4}×  {gap.example}" + (f"   （也问：{others}）" if others else ""))
    return lines


def question_mix_lines(shares: Sequence[Share], days: int) -> list[str]:
    """Per period: intent, count and share of the questions answered (or handed off)."""
    if not shares:
        return [f"no answered questions in the last {days} days"]
    return [f"{s.period}  {s.intent:<24} {s.count:>5}  {s.share:6.1%}" for s in shares]


def tuned_thresholds_lines(source: str, understanding: Understanding, thresholds: Thresholds) -> list[str]:
    """The chosen thresholds as a config.yaml snippet the operator can paste."""
    semantic = understanding.semantic.name if understanding.semantic else "none"
    return [f"# thresholds chosen on {source} (max correct with wrong ≤ 0.05); paste into config.yaml:",
            f"faq:\n  semantic: {semantic}\n  fuzzy_answer: {thresholds.fuzzy_answer:.4g}\n"
            f"  semantic_answer: {thresholds.semantic_answer:.4g}"]


def eval_lines(understanding: Understanding, queries: int, result: Report) -> list[str]:
    """Which tiers ran, the metrics, LLM calls and the worst confusions."""
    tiers = "fuzzy" + (f" + {understanding.semantic.name}" if understanding.semantic else "") + (
        " + llm" if understanding.llm else "")
    lines = [f"tiers: {tiers}; {queries} queries"]
    for key in ("correct", "wrong", "handoff", "accuracy", "oos_precision", "oos_recall"):
        lines.append(f"  {key:<14}{getattr(result, key):.3f}")
    lines.append(f"  {'p50_ms':<14}{result.p50_ms:.2f}\n  {'p99_ms':<14}{result.p99_ms:.2f}")
    if understanding.llm:
        lines.append(f"  llm calls     {understanding.llm.calls} ({understanding.llm.failures} failed)")
    if result.confusions:
        lines.append("worst confusions:")
        lines += [f"  {row['count']}× expected {row['expected']} → answered {row['answered']}"
                  for row in result.confusions]
    return lines
