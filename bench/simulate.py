"""Wall time of `siyu simulate --days 35 --customers 100 --seed 1` (the real engine on a virtual clock)."""
from __future__ import annotations

import time
from datetime import datetime
from io import StringIO
from pathlib import Path

from bot.config_loader import load_config
from bot.simulate import Simulation, write_transcripts

ROOT = Path(__file__).resolve().parent.parent


async def main() -> None:
    settings = load_config(ROOT / "config.yaml")
    start = datetime.fromisoformat("2026-03-02T00:00:00+08:00")
    began = time.perf_counter()
    customers = await Simulation(settings, ROOT / "scripts", 35, 100, 1, start).run()
    out = StringIO()
    write_transcripts(customers, start, out, as_json=True)
    lines = out.getvalue().count("\n")
    print(f"simulate: 100 customers × 35 days: {time.perf_counter() - began:.2f}s wall, {lines} transcript lines")
