"""Redact personal data from free text before it leaves the engine.

Text that leaves the engine (alert excerpts and reasons, dead-letter records,
log lines, what is kept to learn from agents' feedback) can carry what
customers type: e-mail addresses, phone numbers, card numbers. ``redact``
replaces each with a placeholder (``[email]``, ``[phone]``, ``[card]``) and
leaves everything else, word for word, so an agent still reads the message.

What counts, chosen to catch what people write without eating order numbers:

* e-mail: ``local@domain.tld`` (ASCII; a Chinese sentence around it is kept);
* card: 13-19 digits, optionally in groups split by single spaces or dashes,
  first digit 2-6 (the payment-card ranges) and a valid Luhn check digit, so
  an order number of the same length is left alone 9 times out of 10;
* phone: a ``+`` prefix and 8-15 digits in any grouping (``+44 20 7946 0958``,
  ``+1 (415) 555-2671``), or a ``00`` prefix and grouped digits (``0086 138 0013 8000``); or,
  without a prefix, 9-15 digits split by spaces, dashes, dots or brackets
  (``(415) 555-2671``, ``020 7946 0958``, ``415.555.2671``), not a date; or an
  unbroken run shaped like a national number: a Chinese mobile ``1[3-9]`` + 9
  digits, a trunk-prefixed ``0`` + 9-10 digits, a North-American 10 digits.

It is a pattern filter, not a guarantee: a number written in words, or an
unbroken 12-digit international number without ``+``, passes. Pure and cheap:
text without a digit or ``@`` is returned as it is.

>>> redact("Mail me at jo.smith+crm@example.co.uk or call +44 20 7946 0958")
'Mail me at [email] or call [phone]'
>>> redact("card 4111 1111 1111 1111, order 1234567890123")
'card [card], order 1234567890123'
>>> redact("我的手机是13800138000，邮箱abc@qq.com谢谢")
'我的手机是[phone]，邮箱[email]谢谢'
"""

from __future__ import annotations

import re
from typing import Any

EMAIL = "[email]"
PHONE = "[phone]"
CARD = "[card]"

_EMAIL = re.compile(
    r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*\.[A-Za-z]{2,}"
)
# Digits in groups split by one space or dash; not glued to a word or to more digits.
_CARD = re.compile(r"(?<![\w.+-])\d(?:[ -]?\d){12,18}(?![\w]|[.-]\d)", re.ASCII)
# A phone-like stretch: an optional +/00 prefix, then digit groups with one separator (or a bracket pair)
# between them. Whether it is a phone is then decided by _is_phone from its digits and separators.
# Possessive quantifiers: a run of digits is never split between groups, so a long hostile run cannot backtrack.
_PHONE = re.compile(
    r"(?<![\w+.-])(?:\+|\b00)?[ ]?(?:\(\d{1,5}+\)|\d++)(?:(?:[ .-]|[ ]?\(\d{1,5}+\)[ ]?)\d++|[ ]?\(\d{1,5}+\)[ ]?){0,7}+(?![\w])",
    re.ASCII,
)
_DATE = re.compile(r"\d{4}[-./]\d{1,2}[-./]\d{1,2}|\d{1,2}[-./]\d{1,2}[-./]\d{4}", re.ASCII)
_IPV4 = re.compile(r"\d{1,3}(?:\.\d{1,3}){3}", re.ASCII)
_NON_DIGIT = re.compile(r"\D", re.ASCII)
_INTERNATIONAL_PREFIX = re.compile(r"(?:\+|(?<!\d)00)\d{1,3}[ -]$", re.ASCII)
_DIGIT = re.compile(r"\d", re.ASCII)
_NATIONAL = re.compile(r"1[3-9]\d{9}|0\d{9,10}|[2-9]\d{2}[2-9]\d{6}", re.ASCII)


def luhn_ok(digits: str) -> bool:
    """The Luhn check every payment card number passes.

    >>> luhn_ok("4111111111111111"), luhn_ok("4111111111111112")
    (True, False)
    """
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _card(match: re.Match[str]) -> str:
    digits = _NON_DIGIT.sub("", match.group())
    prefix = _INTERNATIONAL_PREFIX.search(match.string, max(0, match.start() - 6), match.start())
    if prefix and len(_NON_DIGIT.sub("", prefix.group().lstrip("+"))) + len(digits) <= 15:
        return match.group()  # the rest of "+1 ..." / "0086 ...", a phone number: the phone pass takes all of it
    if 13 <= len(digits) <= 19 and digits[0] in "23456" and luhn_ok(digits):
        return CARD
    return match.group()


def _is_phone(text: str) -> bool:
    digits = _NON_DIGIT.sub("", text)
    body = text.lstrip(" ")
    if body.startswith("+"):
        return 8 <= len(digits) <= 15
    if body.startswith("00") and not body.isdigit():  # unbroken, it reads as a zero-padded order number
        return 8 <= len(digits) - 2 <= 15
    if not 9 <= len(digits) <= 15:
        return False
    separators = _DIGIT.sub("", body)
    if not separators:
        return _NATIONAL.fullmatch(digits) is not None
    if _DATE.fullmatch(body) or _IPV4.fullmatch(body):
        return False
    if set(separators) == {"."} and len(separators) < 2:
        return False  # a decimal number
    return True


def _phone(match: re.Match[str]) -> str:
    text = match.group()
    stripped = text.strip(" ")
    if not _is_phone(stripped):
        return text
    return text[: len(text) - len(text.lstrip(" "))] + PHONE + text[len(text.rstrip(" ")) :]


def redact(text: str) -> str:
    """``text`` with e-mail addresses, card numbers and phone numbers replaced by placeholders."""
    if "@" in text:
        text = _EMAIL.sub(EMAIL, text)
    if _DIGIT.search(text) is None:
        return text
    text = _CARD.sub(_card, text)
    return _PHONE.sub(_phone, text)


def redact_value(value: Any) -> Any:
    """``redact`` applied to every string inside a JSON-like value (dicts, lists); other values unchanged."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: redact_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_value(v) for v in value]
    return value
