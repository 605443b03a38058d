"""Run benchmarks: `python -m bench` (all) or `python -m bench e2e scheduler policy simulate fuzzy kill9 faq guard`.

Each prints JSON with a baseline measured in the same run, so figures compare across machines.
"""
from __future__ import annotations

import asyncio
import importlib
import sys

ALL = ("fuzzy", "policy", "simulate", "kill9", "e2e", "scheduler", "faq", "guard")


def main() -> None:
    names = [arg for arg in sys.argv[1:] if arg in ALL] or list(ALL)  # the rest are options of a benchmark
    for name in names:
        module = importlib.import_module(f"bench.{name}")
        result = module.main()
        if asyncio.iscoroutine(result):
            asyncio.run(result)


if __name__ == "__main__":
    main()
