"""FAQ understanding quality, measured honestly, one JSON object: each shared dev file is split by intent into a
tune half and a report half; thresholds are chosen on the tune half exactly as `siyu eval --tune-on` chooses
them (`bot/faq_eval.py`) and measured on the report half, which nothing was tuned on.

    python -m bench faq                          # smp2017 and clinc150 from ../shared/eval
    BENCH_EVAL_DIR=/data/eval BENCH_FAQ_SEED=7 python -m bench faq

Same-run baseline: the configured default thresholds on the same report half (`default`). Also printed: the
tuner's cross-validated estimate for unseen queries (`cv_estimate`), to compare with what the report half shows.
Uses config.yaml's `faq:` section (BENCH_CONFIG to change), offline tiers only: never the LLM tier.
"""
from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

from bot.config import Settings
from bot.config_loader import load_config
from bot.faq_eval import evaluate_holdout
from intents.semantic import embeddings_available

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ("smp2017", "clinc150")
SEED = 13  # the split of the first held-out figures in issue 13


async def run() -> dict[str, object]:
    eval_dir = Path(os.environ.get("BENCH_EVAL_DIR", str(ROOT.parent / "shared" / "eval")))
    seed = int(os.environ.get("BENCH_FAQ_SEED", str(SEED)))
    config = Path(os.environ.get("BENCH_CONFIG", str(ROOT / "config.yaml")))
    settings = Settings(faq=load_config(config).faq)  # the LLM tier stays off: this measures the offline cascade
    result: dict[str, object] = {"seed": seed, "eval_dir": str(eval_dir), "embeddings": embeddings_available(),
                                 "load_average": round(os.getloadavg()[0], 2)}
    for name in DATASETS:
        catalog, dev = eval_dir / f"{name}_catalog.jsonl", eval_dir / f"{name}_dev.jsonl"
        missing = [str(p) for p in (catalog, dev) if not p.is_file()]
        if missing:
            reason = f"skipped: {', '.join(missing)} not found — set BENCH_EVAL_DIR to the folder with the dev files"
            print(f"bench faq: {name} {reason}", file=sys.stderr)
            result[name] = {"skipped": reason}
            continue
        holdout = await evaluate_holdout(settings, catalog, dev, seed)
        result[name] = holdout.as_dict()
    return result


def main() -> None:
    print(json.dumps(asyncio.run(run()), ensure_ascii=False))


if __name__ == "__main__":
    main()
