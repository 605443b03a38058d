"""Measuring understanding honestly: thresholds are tuned on one half of a labelled file and reported on the
other half, which they never saw; the configured thresholds are reported on that same half beside them."""
from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter

from intents.evaluate import LabelledQuery
from intents.holdout import split_tune_report
from tests.conftest import ROOT
from tests.harness import CONFIG

DATA = ROOT / "tests" / "data" / "faq_holdout"

# 10 shipping, 7 returns, 3 store, 1 coupon and 9 out of scope: odd groups on purpose
ROWS = ([LabelledQuery(f"包邮问题{n}", "shipping_fee") for n in range(10)]
        + [LabelledQuery(f"退货问题{n}", "return_policy") for n in range(7)]
        + [LabelledQuery(f"门店问题{n}", "store_location") for n in range(3)]
        + [LabelledQuery("优惠券怎么用", "coupon")]
        + [LabelledQuery(f"闲聊{n}", None) for n in range(9)])


def test_each_intent_and_out_of_scope_is_split_in_half() -> None:
    tune, report = split_tune_report(ROWS, seed=13)
    everything, in_tune, in_report = (Counter(q.intent for q in rows) for rows in (ROWS, tune, report))
    for intent, count in everything.items():
        assert {in_tune[intent], in_report[intent]} <= {count // 2, count - count // 2}, intent
        assert in_tune[intent] + in_report[intent] == count, intent
    assert in_tune[None] + in_report[None] == 9 and min(in_tune[None], in_report[None]) == 4
    assert abs(len(tune) - len(report)) <= 1  # the odd groups' extra queries alternate between the halves


def test_the_halves_do_not_overlap_and_lose_nothing() -> None:
    tune, report = split_tune_report(ROWS, seed=13)
    assert not set(tune) & set(report)
    assert sorted(tune + report, key=lambda q: q.text) == sorted(ROWS, key=lambda q: q.text)


def test_the_same_seed_gives_the_same_split_and_another_seed_another() -> None:
    assert split_tune_report(ROWS, seed=13) == split_tune_report(list(ROWS), seed=13)
    assert split_tune_report(ROWS, seed=13) != split_tune_report(ROWS, seed=14)


def test_siyu_eval_holdout_reports_tuned_and_default_thresholds_on_the_untouched_half() -> None:
    result = subprocess.run([sys.executable, "-m", "bot.cli", "eval", "--config", str(CONFIG),
                             "--catalog", str(DATA / "catalog.jsonl"), "--queries", str(DATA / "dev.jsonl"),
                             "--holdout", "13"], cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["tune_lines"], report["report_lines"]) == (8, 9)  # 17 lines: 5+4+3+5 split by intent
    metrics = {"correct", "wrong", "handoff", "accuracy", "oos_precision", "oos_recall", "p50_ms", "p99_ms"}
    for run in ("tuned", "default"):
        assert set(report[run]) == metrics, run
        assert abs(report[run]["correct"] + report[run]["wrong"] + report[run]["handoff"] - 1) < 1e-3, run
    assert (report["thresholds"]["default_fuzzy_answer"], report["thresholds"]["default_semantic_answer"]) == (0.9, 0.9)
    assert report["semantic"] == "calibrated" and set(report["cv_estimate"]) >= {"correct", "wrong"}


def test_holdout_and_tune_on_together_is_refused() -> None:
    dev = str(DATA / "dev.jsonl")
    result = subprocess.run([sys.executable, "-m", "bot.cli", "eval", "--config", str(CONFIG), "--catalog",
                             str(DATA / "catalog.jsonl"), "--queries", dev, "--tune-on", dev, "--holdout", "1"],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "--holdout" in result.stderr and not result.stdout
