"""One normaliser for everything we compare: customers type full-width, traditional, emoji and typos."""
from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

import zhconv

_SPACES = re.compile(r"\s+")


def _is_noise(char: str) -> bool:
    # Punctuation (P*), symbols and emoji (S*), and format/control marks (C*, e.g. ZWJ, VS-16)
    return unicodedata.category(char)[0] in "PSC"


@lru_cache(maxsize=65536)
def normalize(text: str) -> str:
    """Full-width → half-width, traditional → simplified, lower case, punctuation and emoji → space."""
    text = unicodedata.normalize("NFKC", text)
    text = zhconv.convert(text, "zh-cn")
    text = text.lower()
    text = "".join(" " if _is_noise(c) else c for c in text)
    return _SPACES.sub(" ", text).strip()
