"""Splitting a labelled file into a half to tune thresholds on and a half to report on, never tuned on.

Quality measured on the very queries the thresholds were chosen on flatters them; reporting on the other
half is what a user sees on new questions.
"""
from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence
from typing import Protocol, TypeVar


class Labelled(Protocol):
    """Anything with an expected intent (None: out of scope)."""

    @property
    def intent(self) -> str | None: ...


L = TypeVar("L", bound=Labelled)


def split_tune_report(rows: Sequence[L], seed: int) -> tuple[list[L], list[L]]:
    """Two halves, each with half of every intent's queries (out of scope counts as one intent).

    Deterministic for a given `seed` and row order. An intent with an odd count gives its extra query to the
    report and the tune half in turn, so the halves differ by at most one query in size. Same algorithm as
    the one-off split behind the first held-out figures of issue 13 (seed 13), so they reproduce.
    """
    by_intent: dict[str | None, list[L]] = defaultdict(list)
    for row in rows:
        by_intent[row.intent].append(row)
    rng = random.Random(seed)
    tune: list[L] = []
    report: list[L] = []
    extra_to_tune = 0  # 1: the next odd group's extra query goes to the tune half
    for intent in sorted(by_intent, key=lambda i: (i is None, i or "")):
        group = list(by_intent[intent])
        rng.shuffle(group)
        half = len(group) // 2
        if len(group) % 2:
            half += extra_to_tune
            extra_to_tune ^= 1
        tune += group[:half]
        report += group[half:]
    return tune, report
