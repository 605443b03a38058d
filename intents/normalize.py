"""One normaliser for everything we compare: customers type full-width, traditional, emoji and typos."""
from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

import zhconv

_SPACES = re.compile(r"\s+")
_MENTION = re.compile(r"[@＠][^\s@＠]+\s*")


def _is_noise(char: str) -> bool:
    # Punctuation (P*), symbols and emoji (S*), and format/control marks (C*, e.g. ZWJ, VS-16)
    return unicodedata.category(char)[0] in "PSC"


@lru_cache(maxsize=65536)
def fold(text: str) -> str:
    """Full-width → half-width, traditional → simplified, lower case; symbols kept (➕ means 加 to the guard)."""
    return zhconv.convert(unicodedata.normalize("NFKC", text), "zh-cn").lower()


@lru_cache(maxsize=65536)
def normalize(text: str) -> str:
    """Folded, with punctuation and emoji → space: what the FAQ matchers compare."""
    return _SPACES.sub(" ", "".join(" " if _is_noise(c) else c for c in fold(text))).strip()


def squeeze(text: str) -> str:
    """Folded, with everything but letters and digits removed: 兼 职.日-结 → 兼职日结 (the guard's view)."""
    return "".join(c for c in fold(text) if unicodedata.category(c)[0] in "LN")


def without_mentions(text: str) -> str:
    """「@山茶集小助手 什么时候发货」 → 「什么时候发货」: who a group message addresses is not what it asks."""
    return _MENTION.sub(" ", text).strip()
