"""Similarity to messages staff already decided on (as tg-spam does): a campaign repeating an ad that staff
removed once is caught at once, and a message staff cleared is not punished again.

Texts are compared in the guard's view (`guard_view`): folded, evasions mapped back, only letters and
digits left, so 「q 群」, full-width letters, zero-width marks and split domains do not hide a repeat.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rapidfuzz import fuzz, process

from intents.normalize import fold, squeeze

# spellings that mean the same to the guard, applied before comparing (the operator's guard.yaml adds more);
# each maps to a form that contains no key, so applying them twice changes nothing
BUILT_IN_EVASIONS: tuple[tuple[str, str], ...] = (
    ("qq群", "q群"), ("扣扣群", "q群"), ("扣群", "q群"), ("企鹅群", "q群"), ("➕", "加"), ("╋", "加"), ("+v", "加微信"),
    ("薇信", "微信"), ("威信", "微信"), ("徽信", "微信"), ("维信", "微信"), ("v信", "微信"), ("vx", "微信"),
    ("点com", "com"), ("点cn", "cn"), ("点top", "top"),
)


def guard_view(text: str, evasions: Sequence[tuple[str, str]] = ()) -> str:
    """Folded, evasions mapped back, everything but letters and digits removed."""
    folded = fold(text)
    pairs = (*evasions, *BUILT_IN_EVASIONS)
    for wrong, right in pairs:
        folded = folded.replace(wrong, right)
    flat = squeeze(folded)
    for wrong, right in pairs:  # again across inserted spaces and dots (q 群, 威 信, wqkj777. top)
        if squeeze(wrong) == wrong:
            flat = flat.replace(wrong, squeeze(right))
    return flat


@dataclass(frozen=True)
class SimilarSample:
    """The staff sample a message is close to, and how close (0–100)."""

    sample_id: int
    spam: bool
    similarity: float


@dataclass(frozen=True)
class SampleIndex:
    """Staff samples in the guard's view; `version` tells whether storage has changed since it was built."""

    spam: tuple[tuple[int, str], ...] = ()
    normal: tuple[tuple[int, str], ...] = ()
    version: tuple[int, int] = (0, 0)  # (count, newest id) of the samples it was built from

    @classmethod
    def build(cls, rows: Sequence[tuple[int, str, bool]], version: tuple[int, int],
              evasions: Sequence[tuple[str, str]] = ()) -> "SampleIndex":
        spam, normal = [], []
        for sample_id, text, is_spam in rows:
            view = guard_view(text, evasions)
            if view:
                (spam if is_spam else normal).append((sample_id, view))
        return cls(tuple(spam), tuple(normal), version)

    def closest(self, text: str, threshold: float, min_length: int,
                evasions: Sequence[tuple[str, str]] = ()) -> SimilarSample | None:
        """The nearest sample at or above `threshold`; a cleared (normal) sample wins a tie with spam."""
        view = guard_view(text, evasions)
        if len(view) < min_length:
            return None
        best: SimilarSample | None = None
        for spam, samples in ((False, self.normal), (True, self.spam)):
            if not samples:
                continue
            found = process.extractOne(view, [s for _, s in samples], scorer=fuzz.ratio, score_cutoff=threshold)
            if found is not None and (best is None or found[1] > best.similarity):
                best = SimilarSample(samples[found[2]][0], spam, float(found[1]))
        return best
