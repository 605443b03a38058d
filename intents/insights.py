"""What operators learn from traffic: the mix of question types, and the questions nobody answered."""
from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime
from zoneinfo import ZoneInfo

from rapidfuzz import fuzz, process

from intents.fuzzy import Candidate
from intents.normalize import normalize

HANDOFF = "(handed off)"


@dataclass(frozen=True)
class Share:
    """One question type's share of one period."""

    period: str
    intent: str
    count: int
    share: float


def question_mix(replies: Sequence[tuple[datetime, str | None, bool]], zone: ZoneInfo,
                 by: str = "day") -> list[Share]:
    """Proportion of each question type per day (or ISO week) in the operator's timezone."""
    periods: dict[str, Counter[str]] = defaultdict(Counter)
    for at, intent, handoff in replies:
        local: date = at.astimezone(zone).date()
        if by == "week":
            year, week, _ = local.isocalendar()
            period = f"{year}-W{week:02d}"
        else:
            period = local.isoformat()
        periods[period][HANDOFF if handoff or not intent else intent] += 1
    shares = []
    for period in sorted(periods):
        total = sum(periods[period].values())
        for intent, count in periods[period].most_common():
            shares.append(Share(period, intent, count, count / total))
    return shares


@dataclass(frozen=True)
class Gap:
    """A cluster of similar unanswered questions: a candidate new FAQ entry."""

    example: str
    count: int
    variants: tuple[str, ...]
    closest: str | None = None  # the intent it is nearest to: add the question there, or write a new one
    closeness: float = 0.0      # that tier's score, 0–1


def cluster_gaps(questions: Sequence[str], similarity: float = 60.0, top: int = 20) -> list[Gap]:
    """Greedy clustering on normalised text; the most frequent phrasing stands for its cluster."""
    texts = [q for q in questions if normalize(q)]
    if not texts:
        return []
    counts = Counter(normalize(t) for t in texts)
    original: dict[str, str] = {}
    for text in texts:
        original.setdefault(normalize(text), text)
    keys = [k for k, _ in counts.most_common()]
    matrix = process.cdist(keys, keys, scorer=fuzz.ratio, score_cutoff=similarity)
    taken: set[int] = set()
    gaps = []
    for i, key in enumerate(keys):
        if i in taken:
            continue
        members = [j for j in range(len(keys)) if j not in taken and matrix[i][j] >= similarity]
        taken.update(members)
        gaps.append(Gap(original[key], sum(counts[keys[j]] for j in members),
                        tuple(original[keys[j]] for j in members[:5])))
    return sorted(gaps, key=lambda g: -g.count)[:top]


def with_closest_intents(gaps: Sequence[Gap], top: Callable[[str], Sequence[Candidate]]) -> list[Gap]:
    """Each gap with the intent its questions are closest to (by `top`, the cascade's best tier)."""
    suggested = []
    for gap in gaps:
        scores: dict[str, float] = defaultdict(float)
        for variant in gap.variants:
            for candidate in list(top(variant))[:1]:
                scores[candidate.intent] += candidate.score / len(gap.variants)
        best = max(scores.items(), key=lambda item: item[1], default=None)
        suggested.append(replace(gap, closest=best[0], closeness=best[1]) if best else gap)
    return suggested
