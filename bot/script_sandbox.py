"""Checking operator scripts in a worker process that can be killed.

Operator files are untrusted input. Reading, parsing, compiling and trial-rendering a file runs in a
child process with limits on wall time, memory (RLIMIT_AS) and CPU (RLIMIT_CPU); the file size is
checked before it is read, and YAML and templates carry their own limits (bot/yamlsource.py,
bot/templates.py). Whatever the file does, the parent — `siyu check`, or `siyu serve` reloading in a
thread — only waits on a pipe with a timeout: it stays responsive, and a child that breaks a limit is
killed and reported as a problem on the file.

What comes back: a list of problems, or, for a file without any, its parsed YamlDocument (plain data
and line numbers, so it pickles). The parent then builds the journey, catalog or guard rules from that
document without the trial render. Sending those objects back is not possible (compiled Jinja templates
do not pickle), and rebuilding them is safe: the worker has just run the same deterministic validation
and compilation on the same document within the limits, and the parent skips only the render.

The child comes from a 'forkserver' (or 'spawn' where there is none), never a plain fork: `siyu serve`
has threads (the event loop's executor, database drivers) that a fork would copy mid-flight. The fork
server imports this module once, so each check starts in milliseconds. As with any multiprocessing
use, a program that loads scripts must guard its entry point with `if __name__ == "__main__":` (the
`siyu` command, `python -m bot.cli`, pytest and bench/ do).
"""
from __future__ import annotations

import gc
import logging
import multiprocessing
import os
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.context import BaseContext
from pathlib import Path
from typing import Any

from bot.problems import Problem
from bot.script_files import ScriptKind, parse_script
from bot.yamlsource import MAX_FILE_BYTES, YamlDocument, parse_yaml, read_operator_file

log = logging.getLogger(__name__)

STOPPED = "a running siyu keeps the file's last good version"


@dataclass(frozen=True)
class ScriptLimits:
    """What checking one file may take."""

    seconds: float = 20.0             # wall time per file, then the worker is killed (a 1 MiB FAQ takes a few)
    memory_bytes: int = 512 << 20     # address space the worker may add to what it starts with
    file_bytes: int = MAX_FILE_BYTES  # checked before reading


@dataclass(frozen=True)
class FileJob:
    """One file to check: where it is, how problems name it, what kind of script it is."""

    path: Path
    shown: str
    kind: ScriptKind


@dataclass(frozen=True)
class FileVerdict:
    """The worker's answer for one file: its problems, or (when there are none) its parsed document."""

    problems: list[Problem]
    doc: YamlDocument | None = None
    spent: bool = False  # the worker ran out of memory: the rest of the files go to a fresh one


def check_files(jobs: Sequence[FileJob], brand: Mapping[str, Any],
                limits: ScriptLimits = ScriptLimits()) -> list[FileVerdict]:
    """One verdict per job, in order. Blocks the calling thread only (run it with asyncio.to_thread)."""
    verdicts: list[FileVerdict] = []
    while len(verdicts) < len(jobs):
        rest = jobs[len(verdicts):]
        try:
            verdicts += _run_worker(rest, brand, limits)
        except OSError as exc:  # no worker could be started: nothing unchecked gets loaded
            log.error("cannot start the script checker: %s", exc)
            verdicts += [FileVerdict([Problem(job.shown, 1, f"could not be checked: the checker did not start "
                                                            f"({exc.strerror or exc}) — {STOPPED}")])
                         for job in rest]
    return verdicts


def _run_worker(jobs: Sequence[FileJob], brand: Mapping[str, Any], limits: ScriptLimits) -> list[FileVerdict]:
    """Verdicts for the first jobs: all of them, or up to and including the one the worker was stopped on."""
    context = _context()
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(target=_work, args=(sender, list(jobs), brand, limits), name="siyu-script-check",
                              daemon=True)
    verdicts: list[FileVerdict] = []
    try:
        process.start()
        sender.close()  # the child holds the only writing end: its death reads as end-of-file here
        for job in jobs:
            if not receiver.poll(limits.seconds):
                log.warning("checking %s took longer than %g s; the checker was stopped", job.shown, limits.seconds)
                verdicts.append(FileVerdict([Problem(
                    job.shown, 1, f"checking this file took longer than {limits.seconds:g} s, so it was stopped — "
                                  f"look for long loops or huge texts in its templates; {STOPPED}")]))
                break
            try:
                verdicts.append(receiver.recv())
            except (EOFError, OSError):
                process.join(timeout=5)
                verdicts.append(FileVerdict([_died(job, process.exitcode, limits)]))
                break
            if verdicts[-1].spent:
                break
    finally:
        if process.is_alive():
            process.kill()
        if process.pid is not None:
            process.join()
        receiver.close()
    return verdicts


def _died(job: FileJob, exitcode: int | None, limits: ScriptLimits) -> Problem:
    signals = {getattr(signal, "SIGXCPU", None): "checking this file used up its CPU time, so it was stopped",
               getattr(signal, "SIGKILL", None): f"checking this file needed more than {limits.memory_bytes >> 20} "
                                                 "MiB of memory, so it was stopped"}
    what = signals.get(-exitcode if exitcode is not None else None,
                       f"the checker stopped while reading this file (exit code {exitcode})")
    return Problem(job.shown, 1, f"{what} — look for huge texts, aliases or loops; {STOPPED}")


_CONTEXT: BaseContext | None = None


def _context() -> BaseContext:
    global _CONTEXT
    if _CONTEXT is None:
        if "forkserver" in multiprocessing.get_all_start_methods():
            _CONTEXT = multiprocessing.get_context("forkserver")
            _CONTEXT.set_forkserver_preload([__name__])
        else:
            _CONTEXT = multiprocessing.get_context("spawn")
    return _CONTEXT


# --- in the worker ---------------------------------------------------------------------------------

_RESERVE_BYTES = 4 << 20  # set aside before the memory limit, freed to report running out of memory


def _work(sender: Connection, jobs: list[FileJob], brand: Mapping[str, Any], limits: ScriptLimits) -> None:
    """The child: check each file and send its verdict; never print a traceback on the operator's screen."""
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's: it stops this child
        reserve = [bytearray(_RESERVE_BYTES)]
        _limit_resources(limits, len(jobs))
        for job in jobs:
            verdict = check_file(job, brand, limits, reserve)
            try:
                sender.send(verdict)
            except Exception:  # noqa: BLE001 — a document that does not pickle: report it rather than die
                sender.send(FileVerdict([Problem(job.shown, 1, "its parsed contents could not be passed back — "
                                                               "remove unusual YAML tags")]))
            if verdict.spent:
                break
        sender.close()
    except BaseException:  # noqa: BLE001
        os._exit(70)  # the parent reports the file it was on; a traceback here would only confuse


def check_file(job: FileJob, brand: Mapping[str, Any], limits: ScriptLimits = ScriptLimits(),
               reserve: list[bytearray] | None = None) -> FileVerdict:
    """Read, parse, validate and trial-render one file (in the worker: this is the risky part).

    `reserve` is memory set aside by the worker: freed when the file exhausts the rest, so the verdict
    can still be written.
    """
    try:
        return _check_file(job, brand, limits)
    except MemoryError:
        pass  # handled below: inside this clause the traceback still holds everything the file took
    except RecursionError:
        return FileVerdict([Problem(job.shown, 1, f"the file is nested too deeply to check — flatten it; {STOPPED}")])
    except Exception as exc:  # noqa: BLE001 — a checker bug must still be a problem line, not a traceback
        return FileVerdict([Problem(job.shown, 1, f"could not be checked ({type(exc).__name__}) — simplify the "
                                                  f"file and report this to the developers; {STOPPED}")])
    if reserve:
        reserve.clear()
    gc.collect()
    return FileVerdict([Problem(job.shown, 1, f"checking this file needed more than {limits.memory_bytes >> 20} MiB "
                                              f"of memory, so it was stopped — look for huge texts or aliases; "
                                              f"{STOPPED}")], spent=True)


def _check_file(job: FileJob, brand: Mapping[str, Any], limits: ScriptLimits) -> FileVerdict:
    text, problems = read_operator_file(job.path, job.shown, limits.file_bytes)
    if text is None:
        return FileVerdict(problems)
    doc, problems = parse_yaml(text, job.shown)
    if doc is None:
        return FileVerdict(problems)
    _, more = parse_script(job.kind, doc, brand)
    # a repeated key is a problem of its own; the rest of the file is still checked
    problems = sorted(dict.fromkeys(problems + more), key=lambda p: p.line)
    return FileVerdict(problems, None if problems else doc)


def _limit_resources(limits: ScriptLimits, files: int) -> None:
    """Memory and CPU limits of this child; the wall-time limit is the parent's."""
    try:
        import resource
    except ImportError:  # not on this platform: the parent's wall-time limit still applies
        return
    cpu = int(limits.seconds * files) + 5  # a backstop should the parent die and leave this child spinning
    _set_limit(resource, resource.RLIMIT_CPU, cpu)
    in_use = _address_space()
    if in_use is not None:
        _set_limit(resource, resource.RLIMIT_AS, in_use + limits.memory_bytes)


def _set_limit(resource: Any, which: int, value: int) -> None:
    _, hard = resource.getrlimit(which)
    if hard != resource.RLIM_INFINITY:
        value = min(value, hard)
    try:
        resource.setrlimit(which, (value, hard))
    except (ValueError, OSError):
        pass  # not enforceable here (some platforms lack RLIMIT_AS): the wall-time limit still applies


def _address_space() -> int | None:
    """Bytes of address space this process uses now (Linux), so the limit is what it may add."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            return int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None
