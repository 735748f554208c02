"""Event time: parsing the contract's two formats and printing RFC 3339.

All internal times are integer milliseconds since the epoch, UTC. Logic takes
time from events or from an injected clock, never from the wall.

Fast path: ``parse_rfc3339_fast`` reads the one shape producers actually send
(``YYYY-MM-DDTHH:MM:SS[.fff](Z|±HH:MM)``) from four small caches (date, clock
minute, seconds, offset), each entry validated once (digit by digit; dates and
offsets by ``datetime`` too), so
it costs a few dict look-ups instead of ``fromisoformat`` plus an aware-datetime
subtraction. Anything else, however odd, goes to the full parser, so results are
the same for every input.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from crm_stream.errors import InputError

MS_PER_HOUR = 3_600_000
MS_PER_DAY = 86_400_000
# Anything outside this is certainly a unit or typing error, not an event time.
MIN_TS_MS = 0  # 1970-01-01
MAX_TS_MS = 7_258_118_400_000  # 2200-01-01
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)


class TimeFormatError(InputError, ValueError):
    pass


def parse_ts(value: object) -> int:
    """Epoch milliseconds (int) or RFC 3339 with an offset (str) -> UTC epoch ms."""
    if type(value) is str:
        fast = parse_rfc3339_fast(value)
        if fast is not None:
            return fast[0]
    elif type(value) is int and MIN_TS_MS <= value < MAX_TS_MS:
        return value
    return _parse_ts_full(value)


def _parse_ts_full(value: object) -> int:
    """The complete parser, with every error message: the reference the fast path must agree with."""
    if isinstance(value, bool):
        raise TimeFormatError(f"must be an RFC 3339 string or epoch milliseconds, got {value!r}")
    if isinstance(value, int):
        ms = value
    elif isinstance(value, str):
        text = value.strip()
        if len(text) < 20 or len(text) > 40 or text[10] not in "Tt ":
            raise TimeFormatError(f"{value!r} is not RFC 3339 (expected e.g. 2026-11-22T14:03:00+08:00)")
        if text[-1] in "zZ":
            text = text[:-1] + "+00:00"
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            raise TimeFormatError(f"{value!r} is not RFC 3339 (expected e.g. 2026-11-22T14:03:00+08:00)") from None
        if parsed.tzinfo is None:
            raise TimeFormatError(f"{value!r} has no UTC offset: add Z or +HH:MM")
        ms = (parsed - _EPOCH) // _ONE_MS
    else:
        raise TimeFormatError(f"must be an RFC 3339 string or epoch milliseconds, got {type(value).__name__}")
    if not MIN_TS_MS <= ms < MAX_TS_MS:
        raise TimeFormatError(f"{value!r} is outside 1970..2200: is it seconds or microseconds instead of milliseconds?")
    return ms


# -- the RFC 3339 fast path ----------------------------------------------------------------
# Each cache maps the exact text of one component to its value; a text is only ever added after it
# was checked digit by digit (dates and offsets also by ``datetime``), so a hit means the full
# parser would accept that component too. Every cache is bounded by construction:
# dates 1969..2200 (~85 k), 3 x 1440 clock minutes, 60 + 60,000 second texts, ~2.9 k offsets.

_DIGITS = frozenset("0123456789")
_DAYS: dict[str, int] = {}  # "2026-01-01" -> ms of its midnight, as if UTC
_MINUTES: dict[str, int] = {}  # "T14:03" -> ms since midnight
_SECONDS: dict[str, int] = {}  # ":07" or ":07.250" -> ms
_OFFSETS: dict[str, tuple[int, int | None]] = {"Z": (0, 0), "z": (0, 0)}  # "+08:00" -> (offset ms, offset minutes)


def parse_rfc3339_fast(text: str) -> tuple[int, int | None] | None:
    """(UTC epoch ms, offset minutes) for a canonical RFC 3339 string, or None to say "ask ``_parse_ts_full``".

    Equal to ``(parse_ts(text), utc_offset_minutes(text))`` whenever it is not None; it never raises.
    """
    last = text[-1:]
    if last == "Z" or last == "z":
        seconds, offset = text[16:-1], _OFFSETS[last]
    else:
        seconds, offset = text[16:-6], _OFFSETS.get(text[-6:])  # type: ignore[assignment]
    day = _DAYS.get(text[:10])
    minute = _MINUTES.get(text[10:16])
    second = _SECONDS.get(seconds)
    if day is None or minute is None or second is None or offset is None:
        if not _learn(text):
            return None
        return parse_rfc3339_fast(text)
    ms = day + minute + second - offset[0]
    if not MIN_TS_MS <= ms < MAX_TS_MS:
        return None
    return ms, offset[1]


def _learn(text: str) -> bool:
    """Validate a canonical-looking string's components and cache them; False if any is not canonical."""
    if len(text) < 20:
        return False
    zulu = text[-1] in "Zz"
    seconds = text[16:-1] if zulu else text[16:-6]
    parts = (_day_ms(text[:10]), _minute_ms(text[10:16]), _second_ms(seconds), (0, 0) if zulu else _offset(text[-6:]))
    if None in parts:
        return False
    _DAYS[text[:10]], _MINUTES[text[10:16]], _SECONDS[seconds] = parts[0], parts[1], parts[2]  # type: ignore[assignment]
    if not zulu:
        _OFFSETS[text[-6:]] = parts[3]  # type: ignore[assignment]
    return True


def _digits(text: str) -> bool:
    return bool(text) and all(c in _DIGITS for c in text)


def _day_ms(text: str) -> int | None:
    """'YYYY-MM-DD' (ASCII digits, a real date, 1969..2200) -> ms of its midnight as if UTC."""
    if len(text) != 10 or text[4] != "-" or text[7] != "-" or not _digits(text[:4] + text[5:7] + text[8:]):
        return None
    year = int(text[:4])
    if not 1969 <= year <= 2200:
        return None
    try:
        day = date(year, int(text[5:7]), int(text[8:]))
    except ValueError:
        return None
    return (day.toordinal() - _EPOCH.toordinal()) * MS_PER_DAY


def _minute_ms(text: str) -> int | None:
    """'THH:MM' (separator T, t or space, as ``parse_ts`` allows) -> ms since midnight."""
    if len(text) != 6 or text[0] not in "Tt " or text[3] != ":" or not _digits(text[1:3] + text[4:]):
        return None
    hour, minute = int(text[1:3]), int(text[4:])
    if hour > 23 or minute > 59:
        return None
    return hour * MS_PER_HOUR + minute * 60_000


def _second_ms(text: str) -> int | None:
    """':SS' or ':SS.fff' (exactly three fraction digits: whole milliseconds) -> ms."""
    if len(text) not in (3, 7) or text[0] != ":" or not _digits(text[1:3]):
        return None
    if len(text) == 7 and (text[3] != "." or not _digits(text[4:])):
        return None
    second = int(text[1:3])
    if second > 59:
        return None
    return second * 1000 + (int(text[4:]) if len(text) == 7 else 0)


def _offset(text: str) -> tuple[int, int | None] | None:
    """'±HH:MM' -> (offset ms, minutes), as ``fromisoformat`` reads it (it allows e.g. +01:60), or None."""
    if len(text) != 6 or text[0] not in "+-" or text[3] != ":" or not _digits(text[1:3] + text[4:]):
        return None
    try:
        parsed = datetime.fromisoformat("2000-01-01T00:00:00" + text)
    except ValueError:
        return None
    return parsed.utcoffset() // _ONE_MS, utc_offset_minutes(text)  # type: ignore[operator]


def utc_offset_minutes(value: object) -> int | None:
    """The offset an RFC 3339 time was written with: where the customer's clock is (None for epoch ms)."""
    if not isinstance(value, str):
        return None
    text = value.strip()
    if text[-1:] in ("Z", "z"):
        return 0
    tail = text[-6:]
    if len(tail) == 6 and tail[0] in "+-" and tail[3] == ":" and tail[1:3].isdigit() and tail[4:].isdigit():
        minutes = int(tail[1:3]) * 60 + int(tail[4:])
        return -minutes if tail[0] == "-" else minutes
    return None


def to_rfc3339(ms: int) -> str:
    """UTC, millisecond precision, ``Z`` suffix: one canonical form for outputs."""
    dt = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def days_between(earlier_ms: int, later_ms: int) -> float:
    return (later_ms - earlier_ms) / MS_PER_DAY
