"""The guard's learned tier: a character n-gram classifier that scores how much a message reads like an ad.

Trained with scikit-learn (TF-IDF over characters 1–4, logistic regression), then exported as plain
JSON so that scoring needs no scikit-learn on the hot path and the same data always gives the same file.
"""
from __future__ import annotations

import gzip
import io
import json
import math
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from intents.normalize import fold

FORMAT = "siyu-guard-model/1"
DATA = Path(__file__).with_name("guard_data")
DEFAULT_MODEL = DATA / "spam_model.json.gz"
ATTRIBUTION = ("Trained on qq_group_train.jsonl from siuank/ADDetector4J @ fe01c7b (mc_qq_group.txt), "
               "MIT licence, (c) 2024 落叶, collection credited to GitHub user hsn8086; "
               "plus siyu's own brand examples. See bot/guard_data/README.md.")
NGRAMS = (1, 4)
C = 10.0  # chosen by 5-fold cross-validation on the training split (see README "The group guard")

_LONG_NUMBER = re.compile(r"0{5,}")
_DIGIT = re.compile(r"\d")
_SPACES = re.compile(r"\s+")


def classifier_text(text: str) -> str:
    """What the classifier reads: folded (full-width, traditional, case), invisible marks gone, a long
    number (QQ, 群号, phone) one token `00000` and every other digit `0`, so prices and ids generalise."""
    folded = "".join(c for c in fold(text) if unicodedata.category(c)[0] != "C" or c.isspace())
    folded = _LONG_NUMBER.sub(" 00000 ", _DIGIT.sub("0", folded))
    return f" {_SPACES.sub(' ', folded).strip()} "


def _grams(text: str, low: int, high: int) -> Counter[str]:
    # the same n-grams as scikit-learn's analyzer="char" on an already prepared text
    grams: Counter[str] = Counter()
    for n in range(low, high + 1):
        grams.update(text[i:i + n] for i in range(len(text) - n + 1))
    return grams


@dataclass(frozen=True)
class Sample:
    """One labelled message for training."""

    text: str
    spam: bool


@dataclass(frozen=True)
class SpamModel:
    """Scores a message 0..1 (1 = surely an ad). `weights[gram] = (idf, coefficient)`."""

    weights: dict[str, tuple[float, float]]
    intercept: float
    ngrams: tuple[int, int] = NGRAMS
    trained_on: tuple[int, int] = (0, 0)  # (spam, normal) samples

    def score(self, text: str) -> float:
        counts = _grams(classifier_text(text), *self.ngrams)
        norm = dot = 0.0
        for gram, count in counts.items():
            found = self.weights.get(gram)
            if found is None:
                continue
            value = (1.0 + math.log(count)) * found[0]
            norm += value * value
            dot += value * found[1]
        z = self.intercept + (dot / math.sqrt(norm) if norm else 0.0)
        return 1.0 / (1.0 + math.exp(-z)) if z > -700 else 0.0

    def to_bytes(self) -> bytes:
        """Gzipped JSON with sorted keys and a zero timestamp: the same model is the same bytes."""
        body = {"format": FORMAT, "attribution": ATTRIBUTION, "ngrams": list(self.ngrams),
                "intercept": self.intercept, "trained_on": {"spam": self.trained_on[0], "normal": self.trained_on[1]},
                "weights": {gram: list(pair) for gram, pair in sorted(self.weights.items())}}
        raw = json.dumps(body, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode()
        buffer = io.BytesIO()
        with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0, filename="") as out:
            out.write(raw)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> "SpamModel":
        body = json.loads(gzip.decompress(data))
        if body.get("format") != FORMAT:
            raise ValueError(f"not a siyu guard model (format {body.get('format')!r}) — rebuild it with "
                             "`siyu guard train`")
        trained = body.get("trained_on", {})
        return cls({gram: (float(p[0]), float(p[1])) for gram, p in body["weights"].items()},
                   float(body["intercept"]), (int(body["ngrams"][0]), int(body["ngrams"][1])),
                   (int(trained.get("spam", 0)), int(trained.get("normal", 0))))


def _rounded(value: float) -> float:
    return float(f"{value:.6g}")


def train(samples: Sequence[Sample]) -> SpamModel:
    """Fit the classifier; deterministic (liblinear with a fixed seed), so the same samples give the same model.

    CPU-bound for a second or so: call it from a command or a worker thread, never on the event loop.
    """
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    unique = sorted({(s.text, s.spam) for s in samples})  # order and duplicates must not change the model
    if not any(spam for _, spam in unique) or all(spam for _, spam in unique):
        raise ValueError("training needs both spam and normal messages")
    texts = [classifier_text(text) for text, _ in unique]
    labels = [int(spam) for _, spam in unique]
    vectorizer = TfidfVectorizer(analyzer="char", ngram_range=NGRAMS, sublinear_tf=True, lowercase=False,
                                 min_df=1)
    matrix = vectorizer.fit_transform(texts)
    model = LogisticRegression(C=C, class_weight="balanced", solver="liblinear", random_state=0, max_iter=1000)
    model.fit(matrix, labels)
    coef = model.coef_[0]
    weights = {gram: (_rounded(vectorizer.idf_[i]), _rounded(coef[i]))
               for gram, i in vectorizer.vocabulary_.items()}
    return SpamModel(weights, _rounded(float(model.intercept_[0])), NGRAMS,
                     (sum(labels), len(labels) - sum(labels)))


def read_samples(path: Path) -> list[Sample]:
    """`{"text": ..., "spam": true|false}` per line; ValueError `PATH:LINE: …` on a bad line."""
    from intents.jsonl import read_jsonl

    return read_jsonl(path, lambda row: Sample(str(row["text"]), bool(row["spam"])),
                      '{"text": ..., "spam": true|false}')


def corpus_files() -> list[Path]:
    """The shipped training data: the training split of the real group chat, and siyu's brand examples.

    `qq_group_heldout.jsonl` is never trained on: it is what `siyu guard eval` measures.
    """
    return [DATA / "qq_group_train.jsonl", DATA / "brand_examples.jsonl"]


def shipped_samples() -> list[Sample]:
    return [sample for path in corpus_files() for sample in read_samples(path)]


def train_with(extra: Iterable[Sample]) -> SpamModel:
    """The shipped corpus plus `extra` (staff decisions)."""
    return train([*shipped_samples(), *extra])


@lru_cache(maxsize=8)
def _load(path: str, mtime_ns: int) -> SpamModel:
    return SpamModel.from_bytes(Path(path).read_bytes())


def load_model(path: Path | None = None) -> SpamModel:
    """The model at `path` (default: the shipped one); reread when the file changes, so a retrained model
    takes effect without a restart. OSError or ValueError when it cannot be read."""
    where = path or DEFAULT_MODEL
    return _load(str(where), where.stat().st_mtime_ns)
