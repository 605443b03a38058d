"""The `siyu` command line: parse arguments, call one function, print what it returns.

Everything beyond argparse (asyncio included) is imported inside the command that needs it, so
`siyu --help` and `siyu check` never load adapters, storage or the FAQ models.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO, TypeVar

if TYPE_CHECKING:
    from bot.app import App
    from bot.config import Settings

DEFAULT_CONFIG = "config.yaml"
DEFAULT_SCRIPTS = "scripts"
STOP_DEADLINE_SECONDS = 9.5  # after SIGTERM the process is gone by then, even if draining hangs
T = TypeVar("T")


def _settings(args: argparse.Namespace) -> Settings:
    from bot.config_loader import load_config
    from bot.problems import ScriptError

    try:
        settings = load_config(Path(args.config))
    except ScriptError as exc:
        _print_all(exc.problems, sys.stderr)
        raise SystemExit(1) from None
    from bot.logging_setup import redact_secrets, secrets_of

    redact_secrets(secrets_of(settings))  # from here on no log line shows them
    return settings


def _print_all(lines: Sequence[object], out: TextIO | None = None) -> None:
    for line in lines:
        print(line, file=out or sys.stdout)


def _unreadable(exc: OSError) -> str:
    """An operator-style line for a file that could not be opened (OSError's own text names no fix)."""
    if exc.filename is None:
        return str(exc)
    return f"{exc.filename}:1: cannot read the file ({exc.strerror}) — check the path"


def _read_inputs(read: Callable[[], T]) -> T | None:
    """Run `read` (which loads the files an evaluation names); on a file it cannot use, print why and give None."""
    from bot.problems import ScriptError

    try:
        return read()
    except ScriptError as exc:
        _print_all(exc.problems, sys.stderr)
    except OSError as exc:
        print(_unreadable(exc), file=sys.stderr)
    except ValueError as exc:  # already `PATH:LINE: what — expected …`
        print(exc, file=sys.stderr)
    return None


def _with_app(args: argparse.Namespace, work: Callable[[App], Awaitable[int]],
              refused: tuple[type[Exception], ...] = ()) -> int:
    """Start an App (migrating the database) around `work`, then close it.

    `refused` are the errors that mean the operator asked for something that cannot be done: their
    sentence goes to stderr and the command exits 1."""
    import asyncio

    from bot.app import App

    app = App(_settings(args), Path(args.scripts))

    async def main() -> int:
        await app.start()
        try:
            return await work(app)
        except refused as exc:
            print(exc, file=sys.stderr)
            return 1
        finally:
            await app.close()

    return asyncio.run(main())


def cmd_check(args: argparse.Namespace) -> int:
    from bot.check import check_everything

    problems = check_everything(Path(args.config), Path(args.scripts))
    _print_all(problems)
    if problems:
        print(f"{len(problems)} problem(s) found", file=sys.stderr)
        return 1
    print("all good: config and scripts are valid")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import asyncio
    import gc
    import logging

    from bot.app import App, serve

    settings = _settings(args)
    host = args.host or settings.server.host
    port = args.port or settings.server.port
    app = App(settings, Path(args.scripts))

    async def main() -> None:
        await app.start()
        # what start-up loaded (config, scripts, models, the catalog) lives as long as the process: the cyclic
        # collector need not walk it again on every collection (about a tenth of a busy worker's CPU)
        gc.freeze()
        try:
            await serve(app, host, port, on_stop=_exit_anyway_after(STOP_DEADLINE_SECONDS))
        finally:
            await app.close()

    print(f"siyu: open http://{host}:{port}/ (Ctrl-C to stop)", flush=True)
    try:
        asyncio.run(main())
    except KeyboardInterrupt:  # Ctrl-C during start-up, before serve handles the signals itself
        pass
    except Exception:  # through the log, which redacts: a platform error may quote a token
        logging.getLogger("siyu").exception("siyu serve stopped on an error")
        return 1
    return 0


def _exit_anyway_after(seconds: float) -> Callable[[], None]:
    """What serve calls on SIGTERM: a last-resort exit in case draining hangs (a stuck thread)."""
    def arm() -> None:
        import os
        import threading

        def leave() -> None:
            print(f"siyu: could not stop cleanly within {seconds:g}s; exiting now", file=sys.stderr, flush=True)
            os._exit(1)

        timer = threading.Timer(seconds, leave)
        timer.daemon = True  # a clean exit does not wait for it
        timer.start()
    return arm


def cmd_chat(args: argparse.Namespace) -> int:
    from bot.app import chat_in_console

    async def work(app: App) -> int:
        await chat_in_console(app)
        return 0

    return _with_app(args, work)


def cmd_db(args: argparse.Namespace) -> int:
    import asyncio

    from storage.db import Database

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


def cmd_trigger(args: argparse.Namespace) -> int:
    from bot import lookups
    from bot.commands import CommandError

    async def work(app: App) -> int:
        print(await lookups.trigger(app, args.target, args.customer, args.by))
        return 0

    return _with_app(args, work, refused=(lookups.UnknownCustomer, CommandError))


def cmd_why(args: argparse.Namespace) -> int:
    from bot import lookups

    async def work(app: App) -> int:
        print(await lookups.why(app, args.customer, args.limit))
        return 0

    return _with_app(args, work, refused=(lookups.UnknownCustomer,))


def cmd_events(args: argparse.Namespace) -> int:
    from bot.business_events import BusinessEvents, import_events

    async def work(app: App) -> int:
        events = BusinessEvents(app.db, app.engine.contacts, app.clock)
        try:
            report = await import_events(events, Path(args.file), args.file)
        except OSError as exc:
            print(_unreadable(exc), file=sys.stderr)
            return 1
        _print_all(report.problems, sys.stderr)
        print(f"{report.accepted} event(s) applied, {report.replayed} already seen (no effect), "
              f"{len(report.problems)} refused")
        return 1 if report.problems else 0

    return _with_app(args, work)


def cmd_customers(args: argparse.Namespace) -> int:
    from bot.transfers import TransferError, transfer_customers

    customers = [c.strip() for c in (args.customers or "").split(",") if c.strip()] or None

    async def work(app: App) -> int:
        app.plug_in()  # the platform's transfer API, when WeCom is configured
        report = await transfer_customers(app, args.from_guide, args.to_guide, customers, args.departed)
        _print_all(report.lines())
        return 0

    return _with_app(args, work, refused=(TransferError,))


def cmd_channel_code(args: argparse.Namespace) -> int:
    from bot.channel_codes import ChannelCodeError, code_stats, create_channel_code

    async def work(app: App) -> int:
        if args.action == "list":
            stats = await code_stats(app)
            _print_all([code.line() for code in stats] or ["还没有渠道活码 — siyu channel-code create <name> --guides a,b"])
            return 0
        if not args.name or not args.guides:
            print("usage: siyu channel-code create NAME --guides a,b,c [--tags t1,t2] [--channel wecom]",
                  file=sys.stderr)
            return 2
        app.plug_in()  # WeCom makes the QR code
        code = await create_channel_code(app, args.name, args.guides.split(","),
                                         [t.strip() for t in (args.tags or "").split(",") if t.strip()],
                                         args.channel, args.bot)
        print(code.line())
        return 0

    return _with_app(args, work, refused=(ChannelCodeError,))


def cmd_simulate(args: argparse.Namespace) -> int:
    import asyncio
    import time
    from datetime import datetime

    from bot.simulate import Simulation, write_transcripts

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
        from bot import lookups

        async def work(app: App) -> int:
            _print_all(await lookups.guard_log(app, args.limit))
            return 0

        return _with_app(args, work)
    if args.action in ("train", "review", "spam", "not-spam"):
        from bot.guard_commands import guard_staff_command

        return guard_staff_command(args, _with_app)
    if not args.file:
        print("usage: siyu guard eval FILE.jsonl [--json]", file=sys.stderr)
        return 2
    from bot.guard_eval import evaluate_file
    from bot.reports import guard_eval_json, guard_eval_lines

    settings = _settings(args)
    report = _read_inputs(lambda: evaluate_file(Path(args.scripts), settings.brand, Path(args.file)))
    if report is None:
        return 1
    if args.json:
        print(guard_eval_json(report))
    else:
        _print_all(guard_eval_lines(report))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    import asyncio
    import json

    from bot.faq_eval import evaluate_files
    from bot.reports import eval_lines, tuned_thresholds_lines

    settings = _settings(args)
    if args.holdout is not None:
        return _eval_holdout(settings, args)
    tune_on = Path(args.tune_on) if args.tune_on else None
    run = _read_inputs(lambda: asyncio.run(evaluate_files(settings, Path(args.catalog), Path(args.queries), tune_on)))
    if run is None:
        return 1
    if run.tuned is not None:  # with --json, stdout stays one JSON object
        _print_all(tuned_thresholds_lines(args.tune_on, run.understanding, run.tuned, run.budget, run.estimate,
                                          run.out_of_scope),
                   sys.stderr if args.json else sys.stdout)
    if args.json:
        print(json.dumps(run.result.as_dict(), ensure_ascii=False))
    else:
        _print_all(eval_lines(run.understanding, run.queries, run.result))
    return 0


def _eval_holdout(settings: Settings, args: argparse.Namespace) -> int:
    """`siyu eval --holdout SEED`: tune on half of --queries, report on the other half, as `python -m bench faq`."""
    import asyncio
    import json

    from bot.faq_eval import evaluate_holdout

    if args.tune_on:
        print("siyu eval: --holdout splits --queries into its own tune half — leave out --tune-on", file=sys.stderr)
        return 2
    run = _read_inputs(lambda: asyncio.run(evaluate_holdout(settings, Path(args.catalog), Path(args.queries),
                                                            args.holdout)))
    if run is None:
        return 1
    print(json.dumps(run.as_dict(), ensure_ascii=False))
    return 0


def cmd_faq(args: argparse.Namespace) -> int:
    from bot import lookups

    async def work(app: App) -> int:
        if args.action == "gaps":
            _print_all(await lookups.faq_gaps(app, args.days))
        else:
            _print_all(await lookups.faq_stats(app, args.days, args.by))
        return 0

    return _with_app(args, work)


def cmd_staff(args: argparse.Namespace) -> int:
    import asyncio

    from bot.clock import SystemClock
    from bot.staff_accounts import (
        PasswordMismatch,
        UnknownStaff,
        WeakPassword,
        open_accounts,
        read_new_password,
        require_known,
    )

    if args.action == "password" and args.revoke:
        print("--revoke goes with 'siyu staff token'", file=sys.stderr)
        return 2
    if args.action == "token" and args.password_stdin:
        print("--password-stdin goes with 'siyu staff password'", file=sys.stderr)
        return 2
    settings = _settings(args)
    known = [member.id for member in settings.staff]

    async def main(password: str | None) -> list[str]:
        async with open_accounts(settings.database_url, known, SystemClock()) as accounts:
            if password is not None:
                await accounts.set_password(args.staff_id, password)
                return [f"password set for {args.staff_id}: log in as 导购 on the web chat page"]
            if args.revoke:
                return [f"removed {await accounts.revoke_tokens(args.staff_id)} API token(s) of {args.staff_id}"]
            token = await accounts.create_token(args.staff_id)
            return [f"API token for {args.staff_id} (shown only now; siyu keeps only its hash):", token]

    try:
        require_known(args.staff_id, known)  # before the prompt, not after
        password = read_new_password(args.password_stdin) if args.action == "password" else None
        _print_all(asyncio.run(main(password)))
    except (UnknownStaff, WeakPassword, PasswordMismatch) as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("siyu")
    except PackageNotFoundError:
        return "unknown (not installed — pip install -e . to record one)"


class _VersionAction(argparse.Action):
    """Like argparse's 'version', but reads the package metadata only when asked."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS, help: str | None = None) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help=help)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        print(f"siyu {_version()}")
        parser.exit()


def _file_options(parser: argparse.ArgumentParser, default: Any) -> None:
    """--config and --scripts; `default` is SUPPRESS on subcommands so they never undo an earlier value."""
    parser.add_argument("--config", metavar="FILE", default=default,
                        help=f"settings file (default ./{DEFAULT_CONFIG})")
    parser.add_argument("--scripts", metavar="DIR", default=default,
                        help=f"scripts directory (default ./{DEFAULT_SCRIPTS})")


def build_parser() -> argparse.ArgumentParser:
    """Every command and option; `--config` and `--scripts` work before or after the command."""
    common = argparse.ArgumentParser(add_help=False)
    _file_options(common, argparse.SUPPRESS)
    parser = argparse.ArgumentParser(prog="siyu", description="Private-domain customer operations bot")
    _file_options(parser, argparse.SUPPRESS)
    parser.add_argument("--version", action=_VersionAction, help="print the installed version and exit")
    parser.set_defaults(log_format="text", log_pii=False)  # only serve has the options
    sub = parser.add_subparsers(dest="command", required=True,
                                help="the command to run (each takes --help)")

    p = sub.add_parser("serve", parents=[common], help="run the bot with its web chat")
    p.add_argument("--host", default=None, help="listen address (default from config: 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="listen port (default from config: 8080)")
    p.add_argument("--log-format", choices=["text", "json"], default="text",
                   help="text lines (default) or one JSON object per line: time, level, logger, message")
    p.add_argument("--log-pii", action="store_true",
                   help="log customers' phone numbers, e-mail and ID numbers unmasked — for debugging only")
    p.set_defaults(func=cmd_serve)

    sub.add_parser("chat", parents=[common], help="chat in the terminal (/as guide to switch)") \
        .set_defaults(func=cmd_chat)
    sub.add_parser("check", parents=[common], help="validate config and every script").set_defaults(func=cmd_check)

    p = sub.add_parser("db", parents=[common], help="database maintenance")
    p.add_argument("action", choices=["upgrade"], help="upgrade: apply the database migrations")
    p.set_defaults(func=cmd_db)

    p = sub.add_parser("trigger", parents=[common], help="send a journey or one step to a customer")
    p.add_argument("target", help="journey or journey.step, e.g. new_customer.day3_followup")
    p.add_argument("--customer", required=True, help="customer id, platform id or name")
    p.add_argument("--by", default="cli", help="who triggers it (recorded; default cli)")
    p.set_defaults(func=cmd_trigger)

    p = sub.add_parser("why", parents=[common], help="a customer's recent touch decisions, newest first")
    p.add_argument("customer", help="customer id, platform id or name")
    p.add_argument("--limit", type=int, default=20, help="show at most this many decisions (default 20)")
    p.set_defaults(func=cmd_why)

    p = sub.add_parser("events", parents=[common], help="business events: import a JSONL export (orders, tags)")
    p.add_argument("action", choices=["import"])
    p.add_argument("file", help="one event per line, as POST /api/events takes them")
    p.set_defaults(func=cmd_events)

    p = sub.add_parser("guard", parents=[common], help="group guard: its log, review, staff decisions, training, "
                                                       "or its precision on labelled data")
    p.add_argument("action", choices=["log", "eval", "train", "review", "spam", "not-spam"],
                   help="log: what the guard did; eval: precision and recall on FILE; train: rebuild the model "
                        "from the shipped corpus and staff decisions; review: messages held for staff; "
                        "spam MESSAGE_ID / not-spam EVENT_ID --staff KEY: a staff decision")
    p.add_argument("file", nargs="?", metavar="FILE", help="for eval: JSONL of {text, spam[, member, group, t]}; "
                                                           "for spam / not-spam: the id")
    p.add_argument("--out", help="for train: where to write the model (default var/guard_model.json.gz)")
    p.add_argument("--without-staff", action="store_true", help="for train: the shipped corpus only (no database)")
    p.add_argument("--staff", help="for spam / not-spam: the staff id (config.yaml staff[].id) deciding")
    p.add_argument("--json", action="store_true", help="for eval: print one JSON object with the scores")
    p.add_argument("--limit", type=int, default=50, help="for log: show at most this many actions (default 50)")
    p.set_defaults(func=cmd_guard)

    p = sub.add_parser("eval", parents=[common], help="measure the FAQ cascade on labelled queries")
    p.add_argument("--catalog", required=True, help='JSONL: {"intent", "examples", "answer"}')
    p.add_argument("--queries", required=True, help='JSONL: {"text", "intent" or null}')
    p.add_argument("--tune-on", default=None, help="choose thresholds on this labelled file first")
    p.add_argument("--holdout", type=int, default=None, metavar="SEED",
                   help="split --queries by intent: tune on one half, report (JSON) on the other, beside the "
                        "configured thresholds on that half")
    p.add_argument("--json", action="store_true", help="print the metrics as one JSON object")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("faq", parents=[common], help="question mix per day/week, or the unanswered questions")
    p.add_argument("action", choices=["stats", "gaps"],
                   help="stats: question mix per period; gaps: unanswered questions, clustered")
    p.add_argument("--days", type=int, default=30, help="look back this many days (default 30)")
    p.add_argument("--by", choices=["day", "week"], default="day", help="for stats: period length (default day)")
    p.set_defaults(func=cmd_faq)

    p = sub.add_parser("customers", parents=[common], help="hand customers from one guide to another")
    p.add_argument("action", choices=["transfer"], help="transfer: 在职/离职继承 (WeCom asks the platform)")
    p.add_argument("--from", dest="from_guide", required=True, help="the guide's id under staff: (handing over)")
    p.add_argument("--to", dest="to_guide", required=True, help="the guide's id under staff: (taking over)")
    p.add_argument("--customers", default=None,
                   help="comma-separated customer ids, platform ids or names (default: all of --from's)")
    p.add_argument("--departed", action="store_true", help="--from has left the company (离职继承)")
    p.set_defaults(func=cmd_customers)

    p = sub.add_parser("channel-code", parents=[common], help="渠道活码: codes that spread new customers over guides")
    p.add_argument("action", choices=["create", "list"],
                   help="create a code, or list codes with their adds, replies and purchases")
    p.add_argument("name", nargs="?", help="for create: the channel's name, e.g. 门店A扫码")
    p.add_argument("--guides", default=None, help="for create: comma-separated guide ids under staff:")
    p.add_argument("--tags", default=None, help="for create: comma-separated tags its customers get")
    p.add_argument("--channel", choices=["wecom", "telegram", "webchat"], default="wecom",
                   help="wecom: a 「联系我」 QR code (default); telegram or webchat: a start link")
    p.add_argument("--bot", default=None, help="for --channel telegram: the bot's username")
    p.set_defaults(func=cmd_channel_code)

    p = sub.add_parser("simulate", parents=[common], help="run journeys on a virtual clock")
    p.add_argument("--days", type=int, default=35, help="virtual days to run (default 35)")
    p.add_argument("--customers", type=int, default=10, help="synthetic customers (default 10)")
    p.add_argument("--seed", type=int, default=1, help="random seed; same seed, same output (default 1)")
    p.add_argument("--start", default="2026-03-02T00:00:00+08:00", help="virtual start (ISO 8601 with offset)")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("staff", parents=[common], help="staff accounts: set a password, create or revoke API tokens")
    p.add_argument("action", choices=["password", "token"],
                   help="password: set the staff member's login password; token: create an API token")
    p.add_argument("staff_id", metavar="STAFF_ID", help="the staff member's id under staff: in config.yaml")
    p.add_argument("--password-stdin", action="store_true",
                   help="for password: read it from standard input instead of prompting")
    p.add_argument("--revoke", action="store_true", help="for token: remove the staff member's API tokens instead")
    p.set_defaults(func=cmd_staff)
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse `argv`, then fill in --config and --scripts wherever they were (or were not) given."""
    args = build_parser().parse_args(argv)
    args.config = getattr(args, "config", DEFAULT_CONFIG)
    args.scripts = getattr(args, "scripts", DEFAULT_SCRIPTS)
    return args


def _configure_logging(args: argparse.Namespace) -> None:
    """serve logs what it does; the other commands print their results and log only trouble.

    Every command's log is redacted: secrets always, customer PII unless `serve --log-pii`.
    """
    import logging

    from bot.logging_setup import configure

    configure(logging.INFO if args.command == "serve" else logging.WARNING, args.log_format, pii=args.log_pii)
    if args.log_pii:
        logging.getLogger("siyu").warning("--log-pii: customers' phone numbers, e-mail addresses and ID numbers "
                                          "are logged unmasked; use it only while debugging")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `siyu`: the command's exit status (argparse exits 2 on bad usage)."""
    args = parse_args(argv)
    _configure_logging(args)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
