"""The `siyu` command line."""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo
from pathlib import Path

from bot.app import App, chat_in_console, serve
from bot.commands import StaffActor, format_decisions
from bot.config import Settings, load_settings
from bot.engine import build_understanding
from bot.guard import LabelledMessage, evaluate_guard
from intents.catalog import catalog_from_jsonl
from intents.jsonl import read_jsonl
from intents.evaluate import evaluate, load_queries, score_all, tune
from intents.insights import cluster_gaps, question_mix
from bot.problems import Problem, ScriptError
from bot.library import ScriptLibrary
from bot.simulate import Simulation, write_transcripts
from storage import repo
from storage.db import Database


def _settings(args: argparse.Namespace) -> Settings:
    try:
        return load_settings(Path(args.config))
    except ScriptError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        raise SystemExit(1) from None


def cmd_check(args: argparse.Namespace) -> int:
    problems: list[Problem] = []
    try:
        settings = load_settings(Path(args.config))
    except ScriptError as exc:
        problems += exc.problems
        settings = Settings()
    problems += ScriptLibrary(Path(args.scripts), settings.brand).reload(force=True)
    for problem in problems:
        print(problem)
    if problems:
        print(f"{len(problems)} problem(s) found", file=sys.stderr)
        return 1
    print("all good: config and scripts are valid")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    settings = _settings(args)
    host = args.host or settings.server.host
    port = args.port or settings.server.port
    app = App(settings, Path(args.scripts))

    async def main() -> None:
        await app.start()
        try:
            await serve(app, host, port)
        finally:
            await app.close()

    print(f"siyu: open http://{host}:{port}/ (Ctrl-C to stop)", flush=True)
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    app = App(_settings(args), Path(args.scripts))

    async def main() -> None:
        await app.start()
        try:
            await chat_in_console(app)
        finally:
            await app.close()

    asyncio.run(main())
    return 0


def cmd_db(args: argparse.Namespace) -> int:
    settings = _settings(args)

    async def main() -> None:
        db = Database(settings.database_url)
        try:
            await db.upgrade()
        finally:
            await db.close()

    asyncio.run(main())
    print(f"database is up to date ({settings.database_url.split('@')[-1]})")
    return 0


def _with_app(args: argparse.Namespace, work) -> int:  # type: ignore[no-untyped-def]
    app = App(_settings(args), Path(args.scripts))

    async def main() -> int:
        await app.start()
        try:
            return await work(app)
        finally:
            await app.close()

    return asyncio.run(main())


def cmd_trigger(args: argparse.Namespace) -> int:
    async def work(app: App) -> int:
        async with app.db.session() as session, session.begin():
            contact = await repo.find_contact(session, args.customer)
            if contact is None:
                print(f"no customer {args.customer!r} — use the customer's id, platform id or name", file=sys.stderr)
                return 1
            answer = await app.engine.commands.sop(session, StaffActor(args.by, contact.channel),
                                                   [args.target, str(contact.id)], app.clock.now())
        print(answer)
        return 0

    return _with_app(args, work)


def cmd_why(args: argparse.Namespace) -> int:
    async def work(app: App) -> int:
        async with app.db.session() as session:
            contact = await repo.find_contact(session, args.customer)
            if contact is None:
                print(f"no customer {args.customer!r}", file=sys.stderr)
                return 1
            print(format_decisions(contact, await repo.recent_decisions(session, contact.id, args.limit)))
        return 0

    return _with_app(args, work)


def cmd_simulate(args: argparse.Namespace) -> int:
    settings = _settings(args)
    start = datetime.fromisoformat(args.start)
    if start.tzinfo is None:
        print("--start needs a UTC offset, e.g. 2026-03-02T00:00:00+08:00", file=sys.stderr)
        return 2
    began = time.perf_counter()
    simulation = Simulation(settings, Path(args.scripts), args.days, args.customers, args.seed, start)
    customers = asyncio.run(simulation.run())
    write_transcripts(customers, start, sys.stdout, args.json)
    if not args.json:
        print(f"\nsimulated {args.customers} customers over {args.days} days in "
              f"{time.perf_counter() - began:.2f}s", file=sys.stderr)
    return 0


def cmd_guard(args: argparse.Namespace) -> int:
    if args.action == "log":
        async def work(app: App) -> int:
            async with app.db.session() as session:
                events = await repo.guard_events(session, args.limit)
            if not events:
                print("no guard actions yet")
            for e in events:
                print(f"{e.at:%Y-%m-%d %H:%M}Z  {e.channel}:{e.group_id}  {e.member_id}  strike {e.strike} → "
                      f"{e.action}  [{e.rule}] {e.reason}  «{e.excerpt[:40]}»")
            return 0

        return _with_app(args, work)
    if not args.file:
        print("usage: siyu guard eval FILE.jsonl [--json]", file=sys.stderr)
        return 2
    settings = _settings(args)
    library = ScriptLibrary(Path(args.scripts), settings.brand)
    problems = library.reload()
    if problems:
        for problem in problems:
            print(problem, file=sys.stderr)
        return 1
    try:
        messages = load_labelled(Path(args.file))
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 1
    report = evaluate_guard(library.guard, messages)
    if args.json:
        print(json.dumps({"precision": round(report.precision, 4), "recall": round(report.recall, 4),
                          "flagged": report.flagged, "total": report.total}))
        return 0
    print(f"precision {report.precision:.3f}  recall {report.recall:.3f}  flagged {report.flagged}/{report.total}")
    print(f"false positives ({len(report.false_positives)}):")
    for text, why in report.false_positives:
        print(f"  ✗ {text}  ← {why}")
    print(f"missed spam ({len(report.missed)}):")
    for text in report.missed:
        print(f"  · {text}")
    return 0


def load_labelled(path: Path) -> list[LabelledMessage]:
    """`{"text", "spam", optional "member", "group", "t", "type"}` per line."""
    def build(row: dict[str, object]) -> LabelledMessage:
        when = datetime.fromisoformat(str(row["t"])) if row.get("t") else None
        if when is not None and when.tzinfo is None:
            raise ValueError("t needs a UTC offset")
        return LabelledMessage(str(row["text"]), bool(row["spam"]), row.get("member"), row.get("group"),  # type: ignore[arg-type]
                               when, str(row.get("type", "text")))

    return read_jsonl(path, build, '{"text": ..., "spam": true|false}')


def cmd_eval(args: argparse.Namespace) -> int:
    settings = _settings(args)
    try:
        catalog = catalog_from_jsonl(Path(args.catalog))
        queries = load_queries(Path(args.queries))
        dev = load_queries(Path(args.tune_on)) if args.tune_on else None
    except (OSError, ValueError) as exc:
        print(exc, file=sys.stderr)
        return 1
    understanding = build_understanding(catalog, settings)
    thresholds = understanding.thresholds
    out = sys.stderr if args.json else sys.stdout
    if dev is not None:
        thresholds = tune(score_all(understanding, dev), thresholds)
        print("# thresholds chosen on " f"{args.tune_on} (max correct with wrong ≤ 0.05); paste into config.yaml:",
              file=out)
        semantic = understanding.semantic.name if understanding.semantic else "none"
        print(f"faq:\n  semantic: {semantic}\n  fuzzy_answer: {thresholds.fuzzy_answer:.4g}\n"
              f"  semantic_answer: {thresholds.semantic_answer:.4g}", file=out)
    result = asyncio.run(evaluate(understanding, score_all(understanding, queries), thresholds))
    if args.json:
        print(json.dumps(result.as_dict(), ensure_ascii=False))
        return 0
    tiers = "fuzzy" + (f" + {understanding.semantic.name}" if understanding.semantic else "") + (
        " + llm" if understanding.llm else "")
    print(f"tiers: {tiers}; {len(queries)} queries")
    for key in ("correct", "wrong", "handoff", "accuracy", "oos_precision", "oos_recall"):
        print(f"  {key:<14}{getattr(result, key):.3f}")
    print(f"  {'p50_ms':<14}{result.p50_ms:.2f}\n  {'p99_ms':<14}{result.p99_ms:.2f}")
    if understanding.llm:
        print(f"  llm calls     {understanding.llm.calls} ({understanding.llm.failures} failed)")
    if result.confusions:
        print("worst confusions:")
        for row in result.confusions:
            print(f"  {row['count']}× expected {row['expected']} → answered {row['answered']}")
    return 0


def cmd_faq(args: argparse.Namespace) -> int:
    async def work(app: App) -> int:
        since = app.clock.now() - timedelta(days=args.days)
        async with app.db.session() as session:
            if args.action == "gaps":
                gaps = cluster_gaps(await repo.unanswered_questions(session, since))
                if not gaps:
                    print(f"no unanswered questions in the last {args.days} days")
                for gap in gaps:
                    others = "；".join(v for v in gap.variants if v != gap.example)
                    print(f"{gap.count:>4}×  {gap.example}" + (f"   （也问：{others}）" if others else ""))
                return 0
            replies = await repo.answered_since(session, since)
        zone = ZoneInfo(app.settings.policy.timezone)
        for share in question_mix(replies, zone, args.by):
            print(f"{share.period}  {share.intent:<24} {share.count:>5}  {share.share:6.1%}")
        return 0

    return _with_app(args, work)


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", default="config.yaml", help="settings file (default ./config.yaml)")
    common.add_argument("--scripts", default="scripts", help="scripts directory (default ./scripts)")
    parser = argparse.ArgumentParser(prog="siyu", description="Private-domain customer operations bot",
                                     parents=[common])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", parents=[common], help="run the bot with its web chat")
    p.add_argument("--host", default=None, help="listen address (default from config: 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="listen port (default from config: 8080)")
    p.set_defaults(func=cmd_serve)

    sub.add_parser("chat", parents=[common], help="chat in the terminal (/as guide to switch)") \
        .set_defaults(func=cmd_chat)
    sub.add_parser("check", parents=[common], help="validate config and every script").set_defaults(func=cmd_check)

    p = sub.add_parser("db", parents=[common], help="database maintenance")
    p.add_argument("action", choices=["upgrade"])
    p.set_defaults(func=cmd_db)

    p = sub.add_parser("trigger", parents=[common], help="send a journey or one step to a customer")
    p.add_argument("target", help="journey or journey.step, e.g. new_customer.day3_followup")
    p.add_argument("--customer", required=True, help="customer id, platform id or name")
    p.add_argument("--by", default="cli", help="who triggers it (recorded)")
    p.set_defaults(func=cmd_trigger)

    p = sub.add_parser("why", parents=[common], help="a customer's recent touch decisions, newest first")
    p.add_argument("customer")
    p.add_argument("--limit", type=int, default=20)
    p.set_defaults(func=cmd_why)

    p = sub.add_parser("guard", parents=[common], help="group guard: its log, or its precision on labelled data")
    p.add_argument("action", choices=["log", "eval"])
    p.add_argument("file", nargs="?", help="for eval: JSONL of {text, spam[, member, group, t]}")
    p.add_argument("--json", action="store_true")
    p.add_argument("--limit", type=int, default=50)
    p.set_defaults(func=cmd_guard)

    p = sub.add_parser("eval", parents=[common], help="measure the FAQ cascade on labelled queries")
    p.add_argument("--catalog", required=True, help='JSONL: {"intent", "examples", "answer"}')
    p.add_argument("--queries", required=True, help='JSONL: {"text", "intent" or null}')
    p.add_argument("--tune-on", default=None, help="choose thresholds on this labelled file first")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("faq", parents=[common], help="question mix per day/week, or the unanswered questions")
    p.add_argument("action", choices=["stats", "gaps"])
    p.add_argument("--days", type=int, default=30, help="look back this many days (default 30)")
    p.add_argument("--by", choices=["day", "week"], default="day")
    p.set_defaults(func=cmd_faq)

    p = sub.add_parser("simulate", parents=[common], help="run journeys on a virtual clock")
    p.add_argument("--days", type=int, default=35)
    p.add_argument("--customers", type=int, default=10)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--start", default="2026-03-02T00:00:00+08:00", help="virtual start (ISO 8601 with offset)")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(func=cmd_simulate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = logging.INFO if args.command in ("serve", "chat") else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "chat":
        logging.getLogger().setLevel(logging.WARNING)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
