"""Wall and CPU time of `siyu simulate --days 35 --customers 100 --seed 1` (the real engine on a virtual
clock), run twice: the transcripts must be identical. Prints JSON.

The same-run baseline is a fixed pure-Python workload timed in this process (`calibration_s`), so
`seconds_per_calibration` compares machines and busy moments; `BENCH_SIYU_ROOT`-style comparisons run
an older checkout with PYTHONPATH pointing at it (its own config.yaml and scripts are used).
"""
from __future__ import annotations

import hashlib
import json
import time
from datetime import datetime
from io import StringIO
from pathlib import Path

import bot
from bot.config_loader import load_config
from bot.simulate import Simulation, write_transcripts

ROOT = Path(bot.__file__).resolve().parent.parent  # the checkout being measured
TARGET_SECONDS = 5.0


def calibration() -> float:
    """Seconds for a fixed pure-Python workload: how fast this machine is right now."""
    began = time.perf_counter()
    total = 0
    for i in range(3_000_000):
        total += i % 7
    return time.perf_counter() - began


async def _once(start: datetime) -> tuple[float, float, str, int]:
    settings = load_config(ROOT / "config.yaml")
    wall, cpu = time.perf_counter(), time.process_time()
    customers = await Simulation(settings, ROOT / "scripts", 35, 100, 1, start).run()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    out = StringIO()
    write_transcripts(customers, start, out, as_json=True)
    text = out.getvalue()
    return wall, cpu, hashlib.sha256(text.encode()).hexdigest(), text.count("\n")


async def main() -> None:
    start = datetime.fromisoformat("2026-03-02T00:00:00+08:00")
    base = calibration()
    runs = [await _once(start) for _ in range(2)]
    walls = [r[0] for r in runs]
    print(json.dumps({
        "benchmark": "simulate --days 35 --customers 100 --seed 1", "root": str(ROOT),
        "wall_s": [round(w, 2) for w in walls], "cpu_s": [round(r[1], 2) for r in runs],
        "transcript_lines": runs[0][3], "transcript_sha256": runs[0][2][:16],
        "same_transcript_both_runs": runs[0][2] == runs[1][2],
        "target_s": TARGET_SECONDS, "calibration_s": round(base, 3),
        "seconds_per_calibration": round(min(walls) / base, 2),
    }, ensure_ascii=False))


if __name__ == "__main__":
    import asyncio

    asyncio.run(main())
