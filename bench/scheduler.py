"""The scheduler at scale, on PostgreSQL: N enrolled customers each with a touch due, 3 worker processes.

`python -m bench scheduler [--customers 100000,1000000] [--workers 3]` fills a scratch PostgreSQL
database (SIYU_BENCH_DATABASE_URL; its public schema is dropped) with set-based inserts (customers, their
enrolments, a touch due now and a later one each), then starts the worker processes at once: each claims
due touches (`FOR UPDATE SKIP LOCKED`), lets the policy decide, renders and queues the message through
the real `Scheduler.run_batch`, as `siyu serve` does. Prints JSON: enrol rate, claims per second
altogether, what the database holds afterwards, and each worker's resident memory at start, at end and
at its peak (flat memory: the same at 100k and 1M). The same-run baseline is one worker alone on the
first size.
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import resource
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from sqlalchemy import func, select, text

ROOT = Path(__file__).resolve().parent.parent
DUE = datetime(2026, 3, 20, 2, 0, tzinfo=timezone.utc)  # 10:00 in Shanghai: outside quiet hours
JOURNEY, STEP, NEXT_STEP = "new_customer", "day3_followup", "day7_followup"


async def fill(url: str, customers: int) -> float:
    """Reset the database and enrol `customers` customers in the new-customer journey, as the enrolment code
    leaves them three days on: an active enrolment, its day-3 touch due now and its day-7 touch still
    waiting. Set-based INSERT … SELECT generate_series, so a million customers take seconds, not minutes.
    Returns seconds."""
    from storage.db import Database

    db = Database(url)
    async with db.engine.begin() as conn:
        await conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
        await conn.execute(text("CREATE SCHEMA public"))
    await db.upgrade()
    began = time.perf_counter()
    added = DUE - timedelta(days=3)
    values = {"n": customers, "added": added, "due": DUE, "later": added + timedelta(days=7), "journey": JOURNEY}
    async with db.engine.begin() as conn:
        await conn.execute(text(
            "INSERT INTO contacts (id, channel, external_id, name, guide_key, tags, interests, opted_out, churned,"
            " replies, added_at) SELECT i, 'bench', 'c' || i, '顾客' || i, 'xiaomei', '[]', '[]', false, false, 0,"
            " :added FROM generate_series(1, :n) AS i"), values)
        await conn.execute(text(
            "INSERT INTO enrolments (id, contact_id, journey_id, generation, status, enrolled_at, variants)"
            " SELECT i, i, :journey, 1, 'active', :added, '{}' FROM generate_series(1, :n) AS i"), values)
        for step, due in ((STEP, "due"), (NEXT_STEP, "later")):  # the keys `JourneyRunner.schedule_step` writes
            await conn.execute(text(
                "INSERT INTO touches (contact_id, enrolment_id, journey_id, step_id, idempotency_key, due_at,"
                f" first_due_at, status, attempts, created_at) SELECT i, i, '{JOURNEY}', '{step}',"
                f" '{JOURNEY}\\:{step}\\:' || i || '\\:g1', :{due}, :{due}, 'pending', 0, :added"
                " FROM generate_series(1, :n) AS i"), values)
        for table in ("contacts", "enrolments"):
            await conn.execute(text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), :n)"), values)
    async with db.engine.connect() as conn:
        await conn.execute(text("COMMIT"))
        await conn.execute(text("VACUUM ANALYZE"))  # as autovacuum would soon after a bulk load
    seconds = time.perf_counter() - began
    await db.close()
    return seconds


def rss_mb() -> float:
    """Resident memory now (not the peak)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


async def work(url: str, name: str) -> None:
    """One worker process: run the scheduler batch after batch until nothing is due, then report its RSS."""
    from bot.app import App
    from bot.clock import VirtualClock
    from bot.config_loader import load_config

    settings = load_config(ROOT / "config.yaml", env={})
    settings = settings.model_copy(update={"database_url": url})
    app = App(settings, ROOT / "scripts", VirtualClock(DUE + timedelta(minutes=1)), worker_id=name)
    await asyncio.to_thread(app.library.reload)
    gc.freeze()  # as `siyu serve` does once started
    print("ready", flush=True)
    sys.stdin.readline()  # everyone starts together
    decided = 0
    started_mb, cpu_before = rss_mb(), time.process_time()
    while True:  # as `siyu serve` works through a backlog: one batch in memory at a time
        claimed, outcomes = await app.scheduler.run_batch()
        decided += len(outcomes)
        if not claimed:
            break
    cpu_s = time.process_time() - cpu_before
    await app.close()
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"worker": name, "decided": decided, "cpu_s": round(cpu_s, 1), "peak_rss_mb": round(peak_mb, 1),
                      "rss_at_start_mb": round(started_mb, 1), "rss_at_end_mb": round(rss_mb(), 1)}), flush=True)


async def pending(url: str) -> dict[str, int]:
    """What the workers left behind: touches by status, and the messages queued (one per touch sent)."""
    from storage.db import Database
    from storage.models import Message, Touch

    db = Database(url)
    async with db.session() as session:
        counts = {f"touches_{status}": int(n) for status, n in
                  (await session.execute(select(Touch.status, func.count()).group_by(Touch.status))).all()}
        counts["messages_say"] = int(await session.scalar(
            select(func.count()).select_from(Message).where(Message.action == "say")) or 0)
    await db.close()
    return counts


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
    cpu_s = sum(float(r["cpu_s"]) for r in reports)  # the workers' own CPU time (PostgreSQL's is not in it)
    return {"workers": workers, "decided": decided, "seconds": round(seconds, 2),
            "claims_per_s": round(decided / seconds, 1),
            "worker_cpu_ms_per_claim": round(1000 * cpu_s / decided, 3) if decided else None,
            "after": await pending(url),
            "peak_rss_mb": [r["peak_rss_mb"] for r in reports],
            "rss_at_start_mb": [r["rss_at_start_mb"] for r in reports],
            "rss_at_end_mb": [r["rss_at_end_mb"] for r in reports]}


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
