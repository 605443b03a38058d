"""The operator's scripts, loaded and validated; a broken file never replaces a good one."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from bot.guard import GuardRules, parse_guard
from bot.journey import Journey, parse_journey
from bot.problems import Problem
from bot.templates import TemplateProblem, render
from bot.yamlsource import YamlDocument, load_yaml
from intents.catalog import Catalog, CatalogError, catalog_from_data

log = logging.getLogger(__name__)

SAMPLE_CUSTOMER = {
    "id": 1, "name": "林小姐", "tags": ["high_value"], "interests": ["skincare"], "source": "门店扫码",
    "birthday": date(1995, 5, 20), "timezone": "Asia/Shanghai", "replies": 1, "days_since_added": 3,
    "purchased": False, "channel": "webchat",
}


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
        if doc is None or problems:
            return None, problems
        if path.name == "faq.yaml":
            return self._load_faq(doc, mtime)
        if path.name == "guard.yaml":
            guard, problems = parse_guard(doc)
            return (_Loaded(mtime, guard=guard), []) if guard else (None, problems)
        journey, problems = parse_journey(doc)
        if journey is not None:
            problems = self._render_samples(journey, doc)
        if journey is None or problems:
            return None, problems
        return _Loaded(mtime, journey=journey), []

    def _load_faq(self, doc: YamlDocument, mtime: float) -> tuple[_Loaded | None, list[Problem]]:
        try:
            return _Loaded(mtime, catalog=catalog_from_data(doc.data)), []
        except CatalogError as exc:
            return None, [doc.problem(key, message) for key, message in exc.issues]

    def _render_samples(self, journey: Journey, doc: YamlDocument) -> list[Problem]:
        """Render every text with a sample customer so a typo'd variable fails here, not at 3 a.m."""
        base = {"customer": SAMPLE_CUSTOMER, "guide": {"name": "小美", "id": "xiaomei"}, "brand": self.brand}
        problems = []
        for step in journey.steps:
            context = dict(base)
            if step.on is not None:
                context["festival"] = {"name": "双11" if step.on == "festival" else "生日", "date": date(2026, 11, 11)}
            for variant in step.variants or (None,):
                try:
                    render(step.template_for(variant), context)
                except TemplateProblem as exc:
                    line = step.text_line(variant) + exc.line - 1
                    problems.append(Problem(doc.path, line, f"step '{step.id}' {exc} — "
                                            "available: customer, guide, brand (and festival on occasion steps)"))
        return problems

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
