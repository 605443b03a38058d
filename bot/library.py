"""The operator's scripts, loaded and validated; a broken file never replaces a good one."""
from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot.guard import GuardRules, parse_guard
from bot.journey import Journey, parse_journey
from bot.problems import Problem
from bot.validation import Loc, Voice, validate
from bot.yamlsource import YamlDocument, load_yaml
from intents.catalog import INTENT_ID, Catalog, FaqFile

log = logging.getLogger(__name__)


@dataclass
class _Loaded:
    mtime: float
    journey: Journey | None = None
    catalog: Catalog | None = None
    guard: GuardRules | None = None


@dataclass
class ScriptLibrary:
    """Journeys and the FAQ catalog from a scripts directory; `reload()` keeps the last good version."""

    root: Path
    brand: dict[str, Any]
    _files: dict[Path, _Loaded] = field(default_factory=dict)
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

    def _display(self, path: Path) -> str:
        try:
            return str(path.relative_to(Path.cwd()))
        except ValueError:
            return str(path)

    def _sources(self) -> list[Path]:
        journeys = sorted((self.root / "journeys").glob("*.yaml")) + sorted((self.root / "journeys").glob("*.yml"))
        singles = [self.root / name for name in ("faq.yaml", "guard.yaml")]
        return journeys + [path for path in singles if path.exists()]

    def reload(self, force: bool = False) -> list[Problem]:
        """Re-read changed files. Returns the problems of this pass; good files replace old ones."""
        problems: list[Problem] = []
        changed = False
        if not self.root.is_dir():
            problems.append(Problem(str(self.root), 1, "scripts directory not found — pass --scripts DIR"))
        sources = self._sources()
        for gone in set(self._files) - set(sources):
            del self._files[gone]
            changed = True
        for path in sources:
            mtime = path.stat().st_mtime
            previous = self._files.get(path)
            if previous and previous.mtime == mtime and not force:
                continue
            loaded, file_problems = self._load(path, mtime)
            problems += file_problems
            if loaded is not None:
                self._files[path] = loaded
                changed = True
            elif previous is not None:
                previous.mtime = mtime  # report once per edit, keep serving the old version
                log.error("%s is broken; still running its last good version", self._display(path))
        problems += self._cross_file_problems()
        if changed:
            self.version += 1
        self.problems = problems
        return problems

    def _load(self, path: Path, mtime: float) -> tuple[_Loaded | None, list[Problem]]:
        doc, problems = load_yaml(path, self._display(path))
        if doc is None:
            return None, problems
        loaded: _Loaded | None
        if path.name == "faq.yaml":
            catalog, more = parse_faq(doc)
            loaded = _Loaded(mtime, catalog=catalog) if catalog is not None else None
        elif path.name == "guard.yaml":
            guard, more = parse_guard(doc)
            loaded = _Loaded(mtime, guard=guard) if guard is not None else None
        else:
            journey, more = parse_journey(doc, self.brand)
            loaded = _Loaded(mtime, journey=journey) if journey is not None else None
        # a repeated key is a problem of its own; the rest of the file is still checked
        problems = sorted(dict.fromkeys(problems + more), key=lambda p: p.line)
        return (None, problems) if problems else (loaded, [])

    def _cross_file_problems(self) -> list[Problem]:
        owners: dict[str, str] = {}
        problems = []
        for path, loaded in sorted(self._files.items()):
            if loaded.journey is None:
                continue
            other = owners.get(loaded.journey.id)
            if other:
                problems.append(Problem(self._display(path), 1, f"journey id '{loaded.journey.id}' is already "
                                        f"used by {other} — journey ids must be unique"))
            owners[loaded.journey.id] = self._display(path)
        return problems


def parse_faq(doc: YamlDocument) -> tuple[Catalog | None, list[Problem]]:
    """Validate faq.yaml; every problem names its line."""
    raw = doc.data

    def subject(loc: Loc) -> str:
        if len(loc) >= 2 and loc[0] == "intents" and isinstance(loc[1], int):
            intents = raw.get("intents") if isinstance(raw, Mapping) else None
            intent = intents[loc[1]] if isinstance(intents, list) and loc[1] < len(intents) else None
            intent_id = intent.get("id") if isinstance(intent, Mapping) else None
            return (f"intent '{intent_id}'" if isinstance(intent_id, str) and INTENT_ID.match(intent_id)
                    else f"intent {loc[1] + 1}")
        return ""  # generated messages name top-level keys themselves: "intents must be a list"

    voice = Voice(subject=subject, subject_names_key=False, colon=False, see="see README 'Writing an FAQ entry'")
    faq, problems = validate(FaqFile, raw, doc, voice)
    return (faq.catalog() if faq is not None else None), problems
