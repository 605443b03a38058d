"""Messages that are not questions for the FAQ: nothing to match, and nobody to call.

Empty, punctuation- and emoji-only messages (「👍」「。。。」) and acknowledgements (「好的」「嗯嗯」「谢谢」「收到」)
close a turn; handing them to a guide only makes the bot fall silent on the next real question.
"""
from __future__ import annotations

import re

from intents.normalize import normalize

_ACK = re.compile(
    r"^(?:好的?|好滴|好哒|好嘞|好吧|嗯+|恩+|哦+|噢+|喔+|ok|okay|okk|收到|谢谢|多谢|谢了|感谢|thx|thanks?|thank you|"
    r"知道了?|明白了?|了解|懂了|行|可以|没问题|没事|不用了|不客气|辛苦了?|拜拜|再见|bye|好的呢)"
    r"(?:[ ,]*(?:好的?|嗯+|哦+|谢谢|thanks?|thank you|了|啦|呀|哈+|呢|哒|啊|的|吧|你|您|亲|哈喽|ok|收到))*$")


def is_empty(text: str) -> bool:
    """Nothing a matcher could read: blank, punctuation, emoji, zero-width marks."""
    return not normalize(text)


def is_acknowledgement(text: str) -> bool:
    """A closing 「好的」「嗯嗯」「谢谢啦」「ok thanks」: said to end a turn, not to ask anything."""
    folded = normalize(text)
    return len(folded) <= 16 and bool(_ACK.match(folded))
