"""The operator's scripts, loaded and validated; a broken file never replaces a good one.

Operator files are untrusted input: each changed file is checked in a killable worker process with
limits (bot/script_sandbox.py) before anything is built from it here. A file that breaks a limit is a
problem line like any other mistake, and the last good version keeps running.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot.guard import GuardRules
from bot.journey import Journey
from bot.loyalty import LoyaltyProgram
from bot.problems import Problem
from bot.script_files import kind_of, parse_faq, parse_script
from bot.script_sandbox import FileJob, FileVerdict, ScriptLimits, check_files
from intents.catalog import Catalog

__all__ = ["ScriptLibrary", "parse_faq"]

log = logging.getLogger(__name__)


@dataclass
class _Loaded:
    journey: Journey | None = None
    catalog: Catalog | None = None
    guard: GuardRules | None = None
    loyalty: LoyaltyProgram | None = None


@dataclass
class ScriptLibrary:
    """Journeys and the FAQ catalog from a scripts directory; `reload()` keeps the last good version."""

    root: Path
    brand: dict[str, Any]
    limits: ScriptLimits = field(default_factory=ScriptLimits)
    _files: dict[Path, _Loaded] = field(default_factory=dict)
    _checked: dict[Path, float] = field(default_factory=dict)  # mtime at the last check, good or broken
    problems: list[Problem] = field(default_factory=list)
    version: int = 0

    @property
    def journeys(self) -> dict[str, Journey]:
        return {l.journey.id: l.journey for l in self._files.values() if l.journey}

    @property
    def catalog(self) -> Catalog:
        loaded = self._files.get(self.root / "faq.yaml")
        return loaded.catalog if loaded and loaded.catalog else Catalog(())

    @property
    def guard(self) -> GuardRules:
        loaded = self._files.get(self.root / "guard.yaml")
        return loaded.guard if loaded and loaded.guard else GuardRules()

    @property
    def loyalty(self) -> LoyaltyProgram | None:
        """Points and levels, when the scripts have a loyalty.yaml."""
        loaded = self._files.get(self.root / "loyalty.yaml")
        return loaded.loyalty if loaded else None

    def _display(self, path: Path) -> str:
        try:
            return str(path.relative_to(Path.cwd()))
        except ValueError:
            return str(path)

    def _sources(self) -> list[Path]:
        journeys = sorted((self.root / "journeys").glob("*.yaml")) + sorted((self.root / "journeys").glob("*.yml"))
        singles = [self.root / name for name in ("faq.yaml", "guard.yaml", "loyalty.yaml")]
        return journeys + [path for path in singles if path.exists()]

    def reload(self, force: bool = False) -> list[Problem]:
        """Re-read changed files. Returns the problems of this pass; good files replace old ones.

        Blocks its thread while the worker checks (`siyu serve` calls it through asyncio.to_thread).
        """
        problems: list[Problem] = []
        changed = False
        # built aside and swapped in at the end: the event loop reads the files while this thread works
        files = dict(self._files)
        if not self.root.is_dir():
            problems.append(Problem(str(self.root), 1, "scripts directory not found — pass --scripts DIR"))
        sources = self._sources()
        for gone in set(files) - set(sources):
            del files[gone]
            changed = True
        self._checked = {path: mtime for path, mtime in self._checked.items() if path in sources}
        due: list[tuple[Path, float]] = []
        for path in sources:
            try:
                mtime = path.stat().st_mtime
            except OSError:
                mtime = -1.0  # vanished or unreadable since the listing: the worker reports it
            if self._checked.get(path) == mtime and not force:
                continue  # a broken file is reported once per edit, not rechecked every pass
            due.append((path, mtime))
        verdicts = check_files([FileJob(path, self._display(path), kind_of(path)) for path, _ in due],
                               self.brand, self.limits) if due else []
        for (path, mtime), verdict in zip(due, verdicts):
            loaded, file_problems = self._adopt(path, verdict)
            problems += file_problems
            self._checked[path] = mtime
            if loaded is not None:
                files[path] = loaded
                changed = True
            elif path in files:  # keep serving the old version
                log.error("%s is broken; still running its last good version", self._display(path))
        problems += self._cross_file_problems(files)
        if changed:
            self._files = files
            self.version += 1
        self.problems = problems
        return problems

    def _adopt(self, path: Path, verdict: FileVerdict) -> tuple[_Loaded | None, list[Problem]]:
        """Build what the worker passed; no trial render here, the worker has done it (see script_sandbox)."""
        if verdict.problems or verdict.doc is None:
            return None, verdict.problems or [Problem(self._display(path), 1, "could not be checked — try again")]
        try:
            parsed, problems = parse_script(kind_of(path), verdict.doc, None)
        except Exception as exc:  # noqa: BLE001 — not expected after the worker passed it; never take the bot down
            log.error("building %s failed after it was checked (%s)", self._display(path), type(exc).__name__)
            return None, [Problem(self._display(path), 1, f"could not be loaded ({type(exc).__name__}) — "
                                                          "report this to the developers")]
        if problems or parsed is None:
            return None, problems
        return _Loaded(journey=parsed.journey, catalog=parsed.catalog, guard=parsed.guard, loyalty=parsed.loyalty), []

    def _cross_file_problems(self, files: dict[Path, _Loaded]) -> list[Problem]:
        owners: dict[str, str] = {}
        problems = []
        for path, loaded in sorted(files.items()):
            if loaded.journey is None:
                continue
            other = owners.get(loaded.journey.id)
            if other:
                problems.append(Problem(self._display(path), 1, f"journey id '{loaded.journey.id}' is already "
                                        f"used by {other} — journey ids must be unique"))
            owners[loaded.journey.id] = self._display(path)
        faq = files.get(self.root / "faq.yaml")
        if faq is not None and faq.catalog is not None:  # without a good faq.yaml its own problems say enough
            from bot.listening import reply_label_problems  # (it imports the engine's journey runner)

            problems += reply_label_problems({l.journey.id: l.journey for l in files.values() if l.journey},
                                             faq.catalog)
            loyalty = files.get(self.root / "loyalty.yaml")
            intent = loyalty.loyalty.balance_intent if loyalty and loyalty.loyalty else None
            if intent and faq.catalog.get(intent) is None:
                problems.append(Problem(self._display(self.root / "loyalty.yaml"), 1, f"balance_intent '{intent}' "
                                        "is not an intent of faq.yaml — add it there (e.g. examples: [查积分]) "
                                        "or remove balance_intent"))
        return problems
