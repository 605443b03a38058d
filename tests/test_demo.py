"""`make demo` seeds a demo brand's history into its own SQLite file through the real engine: the
dashboard's every section has something to show (A/B touches, replies, answers, hand-offs, guide
replies, guard actions), and nothing is left half-written."""
from __future__ import annotations

import sqlite3
from datetime import datetime
from pathlib import Path

from bot.demo import seed
from tests.harness import CONFIG, SCRIPTS

END = datetime.fromisoformat("2026-03-20T21:00:00+08:00")


async def test_the_demo_history_is_made_by_the_engine_and_lands_in_its_own_file(tmp_path: Path) -> None:
    target = tmp_path / "demo.db"
    await seed(target, SCRIPTS, CONFIG, END, days=14, customers=30, progress=False)

    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo.db"]  # no partial file or log left behind
    with sqlite3.connect(target) as db:
        def one(sql: str) -> int:
            return int(db.execute(sql).fetchone()[0])

        assert one("SELECT count(*) FROM contacts WHERE channel = 'webchat' AND external_id LIKE 'c_demo%'") == 30
        variants = {row[0] for row in db.execute(
            "SELECT variant FROM touches WHERE step_id = 'day3_followup' AND status = 'sent'")}
        assert variants == {"A", "B"}
        assert one("SELECT count(*) FROM messages WHERE direction = 'in' AND chat_type = 'direct'") > 10
        assert one("SELECT count(*) FROM messages WHERE direction = 'out' AND intent IS NOT NULL") > 0
        assert one("SELECT count(*) FROM messages WHERE handoff") > 0
        assert one("SELECT count(*) FROM messages WHERE sender_role = 'staff'") > 0  # the guide answered
        assert one("SELECT count(*) FROM guard_events") > 0
        assert one("SELECT count(*) FROM contacts WHERE handoff_at IS NOT NULL") > 0  # still waiting at the end
        last = db.execute("SELECT max(created_at) FROM messages").fetchone()[0]
        assert last is not None and last <= "2026-03-20 13:00:00.000000"  # 21:00 in Shanghai: nothing later
