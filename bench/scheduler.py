"""The scheduler at scale, on PostgreSQL: N enrolled customers each with a touch due, 3 worker processes.

`python -m bench scheduler [--customers 100000,1000000] [--workers 3]` fills a scratch PostgreSQL
database (SIYU_BENCH_DATABASE_URL; its public schema is dropped) with bulk inserts, then starts the
worker processes at once: each claims due touches (`FOR UPDATE SKIP LOCKED`), lets the policy decide,
renders and queues the message, exactly as `siyu serve` does. Prints JSON: enrol rate, claims per
second altogether, and each worker's peak resident memory (flat memory: the same at 100k and 1M).
The same-run baseline is one worker alone on the first size.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from sqlalchemy import func, insert, select, text

ROOT = Path(__file__).resolve().parent.parent
DUE = datetime(2026, 3, 20, 2, 0, tzinfo=timezone.utc)  # 10:00 in Shanghai: outside quiet hours
JOURNEY, STEP = "new_customer", "day3_followup"
CHUNK = 5000


async def fill(url: str, customers: int) -> float:
    """Reset the database and enrol `customers` customers with one touch due each; returns seconds."""
    from storage.db import Database
    from storage.models import Contact, Touch
    from storage.touch_status import TouchStatus

    db = Database(url)
    async with db.engine.begin() as conn:
        await conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
        await conn.execute(text("CREATE SCHEMA public"))
    await db.upgrade()
    began = time.perf_counter()
    added = DUE - timedelta(days=3)
    async with db.engine.begin() as conn:
        for start in range(1, customers + 1, CHUNK):
            ids = range(start, min(start + CHUNK, customers + 1))
            await conn.execute(insert(Contact), [dict(
                id=i, channel="bench", external_id=f"c{i}", name=f"顾客{i}", guide_key="xiaomei", tags=[],
                interests=[], profile={}, opted_out=False, churned=False, replies=0, added_at=added) for i in ids])
            await conn.execute(insert(Touch), [dict(
                contact_id=i, journey_id=JOURNEY, step_id=STEP, idempotency_key=f"bench:{i}", due_at=DUE,
                first_due_at=DUE, status=TouchStatus.PENDING, attempts=0, created_at=added) for i in ids])
        await conn.execute(text("SELECT setval(pg_get_serial_sequence('contacts', 'id'), :n)"), {"n": customers})
    seconds = time.perf_counter() - began
    await db.close()
    return seconds


async def work(url: str, name: str) -> None:
    """One worker process: run the scheduler until nothing is due, then report its RSS."""
    from bot.app import App
    from bot.clock import VirtualClock
    from bot.config_loader import load_config

    settings = load_config(ROOT / "config.yaml", env={})
    settings = settings.model_copy(update={"database_url": url})
    app = App(settings, ROOT / "scripts", VirtualClock(DUE + timedelta(minutes=1)), worker_id=name)
    await asyncio.to_thread(app.library.reload)
    print("ready", flush=True)
    sys.stdin.readline()  # everyone starts together
    decided = 0
    while True:
        outcomes = await app.scheduler.run_due()
        decided += len(outcomes)
        if not outcomes:
            break
    await app.close()
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"worker": name, "decided": decided, "peak_rss_mb": round(rss_mb, 1)}), flush=True)


async def pending(url: str) -> int:
    from storage.db import Database
    from storage.models import Touch

    db = Database(url)
    async with db.session() as session:
        left = int(await session.scalar(select(func.count()).select_from(Touch).where(Touch.status == "pending")) or 0)
    await db.close()
    return left


async def run_workers(url: str, workers: int) -> dict[str, object]:
    procs = [subprocess.Popen([sys.executable, "-m", "bench.scheduler", "--work", f"bench-{n}"], cwd=ROOT,
                              env={**os.environ, "PYTHONPATH": str(ROOT)}, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True) for n in range(workers)]
    for proc in procs:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    began = time.perf_counter()
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    reports = [json.loads(proc.communicate()[0].strip().splitlines()[-1]) for proc in procs]
    seconds = time.perf_counter() - began
    decided = sum(int(r["decided"]) for r in reports)
    return {"workers": workers, "decided": decided, "seconds": round(seconds, 2),
            "claims_per_s": round(decided / seconds, 1), "left_pending": await pending(url),
            "peak_rss_mb": [r["peak_rss_mb"] for r in reports]}


async def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench scheduler")
    parser.add_argument("--customers", default="100000", help="comma-separated sizes (e.g. 100000,1000000)")
    parser.add_argument("--workers", type=int, default=3)
    args, _ = parser.parse_known_args()
    url = os.environ.get("SIYU_BENCH_DATABASE_URL")
    if not url:
        print(json.dumps({"skipped": "set SIYU_BENCH_DATABASE_URL to a scratch PostgreSQL database"}))
        return
    result: dict[str, object] = {"cpus": os.cpu_count(), "sizes": {}}
    sizes = [int(size) for size in args.customers.split(",")]
    for n, size in enumerate(sizes):
        entry: dict[str, object] = {}
        if n == 0:  # the same-run baseline: one worker alone
            await fill(url, size)
            entry["one_worker"] = await run_workers(url, 1)
        fill_seconds = await fill(url, size)
        entry["enrol_seconds"] = round(fill_seconds, 2)
        entry["enrolled_per_s"] = round(size / fill_seconds, 1)
        entry["all_workers"] = await run_workers(url, args.workers)
        one = entry.get("one_worker")
        if isinstance(one, dict):
            entry["ratio_all_to_one"] = round(float(entry["all_workers"]["claims_per_s"])  # type: ignore[index]
                                              / float(one["claims_per_s"]), 2)
        result["sizes"][str(size)] = entry  # type: ignore[index]
    print(json.dumps(result, ensure_ascii=False, indent=2))


if __name__ == "__main__":
    if "--work" in sys.argv:
        asyncio.run(work(os.environ["SIYU_BENCH_DATABASE_URL"], sys.argv[sys.argv.index("--work") + 1]))
    else:
        asyncio.run(main())
