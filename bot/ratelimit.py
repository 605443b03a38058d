"""Token bucket for outbound traffic, driven by the injected clock."""
from __future__ import annotations

from datetime import datetime


class TokenBucket:
    """`rate` tokens per second up to `burst`; `take(now)` returns 0 when a token was taken,
    else how many seconds until one will be there (nothing is taken then)."""

    def __init__(self, rate: float, burst: int, now: datetime) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self.updated = now

    def take(self, now: datetime) -> float:
        elapsed = max(0.0, (now - self.updated).total_seconds())
        self.tokens = min(self.burst, self.tokens + elapsed * self.rate)
        self.updated = max(self.updated, now)
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate
