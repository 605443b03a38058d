"""Cost of a TouchPolicy decision with 100k contacts in storage. Prints JSON.

Measures (1) the pure decision, and (2) the decision as the scheduler makes it: loading the
customer's recent sends and competing touches from storage, then deciding. The pure decision is the
same-run baseline: `storage_to_pure` is the share of the pure rate left once storage is involved.
"""
from __future__ import annotations

import asyncio
import json
import os
import random
import tempfile
import time
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from sqlalchemy import insert

from bot.config import PolicySettings
from bot.policy import Rules, TouchPolicy, TouchRequest
from storage import repo
from storage.db import Database
from storage.models import Contact, Touch, TouchLog
from storage.touch_status import TouchStatus

CONTACTS = int(os.environ.get("BENCH_CONTACTS", "100000"))
SAMPLES = 2000
ZONE = ZoneInfo("Asia/Shanghai")
NOW = datetime(2026, 3, 20, 3, 0, tzinfo=timezone.utc)


async def _fill(db: Database) -> None:
    rng = random.Random(1)
    async with db.engine.begin() as conn:
        for start in range(0, CONTACTS, 5000):
            ids = range(start + 1, min(start + 5000, CONTACTS) + 1)
            await conn.execute(insert(Contact), [dict(
                id=i, channel="bench", external_id=f"c{i}", name=f"c{i}", tags=[], interests=[], profile={},
                opted_out=False, churned=False, replies=0, added_at=NOW - timedelta(days=40)) for i in ids])
            logs, touches = [], []
            for i in ids:
                for k in range(rng.randrange(0, 6)):  # up to 5 proactive sends in the last month
                    logs.append(dict(contact_id=i, journey_id="new_customer", step_id=f"s{k}", decision="sent",
                                     reason="ok", detail="", proactive=True,
                                     at=NOW - timedelta(hours=rng.randrange(1, 30 * 24))))
                touches.append(dict(contact_id=i, journey_id="new_customer", step_id="day30_interest",
                                    idempotency_key=f"bench:{i}", due_at=NOW, first_due_at=NOW, status=TouchStatus.PENDING,
                                    attempts=0, created_at=NOW))
            if logs:
                await conn.execute(insert(TouchLog), logs)
            await conn.execute(insert(Touch), touches)


def bench_pure(policy: TouchPolicy, rules: Rules) -> float:
    rng = random.Random(2)
    requests = [TouchRequest(now=NOW, zone=ZONE, rules=rules, priority=60,
                             sent=[NOW - timedelta(hours=rng.randrange(1, 700)) for _ in range(rng.randrange(6))])
                for _ in range(20000)]
    began = time.perf_counter()
    for request in requests:
        policy.decide(request)
    return len(requests) / (time.perf_counter() - began)


async def bench_with_storage(db: Database, policy: TouchPolicy, rules: Rules) -> tuple[float, float]:
    rng = random.Random(3)
    latencies = []
    began = time.perf_counter()
    async with db.session() as session:
        for _ in range(SAMPLES):
            contact_id = rng.randrange(1, CONTACTS + 1)
            t0 = time.perf_counter()
            sent = await repo.proactive_sends_since(session, contact_id, NOW - timedelta(days=32))
            rivals = await repo.competing_touches(session, contact_id, -1, NOW)
            policy.decide(TouchRequest(now=NOW, zone=ZONE, rules=rules, priority=60, sent=sent,
                                       competing_priority=60 if len(rivals) > 1 else None))
            latencies.append(time.perf_counter() - t0)
    elapsed = time.perf_counter() - began
    latencies.sort()
    return SAMPLES / elapsed, latencies[int(len(latencies) * 0.99)] * 1000


async def main() -> None:
    policy, rules = TouchPolicy(), Rules.from_settings(PolicySettings())
    pure = bench_pure(policy, rules)
    result: dict[str, object] = {"contacts": CONTACTS, "pure_decisions_per_s": round(pure)}
    urls = []
    with tempfile.TemporaryDirectory() as tmp:
        urls.append(("sqlite", f"sqlite+aiosqlite:///{tmp}/bench.db"))
        if os.environ.get("SIYU_BENCH_DATABASE_URL"):
            urls.append(("postgresql", os.environ["SIYU_BENCH_DATABASE_URL"]))
        for name, url in urls:
            db = Database(url)
            if name == "postgresql":
                from sqlalchemy import text
                async with db.engine.begin() as conn:
                    await conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
                    await conn.execute(text("CREATE SCHEMA public"))
            await db.upgrade()
            t0 = time.perf_counter()
            await _fill(db)
            fill = time.perf_counter() - t0
            rate, p99 = await bench_with_storage(db, policy, rules)
            result[name] = {"fill_s": round(fill, 1), "decisions_per_s_with_storage": round(rate),
                            "p99_ms": round(p99, 2), "storage_to_pure": round(rate / pure, 4)}
            await db.close()
    print(json.dumps(result))


if __name__ == "__main__":
    asyncio.run(main())
