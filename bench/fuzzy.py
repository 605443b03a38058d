"""Understanding at catalog scale, one JSON object: the fuzzy tier, the embeddings query, catalog start (cold
and warm cache) and the whole offline cascade, each beside a same-run baseline.

    python -m bench fuzzy                   # 2,000 intents × 5 examples (10,000 phrasings)
    BENCH_FUZZY_EMBED_INTENTS=200 python -m bench fuzzy  # fewer intents for the embedding parts (a
                                                          # cold 10,000-example catalog is minutes of CPU)

Baselines, measured in the same run on the same data: the fuzzy tier scoring every phrasing (one rapidfuzz
cdist, what the tier did before narrowing); a bare embeddings query (model + one matrix product, nothing
else); the cascade on the sample catalog (`scripts/faq.yaml`).
"""
from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import yaml

from intents.cascade import Thresholds, Understanding
from intents.catalog import Catalog, FaqFile, FaqIntent
from intents.fuzzy import FuzzyMatcher
from intents.semantic import embeddings_available

WORDS = ("包邮", "发货", "退货", "换货", "优惠", "会员", "积分", "门店", "敏感肌", "精华", "面霜", "礼盒", "发票",
         "物流", "快递", "价格", "活动", "正品", "保质期", "成分", "小样", "地址", "支付", "分期", "客服", "直播",
         "shipping", "refund", "coupon", "order", "delivery", "size", "color", "stock", "gift", "price")
ENDINGS = ("吗", "怎么办", "多久", "在哪里", "可以吗", "是多少", "怎么弄", "?")


def catalog(intents: int = 2000, examples: int = 5, seed: int = 1) -> Catalog:
    rng = random.Random(seed)

    def phrase() -> str:
        return "".join(rng.sample(WORDS, rng.randrange(2, 4))) + rng.choice(ENDINGS)

    return Catalog(tuple(FaqIntent(f"i{n}", tuple(phrase() for _ in range(examples)), "a")
                         for n in range(intents)))


def _latency(call: Callable[[str], object], queries: list[str]) -> dict[str, float]:
    """Wall-clock p50/p99, and the same for the CPU time of this thread: on a shared 2-core machine the wall
    p99 of a sub-millisecond call is mostly the time the scheduler gave the core to someone else."""
    for q in queries[:20]:
        call(q + "吗")  # warm the code paths, not the query cache: the measured queries stay unseen
    samples, cpu = [], []
    for q in queries:
        began, began_cpu = time.perf_counter(), time.thread_time()
        call(q)
        cpu.append((time.thread_time() - began_cpu) * 1000)
        samples.append((time.perf_counter() - began) * 1000)
    samples.sort()
    cpu.sort()
    return {"p50_ms": round(samples[len(samples) // 2], 3), "p99_ms": round(samples[int(len(samples) * 0.99)], 3),
            "cpu_p50_ms": round(cpu[len(cpu) // 2], 3), "cpu_p99_ms": round(cpu[int(len(cpu) * 0.99)], 3),
            "queries": len(queries)}


def _ratio(measured: dict[str, float], baseline: dict[str, float]) -> float:
    return round(measured["p99_ms"] / max(baseline["p99_ms"], 1e-9), 3)


def main() -> None:
    intents = int(os.environ.get("BENCH_FUZZY_INTENTS", "2000"))
    cat = catalog(intents)
    rng = random.Random(2)
    examples = [e for i in cat.intents for e in i.examples]
    queries = [rng.choice(examples)[:-1] + rng.choice(ENDINGS) for _ in range(2000)]
    result: dict[str, object] = {"phrasings": len(examples), "load_average": round(os.getloadavg()[0], 2)}
    cache_dir = Path(tempfile.mkdtemp(prefix="siyu-bench-embeddings-"))

    fuzzy = FuzzyMatcher(cat)
    whole = FuzzyMatcher(cat)
    whole._has = None  # the baseline: score every phrasing
    result["fuzzy"] = _latency(fuzzy.top, queries)
    result["fuzzy_baseline_all_phrasings"] = _latency(whole.top, queries)
    result["fuzzy_ratio_p99"] = _ratio(result["fuzzy"], result["fuzzy_baseline_all_phrasings"])  # type: ignore[arg-type]

    embed_intents = int(os.environ.get("BENCH_FUZZY_EMBED_INTENTS", str(intents)))
    if embed_intents != intents:  # the embedding parts on a smaller catalog of the same kind
        cat = catalog(embed_intents)
        examples = [e for i in cat.intents for e in i.examples]
        queries = [rng.choice(examples)[:-1] + rng.choice(ENDINGS) for _ in range(2000)]
    result["embedded_phrasings"] = len(examples)
    if embeddings_available():
        from intents.embeddings import Embedder

        began = time.perf_counter()
        embedder = Embedder(cache_dir=cache_dir)
        matrix = embedder.examples(examples)
        cold = time.perf_counter() - began
        began = time.perf_counter()
        Embedder(cache_dir=cache_dir).examples(examples)
        warm = time.perf_counter() - began
        result["catalog_start_s"] = {"cold": round(cold, 2), "warm_cache": round(warm, 3),
                                     "ratio_warm_to_cold": round(warm / max(cold, 1e-9), 4)}
        model = embedder._model
        fresh = [q + str(n) for n, q in enumerate(queries[:300])]  # not in the recent-query cache
        result["embeddings_query_bare_model"] = _latency(lambda q: int(np.argmax(matrix @ model.query(q))), fresh)
        from intents.semantic import EmbeddingIndex

        index = EmbeddingIndex(cat, embedder)
        result["embeddings_query"] = _latency(index.top, [q + "?" + str(n) for n, q in enumerate(queries[:300])])
        result["embeddings_ratio_p99"] = _ratio(result["embeddings_query"],  # type: ignore[arg-type]
                                                result["embeddings_query_bare_model"])  # type: ignore[arg-type]

    # the whole offline cascade (fuzzy + calibrated), at the sample catalog's size and at this catalog's
    sample_path = Path(__file__).resolve().parent.parent / "scripts" / "faq.yaml"
    sample = FaqFile.model_validate(yaml.safe_load(sample_path.read_text(encoding="utf-8"))).catalog()
    small = Understanding(sample, Thresholds(), cache_dir=cache_dir)
    sample_queries = [e + suffix for i in sample.intents for e in i.examples for suffix in ("", "呀", "？请问")]
    result["cascade_sample_catalog"] = _latency(lambda q: small.scores(q), sample_queries)
    began = time.perf_counter()
    big = Understanding(cat, Thresholds(), cache_dir=cache_dir)
    result["cascade_build_s"] = round(time.perf_counter() - began, 2)
    result["cascade_catalog"] = _latency(lambda q: big.scores(q), list(dict.fromkeys(queries))[:300])
    result["cascade_ratio_p99_to_sample"] = _ratio(result["cascade_catalog"],  # type: ignore[arg-type]
                                                   result["cascade_sample_catalog"])  # type: ignore[arg-type]
    result["load_average_end"] = round(os.getloadavg()[0], 2)
    shutil.rmtree(cache_dir, ignore_errors=True)
    print(json.dumps(result, ensure_ascii=False))


if __name__ == "__main__":
    main()
