"""The command line as an operator uses it: chat, trigger, why, db upgrade, simulate."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT
from tests.harness import CONFIG, SCRIPTS

FIXTURES = ("--config", str(CONFIG), "--scripts", str(SCRIPTS))  # test scripts, not the shipped copy


def siyu(*args: str, db: Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SIYU_DATABASE_URL": f"sqlite+aiosqlite:///{db}"}
    return subprocess.run([sys.executable, "-m", "bot.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, input=stdin, env=env)


def test_console_chat_as_customer_then_guide(tmp_path: Path) -> None:
    result = siyu("chat", *FIXTURES, db=tmp_path / "c.db", stdin="包邮吗\n/as guide\n/why console-customer\n/quit\n")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "siyu → 顾客: 问候：访客您好，我是测试品牌的小美" in out
    assert "siyu → 顾客: 答·运费：测试订单满 99 元包邮" in out
    assert "（现在是导购）" in out
    assert "siyu → 导购: 访客（#1）最近的触达决策（Asia/Shanghai 时间）：" in out


def test_trigger_and_why_from_the_command_line(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    assert siyu("db", "upgrade", db=db).returncode == 0
    siyu("chat", db=db, stdin="/quit\n")  # a customer exists now
    result = siyu("trigger", "new_customer.day1_care", "--customer", "console-customer", "--by", "xiaomei", db=db)
    assert result.returncode == 0, result.stderr
    assert "已安排 new_customer.day1_care 发给 访客" in result.stdout
    why = siyu("why", "console-customer", db=db)
    assert "new_customer.greeting  已发送" in why.stdout
    missing = siyu("trigger", "new_customer.day1_care", "--customer", "nobody", db=db)
    assert missing.returncode == 1 and "no customer 'nobody'" in missing.stderr


def test_simulate_json_is_complete_and_deterministic(tmp_path: Path) -> None:
    args = ("simulate", "--days", "35", "--customers", "8", "--seed", "7", "--json")
    first = siyu(*args, db=tmp_path / "unused.db")
    second = siyu(*args, db=tmp_path / "unused.db")
    assert first.returncode == 0, first.stderr
    assert first.stdout == second.stdout
    rows = [json.loads(line) for line in first.stdout.splitlines()]
    assert all(set(r) >= {"t", "customer", "kind", "journey", "step", "variant", "text", "reason"} for r in rows)
    assert {r["kind"] for r in rows} == {"enrolled", "exited", "sent", "deferred", "dropped", "received",
                                         "purchased", "points", "level_up", "transferred"}
    assert all("+08:00" in r["t"] for r in rows)
    opted = [r for r in rows if r["kind"] == "exited" and r["reason"] == "opted_out"]
    assert opted, "the opt-out customer's journeys end"
    gone = {r["customer"] for r in opted}
    last_exit = max(r["t"] for r in opted)
    assert not [r for r in rows if r["customer"] in gone and r["kind"] == "sent" and r["t"] > last_exit]
    assert any(r["step"] == "birthday" and r["kind"] == "sent" for r in rows)
    assert any(r["variant"] in ("A", "B") for r in rows)


def test_simulate_text_shows_transcripts(tmp_path: Path) -> None:
    result = siyu("simulate", "--days", "35", "--customers", "5", "--seed", "1", db=tmp_path / "unused.db")
    assert result.returncode == 0, result.stderr
    assert "(engaged)" in result.stdout and "(silent)" in result.stdout
    assert "new_customer.day30_interest" in result.stdout


def test_simulated_customers_never_exceed_the_caps(tmp_path: Path) -> None:
    from datetime import datetime, timedelta

    result = siyu("simulate", *FIXTURES, "--days", "35", "--customers", "20", "--seed", "3", "--json",
                  db=tmp_path / "u.db")
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    proactive: dict[int, list[datetime]] = {}
    for r in rows:
        if r["kind"] == "sent" and r["journey"] and r["reason"] != "reply":
            proactive.setdefault(r["customer"], []).append((datetime.fromisoformat(r["t"]), r["journey"]))
    assert proactive
    for sends in proactive.values():
        times = [t for t, _ in sends]
        days = [t.date() for t in times]
        assert len(days) == len(set(days)), "at most one proactive touch a day"
        for (a, _), (b, journey) in zip(sends, sends[1:]):  # tests/data/config.yaml: occasions after 4 h
            assert b - a >= timedelta(hours=4 if journey == "occasions" else 20)
        assert all(sum(1 for u in times if t - timedelta(days=7) < u <= t) <= 4 for t in times)
    reasons = {r["reason"].split(" ")[0] for r in rows if r["kind"] in ("deferred", "dropped") and r["reason"]}
    assert {"min_gap", "condition_false"} <= reasons


def test_version_is_printed(tmp_path: Path) -> None:
    from importlib.metadata import version

    result = siyu("--version", db=tmp_path / "unused.db")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"siyu {version('siyu')}"


HEAVY = ("telegram", "openai", "sklearn", "aiohttp", "adapters")


def _modules_loaded_by(argv: list[str], tmp_path: Path) -> list[str]:
    """Run `bot.cli.main(argv)` in a fresh interpreter; the heavy top-level packages it imported."""
    code = ("import sys, bot.cli\n"
            "try:\n"
            f"    bot.cli.main({argv!r})\n"
            "except SystemExit:\n"
            "    pass\n"
            f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))\n")
    env = {**os.environ, "SIYU_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'unused.db'}"}
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                            env=env)
    assert result.returncode == 0, result.stderr
    return [m for m in result.stdout.splitlines()[-1].split(",") if m]


def test_help_imports_no_platform_or_model_libraries(tmp_path: Path) -> None:
    assert _modules_loaded_by(["--help"], tmp_path) == []
    assert _modules_loaded_by(["check", "--help"], tmp_path) == []


def test_check_imports_no_platform_or_model_libraries(tmp_path: Path) -> None:
    # adapters' settings models may be needed to validate `adapters:`; their client libraries never are
    assert set(_modules_loaded_by(["check"], tmp_path)) <= {"adapters"}


def test_file_options_mean_the_same_before_or_after_the_command() -> None:
    from bot.cli import parse_args

    for argv in (["--config", "p.yaml", "--scripts", "s", "serve"], ["serve", "--config", "p.yaml", "--scripts", "s"],
                 ["--config", "p.yaml", "serve", "--scripts", "s"]):
        args = parse_args(argv)
        assert (args.config, args.scripts) == ("p.yaml", "s"), argv
    defaults = parse_args(["why", "42"])
    assert (defaults.config, defaults.scripts) == ("config.yaml", "scripts")
