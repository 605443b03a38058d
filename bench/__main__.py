"""Run benchmarks: `python -m bench` (all) or `python -m bench policy simulate fuzzy kill9`."""
from __future__ import annotations

import asyncio
import importlib
import sys

ALL = ("fuzzy", "policy", "simulate", "kill9")


def main() -> None:
    names = sys.argv[1:] or list(ALL)
    for name in names:
        module = importlib.import_module(f"bench.{name}")
        result = module.main()
        if asyncio.iscoroutine(result):
            asyncio.run(result)


if __name__ == "__main__":
    main()
