"""Event time: parsing the contract's two formats and printing RFC 3339.

All internal times are integer milliseconds since the epoch, UTC. Logic takes
time from events or from an injected clock, never from the wall.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

MS_PER_HOUR = 3_600_000
MS_PER_DAY = 86_400_000
# Anything outside this is certainly a unit or typing error, not an event time.
MIN_TS_MS = 0  # 1970-01-01
MAX_TS_MS = 7_258_118_400_000  # 2200-01-01
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_ONE_MS = timedelta(milliseconds=1)


class TimeFormatError(ValueError):
    pass


def parse_ts(value: object) -> int:
    """Epoch milliseconds (int) or RFC 3339 with an offset (str) -> UTC epoch ms."""
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
    dt = datetime.fromtimestamp(ms / 1000, tz=timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def days_between(earlier_ms: int, later_ms: int) -> float:
    return (later_ms - earlier_ms) / MS_PER_DAY
