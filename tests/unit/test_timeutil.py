"""Event time parsing: the cached RFC 3339 fast path must agree with the full parser on every input."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crm_stream.operators.events.timeutil import (
    MAX_TS_MS,
    _parse_ts_full,
    parse_rfc3339_fast,
    parse_ts,
    to_rfc3339,
    utc_offset_minutes,
)
from tests.events import T0


def outcome(parse: Callable[[Any], Any], value: Any) -> tuple[Any, ...]:
    """What a parser does with a value: its result, or its exception's type and message."""
    try:
        return ("ok", parse(value))
    except Exception as exc:
        return ("error", type(exc).__name__, str(exc))


@st.composite
def rfc3339_like(draw: st.DrawFn) -> str:
    """Mostly the canonical shape, with every component pushed past its edges now and then."""
    year = draw(st.integers(1969, 2200) | st.sampled_from([1, 1968, 2201, 9999]))
    month, day = draw(st.integers(0, 13)), draw(st.integers(0, 32))
    sep = draw(st.sampled_from(["T", "t", " ", "x", "_"]))
    hour, minute, second = draw(st.integers(0, 25)), draw(st.integers(0, 61)), draw(st.integers(0, 61))
    frac = draw(
        st.sampled_from(["", "", ".000", ".123", ".999", ".", ".1", ".12", ".1234", ".123456", ".1234567", ",123", ".12a"])
        | st.from_regex(r"\.[0-9]{1,7}", fullmatch=True)
    )
    tz = draw(
        st.sampled_from(["Z", "z", "", "+00:00", "-00:00", "+0800", "+08", "+08:00:00", "+01:60", "+23:59", "-23:59", "+24:00"])
        | st.builds("{}{:02d}:{:02d}".format, st.sampled_from("+-"), st.integers(0, 25), st.integers(0, 99))
    )
    text = f"{year:04d}-{month:02d}-{day:02d}{sep}{hour:02d}:{minute:02d}:{second:02d}{frac}{tz}"
    if draw(st.integers(0, 9)) == 0:  # a non-ASCII digit somewhere
        i = draw(st.integers(0, len(text) - 1))
        text = text[:i] + "\u0663" + text[i + 1 :]
    pad = st.sampled_from(["", "", "", " ", "\t", "\n"])
    return draw(pad) + text + draw(pad)


@settings(max_examples=3000, deadline=None)
@given(
    rfc3339_like()
    | st.text(max_size=45)
    | st.from_regex(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{3})?(Z|[+-]\d\d:\d\d)", fullmatch=True)
)
def test_parse_ts_agrees_with_the_full_parser_on_any_string(text):
    expected = outcome(_parse_ts_full, text)
    assert outcome(parse_ts, text) == expected  # cold caches for this text's components ...
    assert outcome(parse_ts, text) == expected  # ... and warm
    fast = parse_rfc3339_fast(text)
    if fast is not None:
        assert fast == (expected[1], utc_offset_minutes(text))


@settings(max_examples=500, deadline=None)
@given(
    st.integers(-(2**64), 2**64)
    | st.sampled_from([-1, 0, 1, MAX_TS_MS - 1, MAX_TS_MS, T0])
    | st.booleans()
    | st.floats()
    | st.none()
    | st.lists(st.integers(), max_size=2)
)
def test_parse_ts_agrees_with_the_full_parser_on_other_values(value):
    assert outcome(parse_ts, value) == outcome(_parse_ts_full, value)


@pytest.mark.parametrize(
    "text, ms, offset",
    [
        ("2026-01-01T08:00:00+08:00", T0, 480),
        ("2026-01-01T00:00:00Z", T0, 0),
        ("2026-01-01t00:00:00.250z", T0 + 250, 0),
        ("2025-12-31 19:00:00.001-05:00", T0 + 1, -300),
        ("2026-01-01T05:30:00+05:30", T0, 330),
        ("2026-01-01T01:00:00+01:60", T0 - 3_600_000, 120),  # fromisoformat reads 60 minutes as an hour; so must we
        ("1970-01-01T00:00:00Z", 0, 0),
    ],
)
def test_canonical_strings_take_the_fast_path(text, ms, offset):
    assert parse_rfc3339_fast(text) == (ms, offset) == (_parse_ts_full(text), utc_offset_minutes(text))
    assert parse_ts(text) == ms


@pytest.mark.parametrize(
    "text",
    [
        " 2026-01-01T00:00:00Z",
        "2026-01-01T00:00:00Z ",
        "2026-01-01T00:00:00.1Z",
        "2026-01-01T00:00:00,123Z",
        "2026-01-01T00:00:00+0800",
        "2026-01-01T00:00Z",
        "2026-02-30T00:00:00Z",
        "2026-01-01T24:00:00Z",
        "2026-01-01T00:00:60Z",
        "2026-01-01T00:00:00+24:00",
        "1969-12-31T23:59:59.999Z",
        "2200-01-01T00:00:00Z",
        "2026-01-01X00:00:00Z",
        "2026-01-01T00:00:00",
        "",
    ],
)
def test_anything_else_is_left_to_the_full_parser(text):
    assert parse_rfc3339_fast(text) is None
    assert outcome(parse_ts, text) == outcome(_parse_ts_full, text)


def test_to_rfc3339_round_trips():
    assert parse_ts(to_rfc3339(T0 + 123)) == T0 + 123
