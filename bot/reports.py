"""The text operators read from `siyu guard`, `siyu faq` and `siyu eval`: formatting only, no I/O."""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import tzinfo
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # only for hints: this module stays importable without the storage or ML stack
    from bot.guard import GuardReport
    from intents.calibrated import Estimate
    from bot.guard_feedback import GuardEventView
    from intents.cascade import Thresholds, Understanding
    from intents.evaluate import Report
    from intents.insights import Gap, Share
    from storage.models import GuardEvent


def guard_log_lines(events: Sequence[GuardEvent], names: Mapping[tuple[str, str], str], zone: tzinfo) -> list[str]:
    """Newest first: when (local), where, who (by name), strike → action, rule, reason and the start of the message."""
    if not events:
        return ["no guard actions yet"]
    return [f"{e.at.astimezone(zone):%Y-%m-%d %H:%M}  {e.channel}:{e.group_id}  "
            f"{names.get((e.channel, e.member_id), e.member_id)}  strike {e.strike} → "
            f"{e.action} ({e.status})  [{e.rule}] {e.reason}  «{e.excerpt[:40]}»" for e in events]


def guard_eval_json(report: GuardReport) -> str:
    """One JSON object: precision, recall, flagged (deleted or punished), total, held_for_review (apart)."""
    return json.dumps({"precision": round(report.precision, 4), "recall": round(report.recall, 4),
                       "flagged": report.flagged, "total": report.total,
                       "held_for_review": report.held_for_review})


def guard_review_lines(events: Sequence[GuardEventView], zone: tzinfo) -> list[str]:
    """Messages held for staff, oldest first, with the ids `siyu guard spam MESSAGE_ID` and
    `siyu guard not-spam EVENT_ID` take."""
    if not events:
        return ["nothing waiting for review"]
    return [f"event #{e.id}  message #{e.message_id}  {e.at.astimezone(zone):%Y-%m-%d %H:%M}  {e.group}  {e.member}  "
            f"score {e.score if e.score is not None else 0:.2f}  «{e.text[:60]}»" for e in events]


def guard_eval_lines(report: GuardReport) -> list[str]:
    """The scores, then every false positive (with the rule that fired) and every missed spam message."""
    lines = [f"precision {report.precision:.3f}  recall {report.recall:.3f}  flagged {report.flagged}/{report.total}"
             f"  held for review {report.held_for_review} ({report.held_spam} of them spam)",
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
        nearest = f"   → 最接近 {gap.closest}（{gap.closeness:.2f}）" if gap.closest else ""
        lines.append(f"{gap.count:>4}×  {gap.example}" + (f"   （也问：{others}）" if others else "") + nearest)
    return lines


def question_mix_lines(shares: Sequence[Share], days: int) -> list[str]:
    """Per period: intent, count and share of the questions answered (or handed off)."""
    if not shares:
        return [f"no answered questions in the last {days} days"]
    return [f"{s.period}  {s.intent:<24} {s.count:>5}  {s.share:6.1%}" for s in shares]


def tuned_thresholds_lines(source: str, understanding: Understanding, thresholds: Thresholds,
                           budget: float = 0.05, estimate: Estimate | None = None,
                           out_of_scope: float = 0.0) -> list[str]:
    """The chosen thresholds as a config.yaml snippet the operator can paste, and what to expect of them."""
    semantic = understanding.semantic.name if understanding.semantic else "none"
    lines = [f"# thresholds chosen on {source} (max correct with wrong ≤ {budget:.3f} there: 0.05 less the "
             "noise of a file that size); paste into config.yaml:",
             f"faq:\n  semantic: {semantic}\n  fuzzy_answer: {thresholds.fuzzy_answer:.4g}\n"
             f"  semantic_answer: {thresholds.semantic_answer:.4g}"]
    if estimate is not None:
        lines.append(f"# expected on unseen queries ({out_of_scope:.0%} out of scope), cross-validated over the "
                     f"catalog: correct {estimate.correct:.3f}, wrong {estimate.wrong:.3f} (in-scope answered "
                     f"wrongly {estimate.wrong_in_scope:.3f}, out-of-scope answered {estimate.answered_out_of_scope:.3f})")
    return lines


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
