"""The calibrated tier: how likely the best intent is *right*, from everything the matchers know.

A raw similarity says how close a question is to an example, not how often such a closeness is a right
answer: 0.85 is sure in one catalog and a coin toss in another. So, at catalog load:

1. a ranker — logistic regression over the examples' embeddings (or char n-gram TF-IDF without the
   embeddings extra) — orders the intents; above `RANKER_LIMIT` examples, nearest examples order them;
2. cross-validation over the catalog's own examples produces questions the ranker has not seen: each
   held-out example once with its intent present (right or wrongly ranked) and once with its whole intent
   hidden (a question the catalog cannot answer: anything answered is wrong);
3. a small logistic calibrator learns P(the best intent is right) from the ranker's probability, its
   margin over the second, the embedding / TF-IDF / fuzzy scores of that intent and whether those tiers
   agree on it.

The same cross-validated rows estimate the wrong rate on unseen questions at any threshold (`estimate`).
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from rapidfuzz import fuzz, process

from intents.catalog import Catalog
from intents.embeddings import Embedder, limit_blas_threads
from intents.fuzzy import Candidate
from intents.normalize import normalize

log = logging.getLogger(__name__)

RANKER_LIMIT = 3000   # examples; above it a ranker's training no longer fits a reload's few seconds
CV_QUERIES = 600      # held-out questions for calibration (a sample in big catalogs)
FOLDS = 5
RANKER_C = 100.0     # weak regularisation: five examples an intent are few, and all of them count
_NONE = -np.inf


@dataclass(frozen=True)
class Estimate:
    """Expected rates on unseen questions at one threshold, given the share that is out of scope."""

    correct: float
    wrong: float
    wrong_in_scope: float     # answered with the wrong intent, among in-scope questions
    answered_out_of_scope: float  # answered at all, among out-of-scope questions


class _Layout:
    """Examples grouped by intent; per-intent aggregates of per-example scores, vectorised."""

    def __init__(self, catalog: Catalog) -> None:
        kept = [i for i in catalog.intents if i.examples]
        self.intents = [i.id for i in kept]
        self.examples = [e for i in kept for e in i.examples]
        self.owners = np.array([n for n, i in enumerate(kept) for _ in i.examples], dtype=np.int64)
        width = max((len(i.examples) for i in kept), default=1)
        self.slots = np.full((len(kept), width), len(self.examples), dtype=np.int64)  # len → the padding
        for n, start in enumerate(np.cumsum([0] + [len(i.examples) for i in kept[:-1]]) if kept else []):
            size = len(kept[n].examples)
            self.slots[n, :size] = np.arange(start, start + size)
        # which cross-validation fold each example is held out in: its position within its intent
        self.fold = np.concatenate([np.arange(len(i.examples)) % FOLDS for i in kept]) if kept else np.zeros(0, int)

    def top2(self, similarities: np.ndarray) -> np.ndarray:
        """Per intent, the mean of its two most similar examples (one example: itself); rows are queries."""
        padded = np.concatenate([similarities, np.full((similarities.shape[0], 1), _NONE)], axis=1)
        grid = padded[:, self.slots]  # queries × intents × examples-per-intent
        if grid.shape[2] == 1:
            return grid[:, :, 0]
        two = -np.partition(-grid, 1, axis=2)[:, :, :2]
        second = np.where(np.isfinite(two[:, :, 1]), two[:, :, 1], two[:, :, 0])
        return (two[:, :, 0] + second) / 2

    def best(self, similarities: np.ndarray) -> np.ndarray:
        padded = np.concatenate([similarities, np.full((similarities.shape[0], 1), _NONE)], axis=1)
        return padded[:, self.slots].max(axis=2)


def _features(probs: np.ndarray, embed: np.ndarray | None, tfidf: np.ndarray, fuzzy: np.ndarray) -> np.ndarray:
    """One row per query about its best-ranked intent (rows of the inputs: queries × intents)."""
    rows = np.arange(len(probs))
    order = np.argsort(-probs, axis=1)[:, :2] if probs.shape[1] > 1 else np.zeros((len(probs), 2), int)
    best, second = order[:, 0], order[:, 1]
    p1 = np.clip(probs[rows, best], 1e-6, 1)
    p2 = np.clip(probs[rows, second], 1e-6, 1) if probs.shape[1] > 1 else np.full(len(probs), 1e-6)
    columns = [np.log(p1), np.log(p1) - np.log(p2)]
    for scores in ([embed] if embed is not None else []) + [tfidf, fuzzy]:
        finite = np.where(np.isfinite(scores), scores, 0.0)
        mine = finite[rows, best]
        others = finite.copy()
        others[rows, best] = -1.0
        columns += [mine, mine - others.max(axis=1), (finite.argmax(axis=1) == best).astype(float)]
    return np.column_stack(columns)


def _predict_proba(model: object, x: object) -> np.ndarray:
    """`LogisticRegression.predict_proba` without its input checks: the same arithmetic (softmax of the
    decision, or the logistic of it for two classes), a fraction of a millisecond less per question."""
    decision = np.asarray(x @ model.coef_.T, dtype=np.float64) + model.intercept_  # type: ignore[attr-defined,operator]
    if decision.shape[1] == 1:
        positive = 1 / (1 + np.exp(-decision[:, 0]))
        return np.column_stack([1 - positive, positive])
    decision -= decision.max(axis=1, keepdims=True)
    np.exp(decision, out=decision)
    return decision / decision.sum(axis=1, keepdims=True)


class CalibratedIndex:
    """Ranks intents and scores the best one with a calibrated probability of being right."""

    name = "calibrated"

    def __init__(self, catalog: Catalog, embedder: Embedder | None = None, seed: int = 0) -> None:
        from sklearn.feature_extraction.text import TfidfVectorizer

        limit_blas_threads()
        self.layout = _Layout(catalog)
        self.embedder = embedder
        self._choices = [normalize(e) for e in self.layout.examples]
        self._tfidf = TfidfVectorizer(analyzer="char", ngram_range=(1, 3), sublinear_tf=True, preprocessor=normalize)
        self._t = self._tfidf.fit_transform(self.layout.examples) if self.layout.examples else None
        # a question's TF-IDF row, computed as `transform` does but without its per-call overhead (milliseconds
        # under load), and scored against the examples through each n-gram's column
        self._analyze = self._tfidf.build_analyzer()
        self._columns = self._t.tocsc() if self._t is not None else None  # type: ignore[union-attr]
        self._e = embedder.examples(self.layout.examples) if embedder is not None and self.layout.examples else None
        self._ranker = None
        self._calibrator = None
        self._cv: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # p in scope, right?, p out of scope
        if len(self.layout.intents) >= 2:
            self._train(np.random.default_rng(seed))

    # --- training ---------------------------------------------------------------------------------

    def _ranker_input(self, rows: np.ndarray | slice) -> object:
        return self._e[rows] if self._e is not None else self._t[rows]  # type: ignore[index]

    def _fit_ranker(self, rows: np.ndarray) -> object | None:
        """A fold starts from scratch: warm-started from the full model it would remember its held-out
        examples, and the calibrator would learn a confidence real questions never reach."""
        from sklearn.linear_model import LogisticRegression

        if len(self.layout.examples) > RANKER_LIMIT:
            return None
        return LogisticRegression(C=RANKER_C, max_iter=300).fit(self._ranker_input(rows), self.layout.owners[rows])

    def _probs(self, ranker: object | None, rows_x: object, knn: np.ndarray) -> np.ndarray:
        """The ranker's probability per intent (nearest-examples softmax without a trained ranker)."""
        if ranker is None:
            logits = np.where(np.isfinite(knn), knn, -10.0) * 30.0
            logits -= logits.max(axis=1, keepdims=True)
            weights = np.exp(logits)
            return weights / weights.sum(axis=1, keepdims=True)
        probs = np.zeros((knn.shape[0], len(self.layout.intents)))
        probs[:, ranker.classes_] = _predict_proba(ranker, rows_x)  # type: ignore[attr-defined]
        return probs

    def _similarities(self, query_rows: np.ndarray) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
        """Example-level similarities of catalog examples (as questions) to every example."""
        embed = self._e[query_rows] @ self._e.T if self._e is not None else None
        tfidf = (self._t[query_rows] @ self._t.T).toarray()  # type: ignore[index,union-attr]
        fuzzy = process.cdist([self._choices[i] for i in query_rows], self._choices, scorer=fuzz.ratio,
                              dtype=np.float32) / 100
        return embed, tfidf, fuzzy

    def _train(self, rng: np.random.Generator) -> None:
        from sklearn.linear_model import LogisticRegression

        layout = self.layout
        everything = np.arange(len(layout.examples))
        self._ranker = self._fit_ranker(everything)
        queries = everything if len(everything) <= CV_QUERIES else np.sort(rng.choice(everything, CV_QUERIES, False))
        embed, tfidf, fuzzy = self._similarities(queries)
        truth = layout.owners[queries]
        rows_in, rows_out, right = [], [], []
        for fold in range(FOLDS):
            mine = queries[layout.fold[queries] == fold]
            if not len(mine):
                continue
            at = np.flatnonzero(layout.fold[queries] == fold)
            held = layout.fold == fold
            ranker = self._fit_ranker(np.flatnonzero(~held)) if self._ranker is not None else None
            masked = [None if s is None else np.where(held[None, :], _NONE, s[at]) for s in (embed, tfidf, fuzzy)]
            knn = [None if s is None else layout.top2(s) for s in masked[:2]]
            fuzzy_best = layout.best(masked[2])
            probs = self._probs(ranker, self._ranker_input(mine), knn[0] if knn[0] is not None else knn[1])
            if ranker is not None:
                probs[:, ~np.isin(np.arange(len(layout.intents)), layout.owners[~held])] = 0.0
            rows_in.append(_features(probs, knn[0], knn[1], fuzzy_best))
            right.append(probs.argmax(axis=1) == truth[at])
            # the same questions with their intent hidden: whatever is answered is wrong
            hide = (np.arange(len(at)), truth[at])
            hidden = probs.copy()
            hidden[hide] = 0.0
            hidden /= np.maximum(hidden.sum(axis=1, keepdims=True), 1e-12)
            scores = []
            for s in (knn[0], knn[1], fuzzy_best):
                if s is not None:
                    s = s.copy()
                    s[hide] = _NONE
                scores.append(s)
            rows_out.append(_features(hidden, scores[0], scores[1], scores[2]))
        x_in, x_out = np.vstack(rows_in), np.vstack(rows_out)
        y_in = np.concatenate(right).astype(int)
        x = np.vstack([x_in, x_out])
        y = np.concatenate([y_in, np.zeros(len(x_out), int)])
        if len(np.unique(y)) < 2:
            return
        self._mean, self._scale = x.mean(axis=0), x.std(axis=0) + 1e-6
        self._calibrator = LogisticRegression(C=1.0, max_iter=500).fit((x - self._mean) / self._scale, y)
        self._cv = (self._calibrate(x_in), y_in.astype(bool), self._calibrate(x_out))

    def _calibrate(self, features: np.ndarray) -> np.ndarray:
        assert self._calibrator is not None
        return _predict_proba(self._calibrator, (features - self._mean) / self._scale)[:, 1]

    # --- answering ----------------------------------------------------------------------------------

    def top(self, question: str, k: int = 5) -> list[Candidate]:
        query = normalize(question)
        if not query or not self.layout.examples:
            return []
        vector = self.embedder.query(question) if self._e is not None and self.embedder is not None else None
        embed = self.layout.top2((self._e @ vector)[None, :]) if vector is not None else None  # type: ignore[operator]
        words, tfidf = self._tfidf_of(question, row=vector is None)
        fuzzy = self.layout.best(process.cdist([query], self._choices, scorer=fuzz.ratio, dtype=np.float32) / 100)
        knn = embed if embed is not None else tfidf
        probs = self._probs(self._ranker, vector[None, :] if vector is not None else words, knn)
        order = np.argsort(-probs[0])[:k]
        top_p = max(float(probs[0, order[0]]), 1e-12)
        confidence = (float(self._calibrate(_features(probs, embed, tfidf, fuzzy))[0]) if self._calibrator
                      else top_p)
        return [Candidate(self.layout.intents[i], confidence * float(probs[0, i]) / top_p,
                          self.layout.examples[int(self.layout.slots[i, 0])]) for i in order]

    def _tfidf_of(self, question: str, row: bool) -> tuple[object | None, np.ndarray]:
        """Per intent, the mean of its two most TF-IDF-similar examples, and (if `row`, for a ranker without
        embeddings) the question's TF-IDF row: sublinear counts × idf, unit length, as `transform` makes it."""
        from scipy.sparse import csr_matrix

        vocabulary = self._tfidf.vocabulary_
        counts: dict[int, int] = {}
        for gram in self._analyze(question):
            column = vocabulary.get(gram)
            if column is not None:
                counts[column] = counts.get(column, 0) + 1
        columns = np.array(sorted(counts), dtype=np.int64)
        weights = (1 + np.log(np.array([counts[c] for c in columns.tolist()], dtype=np.float64))) * \
            self._tfidf.idf_[columns]
        norm = np.sqrt(weights @ weights)
        if norm > 0:
            weights /= norm
        matrix = self._columns
        assert matrix is not None
        starts, sizes = matrix.indptr[columns], np.diff(matrix.indptr)[columns]  # each n-gram's examples
        at = np.repeat(starts - np.cumsum(sizes) + sizes, sizes) + np.arange(sizes.sum())
        similarity = np.bincount(matrix.indices[at], matrix.data[at] * np.repeat(weights, sizes),
                                 minlength=len(self.layout.examples))
        words = csr_matrix((weights, columns, [0, len(columns)]), shape=(1, len(vocabulary))) if row else None
        return words, self.layout.top2(similarity[None, :])

    def estimate(self, threshold: float, out_of_scope: float) -> Estimate | None:
        """Cross-validated rates at `threshold` for questions of which `out_of_scope` share has no intent."""
        if self._cv is None:
            return None
        p_in, right, p_out = self._cv
        answered = p_in >= threshold
        wrong_in = float(np.mean(answered & ~right))
        answered_out = float(np.mean(p_out >= threshold))
        inside = 1 - out_of_scope
        return Estimate(inside * float(np.mean(answered & right)), inside * wrong_in + out_of_scope * answered_out,
                        wrong_in, answered_out)

    def threshold_for(self, max_wrong: float, out_of_scope: float) -> float:
        """The lowest threshold whose cross-validated wrong rate stays within `max_wrong`."""
        if self._cv is None:
            return 1.01
        candidates = np.unique(np.concatenate([self._cv[0], self._cv[2], [1.01]]))
        for threshold in candidates:
            estimate = self.estimate(float(threshold), out_of_scope)
            if estimate is not None and estimate.wrong <= max_wrong:
                return float(threshold)
        return 1.01


def build_calibrated(catalog: Catalog, embedder: Embedder | None) -> CalibratedIndex:
    return CalibratedIndex(catalog, embedder)


__all__: Sequence[str] = ("CalibratedIndex", "Estimate", "build_calibrated")
