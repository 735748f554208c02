"""The decoder's fast path against its full validation: same event, same dead letter, for any input.

``Decoder.decode_fast`` may decline anything (the full path then answers), but whatever it accepts
must come out exactly as ``Decoder.decode_full`` makes it: same keys in the same order, same values
of the same types. The router, which calls the two directly, must still dead-letter and shard as before.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crm_stream.config import settings as config
from crm_stream.operators.events.router import DEAD, Router, identity_route, shard_key
from crm_stream.operators.events.schema import (
    _BOOLEAN,
    _CURRENCY,
    _FAST,
    _INTEGER,
    _ITEMS,
    _NUMBER,
    _ONE_OF,
    _TEXT,
    ENVELOPE_OPTIONAL,
    EVENT_TYPES,
    DeadLetter,
    Decoder,
    Origin,
    _id,
)
from crm_stream.operators.io import jsonutil
from crm_stream.operators.io.interface import DEADLETTER, Raw
from crm_stream.operators.stages.identity import ERASE_LINKS_ONLY
from load.generator import EventGenerator
from tests.events import T0, event
from tests.unit.test_schema import VALID

_FAST_ID, _FAST_SHORT = _id, ENVELOPE_OPTIONAL["source"]
RATES = {"USD": 1.0, "EUR": 1.08, "CNY": 0.138}
DECODER = Decoder(RATES, "USD", max_bytes=50_000)
ORIGIN = Origin("crm.clickstream", 3, 99)


def typed(value: Any) -> str:
    """A form where 1, 1.0 and True differ, and key order counts."""
    return repr(value)


def assert_same(raw: bytes) -> dict[str, Any] | DeadLetter:
    """decode == decode_full on ``raw``, and decode_fast, when it answers, == decode_full too."""
    full = DECODER.decode_full(raw, ORIGIN)
    fast = DECODER.decode_fast(raw)
    if fast is not None:
        assert isinstance(full, dict), f"fast path accepted what the full path rejects: {full}"
        assert typed(fast) == typed(full)
    out = DECODER.decode(raw, ORIGIN)
    if isinstance(full, DeadLetter):
        assert out == full
    else:
        assert typed(out) == typed(full)
    return full


# -- events: valid ones (in every form the full path normalises), then at most one thing wrong -----------

odd_text = st.sampled_from(["", " ", "\t\n", "x\u00a0", "\u3000x", "a" * 257, " " + "a" * 256 + " ", "a" * 2049, "a" * 20_001])
odd_number = st.sampled_from([0, 0.0, -0.0, -1, -0.5, 1e12 + 1, 10**12 + 1, 2**63, 2**64 - 1, 1e308, 100_001, 11, 5.5])
anything = st.none() | st.booleans() | odd_text | odd_number | st.just([]) | st.just({}) | st.just([1]) | st.text(max_size=5)


def text(limit: int) -> st.SearchStrategy[str]:
    word = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=10).filter(lambda t: t.strip() != "")
    padded = word.map(lambda t: f" {t}\t")
    edges = st.sampled_from(["a" * limit, " " + "a" * limit + " ", "p-1", "小说", "é"])
    return word | word | padded | edges


def number(low: float, exclusive: bool, high: float) -> st.SearchStrategy[Any]:
    good = st.floats(low, high, exclude_min=exclusive) | st.integers(int(low) + exclusive, 10**6)
    return good | good | st.sampled_from([high, int(high)] + ([] if exclusive else [low, int(low), -0.0]))


def bad_number(low: float, exclusive: bool, high: float) -> st.SearchStrategy[Any]:
    # NaN and infinity cannot be written in JSON (orjson writes null, and rejects 1e400 on reading): they test null here
    edges = [high * (1 + 1e-15), int(high) + 1, float("nan"), float("inf"), True, False, "1"] + (
        [low, int(low), -0.0] if exclusive else [-1e-300]
    )
    return st.sampled_from(edges) | odd_number


def integer(low: int, high: int) -> st.SearchStrategy[Any]:
    good = st.integers(low, high)
    return good | good | st.sampled_from([low, high, float(low), float(high)]) | good.map(float)


def bad_integer(low: int, high: int) -> st.SearchStrategy[Any]:
    return st.sampled_from([low - 1, high + 1, float(low - 1), float(high + 1), low + 0.5, True, False, str(low)]) | odd_number


def one_of(words: frozenset[str]) -> st.SearchStrategy[str]:
    word = st.sampled_from(sorted(words))
    return word | word | word.map(lambda w: f" {w}\t")


def bad_one_of(words: frozenset[str]) -> st.SearchStrategy[Any]:
    return st.sampled_from(sorted(words)).map(str.upper) | odd_text | st.booleans()


currency = st.sampled_from(["USD", "EUR", "CNY", "eur", "Usd", " EUR", "eUr "])
bad_currency = st.sampled_from(["XXX", "EU", "EURO", "€UR", "ÉUR", "us1", "", "ß12"]) | st.integers(0, 3)


def item(broken: bool = False) -> st.SearchStrategy[dict[str, Any]]:
    fields = {"product_id": text(256), "category": text(2048), "price": number(0.0, False, 1e12)}
    quantity = integer(1, 100_000)
    if broken:  # one field of one item wrong
        return st.sampled_from(sorted(fields) + ["quantity"]).flatmap(
            lambda name: st.fixed_dictionaries(
                {**fields, name: (bad_integer(1, 100_000) | st.none()) if name == "quantity" else anything}
            )
        )
    return st.fixed_dictionaries(fields, optional={"quantity": quantity, "sku": st.text(max_size=3)})


items = st.lists(item(), max_size=3)
bad_items = (
    st.tuples(st.lists(item(), max_size=2), item(broken=True)).map(lambda t: [*t[0], t[1]])
    | st.lists(item() | anything, min_size=1, max_size=2)
    | anything
    | st.just([{"product_id": "p"}] * 501)
)


def value_for(check: Any, bad: bool = False) -> st.SearchStrategy[Any]:
    """A value the checker accepts (in any form it normalises), or with ``bad`` one near its edges that it may not."""
    kind, a, b = _FAST[check]
    if kind == _TEXT:
        return (odd_text | anything) if bad else text(a)
    if kind == _NUMBER:
        return bad_number(a[0], a[1], b) if bad else number(a[0], a[1], b)
    if kind == _INTEGER:
        return bad_integer(a, b) if bad else integer(a, b)
    if kind == _BOOLEAN:
        return anything if bad else st.booleans()
    if kind == _ONE_OF:
        return bad_one_of(a) if bad else one_of(a)
    if kind == _CURRENCY:
        return bad_currency if bad else currency
    assert kind == _ITEMS
    return bad_items if bad else items


rfc3339 = st.builds(
    "20{:02d}-{:02d}-{:02d}{}{:02d}:{:02d}:{:02d}{}{}".format,
    st.integers(0, 99),
    st.integers(1, 12),
    st.integers(1, 28),
    st.sampled_from("Tt "),
    st.integers(0, 23),
    st.integers(0, 59),
    st.integers(0, 59),
    st.sampled_from(["", ".000", ".250", ".999", ".1", ".123456"]),
    st.sampled_from(["Z", "z", "+08:00", "-05:00", "+05:30", "+00:00", "-00:00", "+01:60", "+14:00", "-12:00"]),
)
timestamp = st.integers(0, 7_258_118_399_999) | st.integers(T0 - 10**9, T0 + 10**9) | rfc3339 | rfc3339.map(lambda s: f" {s} ")
bad_timestamp = st.sampled_from(
    [
        -1,
        7_258_118_400_000,
        True,
        1.5e12,
        None,
        "",
        "2026-01-01T00:00:00",
        "1969-12-31T23:59:59Z",
        "2026-02-30T00:00:00Z",
        "2026-01-01T00:00:00+24:00",
        "2026-01-01T00:00:00.1234567Z",
    ]
) | rfc3339.map(lambda s: s.replace(":", ";", 1))


@st.composite
def events(draw: st.DrawFn) -> dict[str, Any]:
    """A valid event of any type, with unknown extras; then, half the time, one field made wrong or dropped."""
    kind = draw(st.sampled_from(sorted(EVENT_TYPES)))
    spec = EVENT_TYPES[kind]
    ev: dict[str, Any] = {
        "event_id": draw(text(256)),
        "type": draw(st.sampled_from([kind, kind, kind, f" {kind} "])),
        "ts": draw(timestamp),
    }
    who = draw(st.sampled_from(["customer", "customer", "visitor", "both"]))
    if who != "visitor":
        ev["customer_id"] = draw(text(256))
    if who != "customer":
        ev["anonymous_id"] = draw(text(256))
    if draw(st.booleans()):
        ev["source"] = draw(text(2048) | st.none())
    checks = {**spec.required, **spec.optional}
    for name, check in checks.items():
        if name in spec.required or draw(st.booleans()):
            ev[name] = draw(value_for(check) | st.none()) if name in spec.optional else draw(value_for(check))
    if spec.at_least_one_optional and all(ev.get(name) is None for name in spec.optional):
        name = draw(st.sampled_from(sorted(spec.optional)))
        ev[name] = draw(value_for(spec.optional[name]))
    ev.update(
        draw(
            st.dictionaries(
                st.sampled_from(["_utc_offset", "amount_base", "referrer", "device", "results"]), anything, max_size=2
            )
        )
    )
    if draw(st.booleans()):  # one thing wrong
        envelope = {"event_id": _FAST_ID, "customer_id": _FAST_ID, "anonymous_id": _FAST_ID, "source": _FAST_SHORT}
        name = draw(st.sampled_from(sorted({**envelope, **checks, "ts": None, "type": None})))
        if draw(st.integers(0, 3)) == 0:
            ev.pop(name, None)
        elif name == "ts":
            ev["ts"] = draw(bad_timestamp)
        elif name == "type":
            ev["type"] = draw(st.sampled_from([kind.upper(), "bogus", "", None, 3, [kind]]))
        else:
            ev[name] = draw(value_for({**envelope, **checks}[name], bad=True))
    for name in draw(st.lists(st.sampled_from(sorted(ev)), max_size=2)):  # key order should not matter either
        ev[name] = ev.pop(name)
    return ev


@settings(max_examples=1500, deadline=None)
@given(events())
def test_fast_path_agrees_with_the_full_path(ev):
    assert_same(jsonutil.dumps_state(ev))


@settings(max_examples=300, deadline=None)
@given(
    st.binary(max_size=200)
    | st.sampled_from(
        [
            b"",
            b"[]",
            b"{}",
            b'{"type":["page_view"]}',
            b'{"type":{}}',
            b"1e400",
            b'{"type":"page_view","ts":1e400}',
            b'{"a":1,"a":2}',
        ]
    )
)
def test_fast_path_agrees_on_garbage(raw):
    assert_same(raw)


@pytest.mark.parametrize("type_", sorted(VALID))
def test_well_formed_events_take_the_fast_path(type_):
    """If this fails the output is still right, but every event pays for the full validation again."""
    for ts in (T0, "2026-01-01T08:00:00.000+08:00", "2026-01-01T00:00:00Z"):
        raw = jsonutil.dumps(event(type_, **VALID[type_], ts=ts, source="web"))
        assert DECODER.decode_fast(raw) is not None, type_
        assert_same(raw)


def test_load_generator_traffic_all_takes_the_fast_path():
    s = config.load(None, env={})
    decoder = Decoder(s.currency_rates, s.engine.base_currency, s.kafka.max_message_bytes)
    for _, _, raw in EventGenerator(10_000, seed=3).batch(3000):
        fast = decoder.decode_fast(raw)
        assert fast is not None, raw
        assert typed(fast) == typed(decoder.decode_full(raw, ORIGIN))


@pytest.mark.parametrize(
    "ev, why",
    [
        (event("add_to_cart", product_id=" p1 ", category="c", quantity=2.0), "integral float quantity"),
        (event("add_to_cart", product_id="p1", category="c", quantity=None), "null quantity is not defaulted"),
        (event("purchase", order_id="o", amount=5, currency=" eur "), "padded currency"),
        (
            event(
                "purchase",
                order_id="o",
                amount=5,
                currency="EUR",
                items=[{"product_id": "p", "category": "c", "price": 1, "quantity": 1.0}],
            ),
            "float item quantity",
        ),
        (event("page_view", url="/", ts=" 2026-01-01T00:00:00Z "), "padded ts"),
        (event("page_view", url="/", ts="2026-01-01T00:00:00.5+01:00"), "short fraction"),
        (event("survey", score=True), "bool for an integer"),
        (event("product_view", product_id="p", category="c", price=True), "bool for a number"),
        (event("consent", marketing_email=None), "consent with nothing"),
        (event("ticket_closed", ticket_id="t", csat=5.0), "integral float csat"),
    ],
)
def test_irregular_events_come_out_as_the_full_path_says(ev, why):
    assert_same(jsonutil.dumps(ev))


# -- every field of every type through every edge value: exhaustive where hypothesis is only likely ----------

EDGES: list[Any] = [
    None,
    True,
    False,
    0,
    0.0,
    -0.0,
    1,
    1.0,
    -1,
    0.5,
    4,
    5,
    5.0,
    6,
    10,
    10.0,
    11,
    99_999,
    100_000,
    100_000.0,
    100_001,
    1e12,
    10**12,
    1e12 * (1 + 1e-15),
    10**12 + 1,
    2**63,
    2**64 - 1,
    1e308,
    -1e308,
    T0,
    -T0,
    "",
    " ",
    "\t\n",
    "x",
    " x ",
    "x\u00a0",
    "\u3000",
    "1",
    "a" * 256,
    " " + "a" * 256 + " ",
    "a" * 257,
    "a" * 2048,
    "a" * 2049,
    "a" * 20_000,
    "a" * 20_001,
    "EUR",
    "eur",
    " EUR",
    "eUr ",
    "USD",
    "XXX",
    "EU",
    "EURO",
    "ß12",
    "ÉUR",
    "€UR",
    "inbound",
    " outbound ",
    "INBOUND",
    "low",
    " normal",
    "correct",
    "incorrect\n",
    "page_view",
    " page_view ",
    "2026-01-01T00:00:00Z",
    " 2026-01-01T08:00:00.500+08:00",
    "2026-01-01T00:00:00",
    "1969-12-31T23:59:59.999Z",
    [],
    {},
    [{}],
    ["x"],
    {"a": 1},
]
BASES = {kind: event(kind, **VALID[kind], source="web") for kind in VALID}
BASES["visitor"] = event("page_view", None, url="/", anonymous_id="a1")


@pytest.mark.parametrize("kind", sorted(BASES))
def test_every_field_through_every_edge_value(kind):
    base = BASES[kind]
    spec = EVENT_TYPES[base["type"]]
    names = [
        "event_id",
        "type",
        "ts",
        "customer_id",
        "anonymous_id",
        "source",
        *spec.required,
        *spec.optional,
        "quantity",
        "_utc_offset",
    ]
    accepted = 0
    for name in names:
        variants = [{k: v for k, v in base.items() if k != name}] + [{**base, name: value} for value in EDGES]
        for ev in variants:
            accepted += DECODER.decode_fast(jsonutil.dumps(ev)) is not None
            assert_same(jsonutil.dumps(ev))
    assert accepted  # the fast path was in the comparison at all


@pytest.mark.parametrize("name", ["product_id", "category", "price", "quantity", "sku"])
def test_every_item_field_through_every_edge_value(name):
    base = event(
        "purchase",
        order_id="o1",
        amount=10,
        currency="EUR",
        items=[
            {"product_id": "p0", "category": "c", "price": 1.5},
            {"product_id": "p1", "category": "c", "price": 1, "quantity": 2},
        ],
    )
    for value in [*EDGES, "missing"]:
        for i in (0, 1):
            ev = {**base, "items": [dict(it) for it in base["items"]]}
            if value == "missing":
                ev["items"][i].pop(name, None)
            else:
                ev["items"][i][name] = value
            assert_same(jsonutil.dumps(ev))
    for items in ([], [1], [None], [[]], [base["items"][0]] * 500, [base["items"][0]] * 501):
        assert_same(jsonutil.dumps({**base, "items": items}))


@pytest.mark.parametrize("size_delta", [-1, 0, 1])
def test_size_limit_is_the_same_on_both_paths(size_delta):
    ev = event("page_view", url="/", pad="")
    room = 1000 - len(jsonutil.dumps(ev)) + size_delta
    raw = jsonutil.dumps({**ev, "pad": "a" * room})
    assert len(raw) == 1000 + size_delta
    small = Decoder(RATES, "USD", max_bytes=1000)
    full = small.decode_full(raw, ORIGIN)
    assert (small.decode_fast(raw) is not None) == (size_delta <= 0) == isinstance(full, dict)
    assert small.decode(raw, ORIGIN) == full


# -- the router: Origin and source built lazily, identity_route inlined ------------------------------


def test_router_shards_labels_and_dead_letters_as_before():
    router = Router(Decoder(RATES), 8)
    good = [event("page_view", f"c{i}", url="/") for i in range(40)]
    good += [
        event("identify", "c1", anonymous_id=" a-9 "),
        event("page_view", None, url="/", anonymous_id="a-7"),
        event("erasure_request", "c3"),
    ]
    batch = [Raw("crm.clickstream", i % 3, 100 + i, jsonutil.dumps(ev)) for i, ev in enumerate(good)]
    batch.append(Raw("crm.clickstream", 1, 500, b'{"type":"page_view"}'))
    batch.append(Raw(None, -1, 7, b"not json"))
    out = dict(router.route(batch))
    seen = 0
    for s in range(8):
        routed = out[shard_key(s)]
        shard, evs = routed.shard, routed.events
        assert shard == s
        for ev in evs:
            if ev.get(ERASE_LINKS_ONLY):
                continue
            seen += 1
            assert identity_route(ev, 8) == s
            assert ev["_src"] == f"crm.clickstream#{(ev['_off'] - 100) % 3}"
    assert seen == len(good)
    dead = [jsonutil.loads(d[2]) for d in out[DEAD]]
    assert [d["topic"] for d in dead] == ["crm.clickstream", None]
    assert dead[0]["partition"] == 1 and dead[0]["offset"] == 500 and "crm.clickstream[1]@500" in dead[0]["reason"]
    assert dead[1]["line"] == 7 and "partition" not in dead[1] and "(line 7)" in dead[1]["reason"]
    assert all(d[0] == DEADLETTER for d in out[DEAD])
    assert router.decoded == len(good) and router.dead == 2


def test_currency_codes_that_are_not_letters_stay_rejected_even_with_a_rate():
    odd = Decoder({"USD": 1.0, "E1R": 2.0, " EU": 3.0}, "USD")
    for code in ("E1R", "e1r", " EU", " eu", "EU "):
        raw = jsonutil.dumps(event("purchase", order_id="o", amount=5, currency=code))
        full = odd.decode_full(raw, ORIGIN)
        assert isinstance(full, DeadLetter) and odd.decode_fast(raw) is None and odd.decode(raw, ORIGIN) == full
