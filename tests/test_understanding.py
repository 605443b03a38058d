"""Understanding: normalising, fuzzy and semantic tiers, the LLM tier against a fake OpenAI server, eval."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from intents.cascade import Thresholds, Understanding
from intents.catalog import Catalog, FaqIntent
from intents.evaluate import LabelledQuery, score_all, tune
from intents.llm import LlmClassifier
from intents.normalize import normalize
from tests.conftest import ROOT
from tests.fakes import FakeOpenAI, answer, user_message

CATALOG = Catalog((
    FaqIntent("shipping_fee", ("包邮吗", "运费多少", "满多少包邮"), "满 99 包邮", "运费和包邮"),
    FaqIntent("return_policy", ("可以退货吗", "怎么退货", "七天无理由吗"), "7 天无理由退货", "退货"),
    FaqIntent("store_location", ("门店在哪里", "线下店地址"), "静安嘉里中心 B1", "门店地址"),
))
ALWAYS_ASK = Thresholds(fuzzy_answer=1.01, semantic_answer=1.01, llm_floor=0.0, llm_accept=0.7)


@pytest.mark.parametrize("raw, expected", [
    ("請問ＡＢＣ包郵嗎？？", "请问abc包邮吗"),
    ("  Hello,   WORLD!! ", "hello world"),
    ("包邮吗😊👍🏻", "包邮吗"),
    ("退貨\u200d流程…", "退货 流程"),
    ("订单号：２０２６１１", "订单号 202611"),
])
def test_normalize(raw: str, expected: str) -> None:
    assert normalize(raw) == expected


async def test_fuzzy_and_semantic_tiers_answer_paraphrases() -> None:
    understanding = Understanding(CATALOG, Thresholds(fuzzy_answer=0.9, semantic_answer=0.45), semantic="tfidf")
    exact = await understanding.decide("包郵嗎？")
    assert (exact.intent, exact.tier) == ("shipping_fee", "fuzzy")
    paraphrase = await understanding.decide("不喜欢能退货吗")
    assert (paraphrase.intent, paraphrase.tier) == ("return_policy", "semantic")
    unknown = await understanding.decide("今天股市怎么样")
    assert (unknown.intent, unknown.tier) == (None, "handoff")


@pytest.fixture
async def fake_llm():  # type: ignore[no-untyped-def]
    fake = FakeOpenAI(reply=lambda body: answer("none"))
    base_url = await fake.start()
    yield fake, base_url
    await fake.close()


def cascade(base_url: str, timeout: float = 3.0) -> Understanding:
    llm = LlmClassifier(CATALOG, base_url, "fake-model", "sk-test", timeout=timeout)
    return Understanding(CATALOG, ALWAYS_ASK, semantic="tfidf", llm=llm)


async def test_llm_picks_a_candidate(fake_llm) -> None:  # type: ignore[no-untyped-def]
    fake, base_url = fake_llm
    fake.reply = lambda body: answer("return_policy", 0.92)
    understanding = cascade(base_url)
    decision = await understanding.decide("买回来发现尺寸不合适能退掉吗")
    assert (decision.intent, decision.tier, decision.confidence) == ("return_policy", "llm", 0.92)
    prompt = user_message(fake.requests[0])
    assert "买回来发现尺寸不合适能退掉吗" in prompt and "id: return_policy" in prompt
    assert fake.requests[0]["response_format"] == {"type": "json_object"}
    # cached: asking again does not call the model
    await understanding.decide("买回来发现尺寸不合适能退掉吗")
    assert understanding.llm.calls == 1 and len(fake.requests) == 1


@pytest.mark.parametrize("content", [
    answer("none", 0.9),                      # the model says nothing fits
    "Sure! The intent is return_policy.",     # not JSON
    json.dumps({"confidence": 0.9}),          # JSON without an intent
    answer("cancel_order", 0.99),             # not one of the candidates
    answer("return_policy", 0.3),             # not confident enough
])
async def test_anything_but_a_confident_valid_answer_hands_off(fake_llm, content: str) -> None:  # type: ignore[no-untyped-def]
    fake, base_url = fake_llm
    fake.reply = lambda body: content
    decision = await cascade(base_url).decide("帮我看看这个怎么弄")
    assert (decision.intent, decision.tier) == (None, "handoff")


async def test_slow_llm_times_out_into_a_handoff(fake_llm) -> None:  # type: ignore[no-untyped-def]
    fake, base_url = fake_llm
    fake.reply, fake.delay = (lambda body: answer("return_policy")), 2.0
    understanding = cascade(base_url, timeout=0.3)
    began = time.perf_counter()
    decision = await understanding.decide("能退吗")
    assert time.perf_counter() - began < 1.5
    assert (decision.intent, decision.tier) == (None, "handoff")
    assert understanding.llm.failures == 1


async def test_llm_server_error_hands_off() -> None:
    llm = LlmClassifier(CATALOG, "http://127.0.0.1:9/v1", "fake-model", "", timeout=1.0)  # nothing listens
    decision = await Understanding(CATALOG, ALWAYS_ASK, semantic="tfidf", llm=llm).decide("能退吗")
    assert decision.intent is None and llm.failures == 1


def test_tuning_keeps_wrong_answers_under_five_percent() -> None:
    understanding = Understanding(CATALOG, Thresholds(), semantic="tfidf")
    dev = [LabelledQuery("包邮吗", "shipping_fee"), LabelledQuery("运费怎么算", "shipping_fee"),
           LabelledQuery("能退货吗", "return_policy"), LabelledQuery("你们店在哪", "store_location"),
           LabelledQuery("今天天气如何", None), LabelledQuery("讲个笑话", None)] * 4
    chosen = tune(score_all(understanding, dev), Thresholds())
    assert chosen.semantic_answer <= 1.01 and chosen.fuzzy_answer <= 1.01


def test_siyu_eval_prints_the_metrics_and_tunes(tmp_path: Path) -> None:
    catalog = tmp_path / "catalog.jsonl"
    catalog.write_text("\n".join(json.dumps({"intent": i.id, "examples": list(i.examples), "answer": i.answer},
                                            ensure_ascii=False) for i in CATALOG.intents), encoding="utf-8")
    queries = tmp_path / "queries.jsonl"
    rows = [("包邮吗？", "shipping_fee"), ("運費多少", "shipping_fee"), ("怎么退货呢", "return_policy"),
            ("门店在哪里啊", "store_location"), ("帮我订机票", None), ("你是谁", None)]
    queries.write_text("\n".join(json.dumps({"text": t, "intent": i}, ensure_ascii=False) for t, i in rows),
                       encoding="utf-8")
    result = subprocess.run([sys.executable, "-m", "bot.cli", "eval", "--catalog", str(catalog), "--queries",
                             str(queries), "--tune-on", str(queries), "--json"], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert set(report) == {"correct", "wrong", "handoff", "accuracy", "oos_precision", "oos_recall", "p50_ms",
                           "p99_ms", "confusions"}
    assert report["wrong"] <= 0.05 and report["correct"] >= 0.5
    assert abs(report["correct"] + report["wrong"] + report["handoff"] - 1) < 1e-9
    assert "fuzzy_answer:" in result.stderr and "semantic_answer:" in result.stderr


def test_question_mix_and_gaps() -> None:
    from datetime import datetime, timezone
    from zoneinfo import ZoneInfo

    from intents.insights import cluster_gaps, question_mix

    t = datetime(2026, 3, 2, 4, tzinfo=timezone.utc)
    mix = question_mix([(t, "shipping_fee", False), (t, "shipping_fee", False), (t, None, True),
                        (t.replace(day=3), "return_policy", False)], ZoneInfo("Asia/Shanghai"))
    assert [(s.period, s.intent, s.count, round(s.share, 2)) for s in mix] == [
        ("2026-03-02", "shipping_fee", 2, 0.67), ("2026-03-02", "(handed off)", 1, 0.33),
        ("2026-03-03", "return_policy", 1, 1.0)]
    gaps = cluster_gaps(["能寄到国外吗", "能寄到国外吗？", "可以寄到国外吗", "有男士产品吗", "能寄国外吗"])
    assert (gaps[0].example, gaps[0].count) == ("能寄到国外吗", 4)
    assert (gaps[1].example, gaps[1].count) == ("有男士产品吗", 1)
