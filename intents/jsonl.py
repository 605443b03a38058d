"""Reading labelled JSONL files with errors that name the file, the line and the expected shape."""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def read_jsonl(path: Path, build: Callable[[dict[str, Any]], T], expected: str) -> list[T]:
    """One object per non-blank line through `build`; ValueError `PATH:LINE: … — expected …` otherwise."""
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(build(json.loads(line)))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"{path}:{number}: {exc} — expected {expected}") from None
    return rows
