"""A first, lexicon-based sentiment score for support text, English and Chinese.

Deliberately simple and dependency-free: the profile needs a number now; the
alerts work replaces the scoring with a maintained lexicon and an online model.
Scores lie in [-1, 1]; negative means unhappy.
"""

from __future__ import annotations

import re

_NEGATIVE_EN = {
    "unacceptable", "terrible", "awful", "worst", "angry", "furious", "broken", "useless", "refund",
    "never", "scam", "disappointed", "ridiculous", "horrible", "hate", "waste", "complain", "complaint",
    "again", "still", "third", "cancel", "wrong", "late", "damaged", "rude", "lawyer", "fraud",
}
_POSITIVE_EN = {"thanks", "thank", "great", "love", "perfect", "excellent", "happy", "awesome", "helpful", "good"}
_NEGATIVE_ZH = ("破", "难用", "垃圾", "太差", "差劲", "退款", "投诉", "生气", "愤怒", "骗", "坏了", "失望", "再也不", "第三次", "怎么回事")
_POSITIVE_ZH = ("谢谢", "感谢", "很好", "满意", "喜欢", "棒", "不错")
_WORD = re.compile(r"[A-Za-z']+")


def score_text(text: str) -> float:
    words = [w.lower() for w in _WORD.findall(text)]
    negative = sum(w in _NEGATIVE_EN for w in words) + sum(text.count(t) for t in _NEGATIVE_ZH)
    positive = sum(w in _POSITIVE_EN for w in words) + sum(text.count(t) for t in _POSITIVE_ZH)
    exclaim = text.count("!") + text.count("！")
    caps = sum(1 for w in _WORD.findall(text) if len(w) >= 3 and w.isupper())
    raw = positive - negative - 0.5 * min(exclaim, 6) * (1 if negative or caps else 0.3) - 0.5 * min(caps, 4)
    return max(-1.0, min(1.0, raw / 4.0))
