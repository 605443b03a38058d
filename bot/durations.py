"""Parsing of the small time languages operators write: `3d`, `36h`, `1d4h`, `10:00-20:00`."""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import time, timedelta

_DURATION = re.compile(r"^(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


def parse_duration(text: str) -> timedelta:
    """`'3d'`, `'36h'`, `'1d4h'`, `'0m'` → timedelta; ValueError with an operator-friendly message otherwise."""
    raw = str(text).strip().replace(" ", "")
    match = _DURATION.match(raw)
    if not raw or not match or not any(match.groups()):
        raise ValueError(f"expected a duration like '3d', '36h' or '1d4h', got {text!r}")
    w, d, h, m, s = (int(g) if g else 0 for g in match.groups())
    return timedelta(weeks=w, days=d, hours=h, minutes=m, seconds=s)


def parse_clock_time(text: str) -> time:
    """`'09:30'` → time(9, 30)."""
    match = re.fullmatch(r"(\d{1,2}):(\d{2})", str(text).strip())
    if not match or int(match.group(1)) > 24 or int(match.group(2)) > 59:
        raise ValueError(f"expected a time of day like '09:30', got {text!r}")
    hour, minute = int(match.group(1)), int(match.group(2))
    return time(0, 0) if hour == 24 else time(hour, minute)


@dataclass(frozen=True)
class DailyWindow:
    """A local time-of-day range; `start > end` wraps midnight (`21:00-09:00`)."""

    start: time
    end: time

    @classmethod
    def parse(cls, text: str) -> "DailyWindow":
        parts = str(text).split("-")
        if len(parts) != 2:
            raise ValueError(f"expected a time range like '10:00-20:00', got {text!r}")
        try:
            window = cls(parse_clock_time(parts[0]), parse_clock_time(parts[1]))
        except ValueError:
            raise ValueError(f"expected a time range like '10:00-20:00', got {text!r}") from None
        if window.start == window.end:
            raise ValueError(f"time range {text!r} is empty — start and end must differ")
        return window

    def contains(self, t: time) -> bool:
        if self.start < self.end:
            return self.start <= t < self.end
        return t >= self.start or t < self.end

    def __str__(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M}"


def spoken_duration(length: timedelta) -> str:
    """A duration as a member reads it: 「1 小时」, 「30 分钟」, 「1 天 2 小时」, 「45 秒」 (never `1:00:00`)."""
    seconds = max(0, int(length.total_seconds()))
    parts = []
    for unit, size in (("天", 86400), ("小时", 3600), ("分钟", 60), ("秒", 1)):
        if seconds >= size:
            parts.append(f"{seconds // size} {unit}")
            seconds %= size
    return " ".join(parts) or "0 秒"
