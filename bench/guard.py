"""The guard's learned tier, cross-validated on the training split only, one JSON object.

    python -m bench guard [--folds 5] [--repeats 2]

The real group chat's training split (`bot/guard_data/qq_group_train.jsonl`) is cut into stratified folds;
each fold is scored by a model trained, exactly as `siyu guard train` trains, on the other folds plus the
brand examples, and judged with the shipped `scripts/guard.yaml` content rules. The held-out split is never
read here (`siyu guard eval bot/guard_data/qq_group_heldout.jsonl --json` measures that).

Printed per `act` threshold: recall on ads, the share of ordinary messages flagged, and the precision that
false-positive rate gives where one message in three is an ad (`precision_at_1_in_3`).
Same-run baseline: the content rules alone, without the classifier (`rules_only`).
"""
from __future__ import annotations

import argparse
import json
import random
from collections.abc import Sequence
from pathlib import Path

from bot.config_loader import load_config
from bot.guard import GuardRules
from bot.guard_model import DATA, Sample, read_samples, train
from bot.library import ScriptLibrary

ROOT = Path(__file__).resolve().parents[1]
THRESHOLDS = (0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7)


def _folds(samples: Sequence[Sample], k: int, seed: int) -> list[list[Sample]]:
    rnd = random.Random(seed)
    spam = [s for s in samples if s.spam]
    normal = [s for s in samples if not s.spam]
    rnd.shuffle(spam)
    rnd.shuffle(normal)
    return [spam[i::k] + normal[i::k] for i in range(k)]


def _summary(judged: list[tuple[bool, bool]]) -> dict[str, float]:
    ads = sum(1 for spam, _ in judged if spam)
    normal = len(judged) - ads
    caught = sum(1 for spam, flagged in judged if spam and flagged)
    wrong = sum(1 for spam, flagged in judged if not spam and flagged)
    recall, fp_rate = caught / ads, wrong / normal
    mixed = recall / (recall + 2 * fp_rate) if recall else 0.0
    return {"recall": round(recall, 3), "normal_flagged": round(fp_rate, 4),
            "precision_at_1_in_3": round(mixed, 3)}


def _guard_rules() -> GuardRules:
    settings = load_config(ROOT / "config.yaml", env={})
    library = ScriptLibrary(ROOT / "scripts", settings.brand)
    library.reload()
    return library.guard


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench guard")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=2)
    args, _ = parser.parse_known_args()
    rules = _guard_rules()
    corpus = read_samples(DATA / "qq_group_train.jsonl")
    brand = read_samples(DATA / "brand_examples.jsonl")
    scored: list[tuple[bool, bool, float]] = []  # (is an ad, a content rule fires, classifier score)
    for repeat in range(args.repeats):
        for test in _folds(corpus, args.folds, repeat):
            held_out = set(test)
            model = train([s for s in corpus if s not in held_out] + brand)
            for sample in test:
                ruled = any(f.rule != "link" for f in rules.content_findings(sample.text))
                scored.append((sample.spam, ruled, model.score(sample.text)))
    result = {"benchmark": "guard", "folds": args.folds, "repeats": args.repeats, "messages": len(scored),
              "configured_act": rules.classifier.act,
              "rules_only": _summary([(spam, ruled) for spam, ruled, _ in scored]),
              "by_act": {str(act): _summary([(spam, ruled or score >= act) for spam, ruled, score in scored])
                         for act in THRESHOLDS}}
    print(json.dumps(result, ensure_ascii=False))


if __name__ == "__main__":
    main()
