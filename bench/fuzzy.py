"""Match latency with a 2,000-intent catalog (5 examples each): the fuzzy tier, and the semantic tiers."""
from __future__ import annotations

import random
import time

from intents.catalog import Catalog, FaqIntent
from intents.fuzzy import FuzzyMatcher
from intents.semantic import EmbeddingIndex, TfidfIndex, embeddings_available

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


def _latency(name: str, top, queries: list[str]) -> None:  # type: ignore[no-untyped-def]
    for q in queries[:20]:
        top(q)  # warm caches
    samples = []
    for q in queries:
        began = time.perf_counter()
        top(q)
        samples.append((time.perf_counter() - began) * 1000)
    samples.sort()
    p50, p99 = samples[len(samples) // 2], samples[int(len(samples) * 0.99)]
    print(f"fuzzy bench: {name:<11} 2,000 intents × 5 examples: p50 {p50:.3f} ms, p99 {p99:.3f} ms "
          f"({len(queries)} queries)")


def main() -> None:
    cat = catalog()
    rng = random.Random(2)
    examples = [e for i in cat.intents for e in i.examples]
    queries = [rng.choice(examples)[:-1] + rng.choice(ENDINGS) for _ in range(2000)]
    _latency("fuzzy", FuzzyMatcher(cat).top, queries)
    _latency("tfidf", TfidfIndex(cat).top, queries[:500])
    if embeddings_available():
        began = time.perf_counter()
        index = EmbeddingIndex(cat)
        print(f"fuzzy bench: embedding the 10,000 examples took {time.perf_counter() - began:.1f}s")
        _latency("embeddings", index.top, queries[:300])


if __name__ == "__main__":
    main()
