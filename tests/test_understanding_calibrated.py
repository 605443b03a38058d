"""Understanding that knows when it knows: calibrated answers, messages that are not questions, bounded cost,
learning from an edited catalog, and the LLM tier's record."""
from __future__ import annotations

import asyncio
import shutil
from datetime import timedelta
from pathlib import Path

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sqlalchemy import select

from intents.calibrated import CalibratedIndex, _predict_proba
from intents.cascade import Thresholds, Understanding
from intents.catalog import Catalog, FaqIntent
from intents.embeddings import EmbeddingCache, text_key
from intents.evaluate import noise_aware_budget
from intents.normalize import normalize
from storage.llm_calls import record_guide_verdict
from storage.models import KeyValue, LlmCall, Message
from tests.fakes import FakeOpenAI, answer
from tests.harness import SCRIPTS, Harness

CUSTOMER = "li"


async def _customer(h: Harness, who: str = CUSTOMER) -> None:
    await h.customer_adds_guide(who, "李女士")
    h.clock.advance(timedelta(minutes=5))


def _after_greeting(h: Harness, who: str = CUSTOMER) -> list[str]:
    return [line.split(" ", 2)[2] for line in h.transcript(who)[1:]]


async def test_acknowledgements_and_emoji_call_nobody(harness: Harness) -> None:
    await _customer(harness)
    for text in ["好的", "👍", "嗯嗯", "  ", "🙏🙏", "好的👌", "收到啦"]:
        await harness.customer_says(CUSTOMER, text)
    await harness.customer_says(CUSTOMER, "包邮吗")
    assert _after_greeting(harness) == ["答·运费：测试订单满 99 元包邮"]  # no hand-off, and still answering
    async with harness.app.db.session() as session:
        handed = (await session.scalars(select(Message).where(Message.handoff.is_(True)))).all()
    assert handed == []


async def test_a_job_seeker_is_declined_not_given_the_store_address(harness: Harness) -> None:
    await _customer(harness)
    await harness.customer_says(CUSTOMER, "你们招聘店员吗")
    assert _after_greeting(harness) == ["答·招聘：测试品牌招聘请看官网，这里只解答购物问题"]


async def test_a_zero_width_space_does_not_hide_an_opt_out(harness: Harness) -> None:
    await _customer(harness)
    await harness.customer_says(CUSTOMER, "退\u200b订")
    await harness.customer_says("wang", "ＴＤ")  # full-width, from someone who never added the guide
    assert _after_greeting(harness) == ["已为您退订，之后不会再主动打扰您。如需帮助，随时回复我们即可。"]
    assert harness.texts("wang")[-1].startswith("已为您退订")


async def test_one_added_example_changes_the_next_answer(db_url: str, start, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    scripts = tmp_path / "scripts"
    shutil.copytree(SCRIPTS, scripts)
    h = await Harness.create(db_url, start, scripts)
    try:
        await _customer(h, "zhao")
        await h.customer_says("zhao", "能寄到香港吗")
        assert _after_greeting(h, "zhao") == ["转人工：这个问题请测试顾问来回答"]

        faq = scripts / "faq.yaml"  # a guide approved the question as an example of shipping_fee
        faq.write_text(faq.read_text(encoding="utf-8").replace(
            "examples: [包邮吗, 运费多少, 要运费吗, 满多少包邮, 邮费怎么算]",
            "examples: [包邮吗, 运费多少, 要运费吗, 满多少包邮, 邮费怎么算, 能寄到香港吗]"), encoding="utf-8")
        assert not await asyncio.to_thread(h.app.library.reload)
        await h.app.engine.answers.refresh()

        await _customer(h, "qian")
        await h.customer_says("qian", "能寄到香港吗")
        assert _after_greeting(h, "qian") == ["答·运费：测试订单满 99 元包邮"]
    finally:
        await h.close()


async def test_a_4096_character_message_leaves_the_database_free_while_the_model_reads_it(
        harness: Harness) -> None:
    await _customer(harness)
    long = ("我想问一下关于上次买的那个面霜" * 300)[:4096]
    answers = harness.app.engine.answers
    embedder = getattr(answers.understanding.semantic, "embedder", None)
    if embedder is not None:  # the model reads the start of the message only
        assert len(embedder.query_text(long)) == harness.app.settings.faq.embed_chars
    finished: list[str] = []

    async def customer() -> None:
        await harness.customer_says(CUSTOMER, long)
        finished.append("long message")

    async def someone_else_writes() -> None:
        await asyncio.sleep(0)  # let the long message start first
        async with harness.app.db.session() as session, session.begin():
            session.add(KeyValue(key="probe", value="1", updated_at=harness.clock.now()))
        finished.append("other write")

    await asyncio.gather(customer(), someone_else_writes())
    assert finished == ["other write", "long message"]  # the write did not wait for the model
    reply = _after_greeting(harness)
    assert len(reply) == 1  # answered or handed off, once


def test_the_calibrated_tier_scores_a_probability_and_estimates_unseen_wrong_answers() -> None:
    catalog = Catalog((
        FaqIntent("shipping_fee", ("包邮吗", "运费多少", "满多少包邮", "邮费怎么算", "要运费吗"), "a"),
        FaqIntent("return_policy", ("可以退货吗", "怎么退货", "七天无理由吗", "不喜欢能退吗", "退货流程"), "b"),
        FaqIntent("store_location", ("门店在哪里", "线下店地址", "附近有店吗", "实体店在哪", "怎么去你们店"), "c"),
    ))
    index = CalibratedIndex(catalog)  # TF-IDF ranker: the same on any machine
    best = index.top("运费多少钱")[0]
    assert best.intent == "shipping_fee" and 0 < best.score <= 1
    strict, loose = index.estimate(0.99, 0.3), index.estimate(0.0, 0.3)
    assert strict is not None and loose is not None
    assert strict.wrong <= loose.wrong and loose.answered_out_of_scope == 1.0


def test_the_calibrated_tier_reads_a_question_as_scikit_learn_would() -> None:
    """Its own TF-IDF and probability arithmetic (faster per question) gives what scikit-learn gives."""
    catalog = Catalog((
        FaqIntent("shipping_fee", ("包邮吗", "运费多少", "满多少包邮", "free shipping?"), "a"),
        FaqIntent("return_policy", ("可以退货吗", "怎么退货", "七天无理由吗", "how to return"), "b"),
        FaqIntent("store_location", ("门店在哪里", "线下店地址", "附近有店吗", "store address"), "c"),
    ))
    index = CalibratedIndex(catalog)
    vectorizer = TfidfVectorizer(analyzer="char", ngram_range=(1, 3), sublinear_tf=True,
                                 preprocessor=normalize).fit(index.layout.examples)
    assert vectorizer.vocabulary_ == index._tfidf.vocabulary_ and np.allclose(vectorizer.idf_, index._tfidf.idf_)
    assert index._ranker is not None
    ranker = LogisticRegression()
    ranker.coef_, ranker.intercept_, ranker.classes_ = (index._ranker.coef_, index._ranker.intercept_,
                                                        index._ranker.classes_)
    for question in ["运费多少钱", "退货退货退货", "FREE  Shipping!!", "今天天气怎么样", "zzz"]:
        row, per_intent = index._tfidf_of(question, row=True)
        words = vectorizer.transform([question])
        assert np.allclose(row.toarray(), words.toarray())  # type: ignore[union-attr]
        assert np.allclose(per_intent, index.layout.top2((index._t @ words.T).toarray().T))  # type: ignore[operator]
        assert np.allclose(_predict_proba(index._ranker, words), ranker.predict_proba(words))


def test_tuning_keeps_a_margin_for_a_small_development_file() -> None:
    assert noise_aware_budget(0.05, 67) < noise_aware_budget(0.05, 400) < 0.05
    assert noise_aware_budget(0.05, 100_000) > 0.049


def test_catalog_embeddings_are_cached_by_text(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path)
    cache.put(text_key("包邮吗"), np.ones(384, np.float32))
    cache.save({text_key("包邮吗")})
    again = EmbeddingCache(tmp_path)
    assert again.get(text_key("包邮吗")) is not None and again.get(text_key("运费多少")) is None


async def test_the_llm_tier_is_recorded_and_a_guide_verdict_kept(db_url: str, start) -> None:  # type: ignore[no-untyped-def]
    fake = FakeOpenAI(reply=lambda body: answer("return_policy", 0.92))
    base_url = await fake.start()
    h = await Harness.create(db_url, start, SCRIPTS, llm={"base_url": base_url, "model": "fake-model"},
                             faq={"semantic": "tfidf", "fuzzy_answer": 1.01, "semantic_answer": 1.01,
                                  "llm_floor": 0.0, "llm_accept": 0.7})
    try:
        await _customer(h)
        await h.customer_says(CUSTOMER, "买回来发现尺寸不合适能退掉吗")
        fake.reply = lambda body: answer("none", 0.8)
        await h.customer_says(CUSTOMER, "你们的快递盒能回收吗")
        assert _after_greeting(h) == ["答·退货：测试商品 7 天内可退", "转人工：这个问题请测试顾问来回答"]
        async with h.app.db.session() as session, session.begin():
            calls = (await session.scalars(select(LlmCall).order_by(LlmCall.id))).all()
            assert [(c.model, c.picked, c.answered, c.failure) for c in calls] == [
                ("fake-model", "return_policy", True, None), ("fake-model", None, False, None)]
            assert all(c.latency_ms >= 0 and c.message_id is not None for c in calls)
            # a guide confirms the first pick, and teaches that the second was about returns after all
            assert await record_guide_verdict(session, calls[0].message_id, "return_policy", h.clock.now()) == 1
            assert await record_guide_verdict(session, calls[1].message_id, "return_policy", h.clock.now()) == 1
        async with h.app.db.session() as session:
            judged = (await session.scalars(select(LlmCall).order_by(LlmCall.id))).all()
        assert [(c.verdict, c.guide_intent) for c in judged] == [("confirmed", "return_policy"),
                                                                 ("corrected", "return_policy")]
    finally:
        await h.close()
        await fake.close()


async def test_an_empty_message_is_quiet_without_running_the_matchers() -> None:
    understanding = Understanding(Catalog((FaqIntent("a", ("包邮吗",), "x"),)), Thresholds(), semantic="tfidf")
    decision = await understanding.decide("\u200b 👍 。")
    assert (decision.intent, decision.kind, decision.quiet) == (None, "empty", True)
