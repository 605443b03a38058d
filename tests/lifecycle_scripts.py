"""Scripts for the hand-over, channel-code and listening tests: the test FAQ with chosen journeys."""
from __future__ import annotations

import shutil
from pathlib import Path

from tests.harness import ROOT, SCRIPTS

LIFECYCLE = ROOT / "tests" / "data" / "lifecycle_b" / "journeys"


def scripts_with(tmp_path: Path, *journeys: str, new_customer: bool = True) -> Path:
    """A scripts directory: faq.yaml and guard.yaml of tests/data/scripts, its new_customer journey (unless
    left out) and the named journeys of tests/data/lifecycle_b."""
    root = tmp_path / "scripts"
    (root / "journeys").mkdir(parents=True)
    for name in ("faq.yaml", "guard.yaml"):
        shutil.copy(SCRIPTS / name, root / name)
    if new_customer:
        shutil.copy(SCRIPTS / "journeys" / "new_customer.yaml", root / "journeys" / "new_customer.yaml")
    for journey in journeys:
        shutil.copy(LIFECYCLE / f"{journey}.yaml", root / "journeys" / f"{journey}.yaml")
    return root
