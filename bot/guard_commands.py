"""`siyu guard train | review | spam | not-spam`: the guard's staff-facing commands."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bot.app import App

WithApp = Callable[[argparse.Namespace, Callable[["App"], Awaitable[int]]], int]
DEFAULT_OUT = Path("var/guard_model.json.gz")


def _write_model(samples_from_staff: list, out: Path) -> str:  # type: ignore[type-arg]
    from bot.guard_model import train_with

    model = train_with(samples_from_staff)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(model.to_bytes())
    tmp.replace(out)  # the running guard rereads the file when it changes: never a half-written one
    spam, normal = model.trained_on
    return (f"wrote {out}: {spam} spam and {normal} normal messages ({len(samples_from_staff)} from staff). "
            f"Point guard.yaml at it with  classifier: {{model: {out.resolve()}}}")


def guard_staff_command(args: argparse.Namespace, with_app: WithApp) -> int:
    """Runs one of the staff-facing guard actions; returns the exit status."""
    out = Path(args.out) if args.out else DEFAULT_OUT
    if args.action == "train" and args.without_staff:
        print(_write_model([], out))
        return 0
    if args.action in ("spam", "not-spam") and (not args.file or not args.staff or not args.file.isdigit()):
        print(f"usage: siyu guard {args.action} {'MESSAGE_ID' if args.action == 'spam' else 'EVENT_ID'} --staff KEY",
              file=sys.stderr)
        return 2

    async def work(app: App) -> int:
        from bot import guard_feedback as feedback
        from bot.reports import guard_review_lines
        from zoneinfo import ZoneInfo

        if args.action == "train":
            async with app.db.session() as session:
                staff = await feedback.staff_samples(session)
            import asyncio

            print(await asyncio.to_thread(_write_model, staff, out))  # model work off the event loop
            return 0
        if args.action == "review":
            async with app.db.session() as session:
                held = await feedback.review_queue(session)
            for line in guard_review_lines(held, ZoneInfo(app.settings.policy.timezone)):
                print(line)
            return 0
        if args.staff not in {member.id for member in app.settings.staff}:
            print(f"unknown staff id {args.staff!r} — use an id from config.yaml staff:", file=sys.stderr)
            return 2
        try:
            async with app.db.session() as session, session.begin():
                if args.action == "spam":
                    view = await feedback.mark_spam(session, int(args.file), args.staff, app.clock.now())
                else:
                    view = await feedback.mark_not_spam(session, int(args.file), args.staff, app.clock.now())
        except LookupError as exc:
            print(exc, file=sys.stderr)
            return 1
        print(f"guard event #{view.id}: {view.status}")
        return 0

    return with_app(args, work)
