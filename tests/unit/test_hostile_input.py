"""Property-based: whatever arrives, the decoder returns an event or a dead letter, and the dataflow keeps going."""

from __future__ import annotations

import math
from datetime import timedelta

from bytewax.testing import run_main
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crm_stream.config import settings as config
from crm_stream.flows.dataflow import build_flow
from crm_stream.operators.events.schema import EVENT_TYPES, MAX_NESTING, DeadLetter, Decoder, Origin
from crm_stream.operators.io import jsonutil
from crm_stream.operators.io.files import CollectingOutputs, FileReader
from crm_stream.operators.io.interface import DEADLETTER
from crm_stream.operators.io.stores import MemoryStore

DECODER = Decoder({"USD": 1.0, "EUR": 1.1}, "USD", max_bytes=50_000)
ORIGIN = Origin("crm.clickstream", 0, 1)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=50),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
field_names = st.sampled_from(
    [
        "event_id",
        "type",
        "customer_id",
        "anonymous_id",
        "ts",
        "amount",
        "currency",
        "order_id",
        "items",
        "product_id",
        "category",
        "price",
        "quantity",
        "text",
        "ticket_id",
        "direction",
        "score",
        "url",
        "query",
    ]
)
near_valid = st.fixed_dictionaries(
    {
        "event_id": st.text(min_size=1, max_size=20),
        "type": st.sampled_from(sorted(EVENT_TYPES) + ["bogus"]),
        "customer_id": st.text(min_size=1, max_size=10),
        "ts": st.one_of(
            st.integers(-(2**40), 2**50), st.sampled_from(["2026-01-01T00:00:00Z", "2026-13-01T00:00:00Z", "now", ""])
        ),
    },
).flatmap(lambda base: st.dictionaries(field_names, json_values, max_size=6).map(lambda extra: {**base, **extra}))


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise(raw):
    out = DECODER.decode(raw, ORIGIN)
    assert isinstance(out, (dict, DeadLetter))
    if isinstance(out, DeadLetter):
        jsonutil.dumps(out.to_record())


@settings(max_examples=600, deadline=None)
@given(near_valid)
def test_near_valid_events_are_normalised_or_dead_lettered_with_a_reason(ev):
    out = DECODER.decode(jsonutil.dumps(ev), ORIGIN)
    if isinstance(out, DeadLetter):
        assert "crm.clickstream[0]@1" in out.reason
        return
    assert out["type"] in EVENT_TYPES and isinstance(out["ts"], int)
    for value in out.values():
        if isinstance(value, float):
            assert math.isfinite(value)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(
        st.one_of(near_valid.map(jsonutil.dumps), st.binary(max_size=80).filter(lambda b: b"\n" not in b and b"\r" not in b)),
        min_size=1,
        max_size=40,
    )
)
def test_the_dataflow_survives_any_mix_and_dead_letters_every_reject(tmp_path_factory, records):
    path = tmp_path_factory.mktemp("fuzz") / "in.jsonl"
    path.write_bytes(b"\n".join(records) + b"\n")
    s = config.load(None, env={})
    engine_decoder = Decoder(s.currency_rates, s.engine.base_currency, s.kafka.max_message_bytes)
    rejected = sum(isinstance(engine_decoder.decode(r, ORIGIN), DeadLetter) for r in records if r.strip())
    outputs, store = CollectingOutputs(), MemoryStore()
    run_main(
        build_flow(s, reader=FileReader(path), outputs_factory=lambda w: outputs, store_provider=lambda: store),
        epoch_interval=timedelta(seconds=5),
    )
    dead = outputs.records.get(DEADLETTER, [])
    assert all("internal error" not in jsonutil.loads(d)["reason"] for d in dead)
    assert len(dead) == rejected


# -- poison-proof by construction (issue 14, item 1) ------------------------------------------------------------


class _BytesStore(MemoryStore):
    """The memory store encoding as Redis does (orjson bytes): what only the live engine used to exercise."""

    def encode(self, value):
        return value if isinstance(value, bytes) else jsonutil.dumps_state(value)

    def decode(self, stored):
        return jsonutil.loads(stored)


def _nested(levels: int) -> object:
    """A JSON value of ``levels`` levels of objects (1: ``{"k": 0}``)."""
    value: object = 0
    for _ in range(levels):
        value = {"k": value}
    return value


def _run_file(tmp_path, lines_: list[bytes], store=None, settings=None):
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"\n".join(lines_) + b"\n")
    s = settings or config.load(None, env={})
    outputs, store = CollectingOutputs(), store if store is not None else _BytesStore()
    run_main(
        build_flow(s, reader=FileReader(path), outputs_factory=lambda w: outputs, store_provider=lambda: store),
        epoch_interval=timedelta(seconds=5),
    )
    return outputs, store


def _visitor_event(n: int, levels: int) -> bytes:
    """A visitor's page view carrying an unknown field ``x`` of ``levels`` levels, written by hand: orjson would not."""
    head = jsonutil.dumps(
        {"event_id": f"v{n}", "type": "page_view", "anonymous_id": "anon-1", "ts": 1_760_000_000_000 + n, "url": "/"}
    )
    return head[:-1] + b',"x":' + b'{"k":' * levels + b"0" + b"}" * levels + b"}"


def test_an_event_nested_past_the_limit_is_a_dead_letter_naming_the_field_and_the_limit():
    raw = _visitor_event(1, 300)  # orjson reads it (up to 1,024 levels) but writes at most 254
    out = DECODER.decode(raw, ORIGIN)
    assert isinstance(out, DeadLetter)
    assert "field 'x'" in out.reason and f"more than {MAX_NESTING} levels" in out.reason and "crm.clickstream[0]@1" in out.reason
    assert DECODER.decode_fast(raw) is None
    # The event itself is level 1: a field at the limit passes, one level more does not.
    assert isinstance(DECODER.decode(_visitor_event(1, MAX_NESTING - 1), ORIGIN), dict)
    assert isinstance(DECODER.decode(_visitor_event(1, MAX_NESTING), ORIGIN), DeadLetter)
    deep_list = jsonutil.dumps({"event_id": "e", "type": "search", "customer_id": "c", "ts": 1, "query": "q", "y": [[[[]]]]})
    assert isinstance(DECODER.decode(deep_list, ORIGIN), dict)
    # Deeper than orjson reads at all: not valid JSON, a dead letter too, never a RecursionError.
    assert isinstance(DECODER.decode(b'{"a":' * 1_100 + b"1" + b"}" * 1_100, ORIGIN), DeadLetter)


def test_what_passes_at_the_nesting_limit_is_stored_forwarded_and_released_by_every_stage(tmp_path):
    """The bound is what every later stage can write: an anonymous event at the limit is buffered (encoded with the
    visitor), released on identify into a profile (encoded), and nothing is dead-lettered; one level deeper is one
    dead letter and the engine goes on (it used to stop Bytewax with 'TypeError: Recursion limit reached')."""
    identify = jsonutil.dumps(
        {"event_id": "i1", "type": "identify", "anonymous_id": "anon-1", "customer_id": "c1", "ts": 1_760_000_000_100}
    )
    outputs, store = _run_file(tmp_path, [_visitor_event(1, MAX_NESTING - 1), _visitor_event(2, 300), identify])
    dead = [jsonutil.loads(d) for d in outputs.records.get(DEADLETTER, [])]
    assert [(d["line"], "field 'x'" in d["reason"]) for d in dead] == [(2, True)]
    profile = jsonutil.loads(store.data["crm:profile:c1"])
    assert "anon-1" in profile["merged_anonymous_ids"]
    buffered = jsonutil.loads(store.data["crm:anon:anon-1"])["events"]
    assert [e["event_id"] for e in buffered] == ["v1"]  # kept with its field, as the contract asks


def test_a_stage_that_fails_on_one_record_dead_letters_it_with_its_position_and_goes_on(monkeypatch):
    """The second line: identity (here made to fail on one visitor's event) sets that record aside as a dead letter
    with the stage, the error and ``topic[partition]@offset``, and routes every other record."""
    from crm_stream.operators.io.keys import KeySpace
    from crm_stream.operators.stages import identity

    shard = identity.IdentityShard(_BytesStore(), KeySpace("crm"), 4, 50, dead_letter_bytes=5_000)
    real = shard._buffer

    def flaky(visitor, event):
        if event["event_id"] == "bad":
            raise RuntimeError("boom")
        real(visitor, event)

    monkeypatch.setattr(shard, "_buffer", flaky)
    events = [
        {
            "event_id": "bad",
            "type": "page_view",
            "anonymous_id": "a1",
            "ts": 1,
            "url": "/",
            "_src": "crm.clickstream#2",
            "_off": 17,
        },
        {
            "event_id": "ok",
            "type": "page_view",
            "anonymous_id": "a2",
            "ts": 2,
            "url": "/",
            "_src": "crm.clickstream#2",
            "_off": 18,
        },
        {"event_id": "c", "type": "search", "customer_id": "c1", "ts": 3, "query": "q", "_src": "crm.clickstream#1", "_off": 4},
    ]
    routed, effects = shard.process(events)
    assert [e["event_id"] for evs in routed.values() for e in evs] == ["c"]
    dead = [jsonutil.loads(v) for t, _, v in effects if t == DEADLETTER]
    assert len(dead) == 1
    assert (dead[0]["topic"], dead[0]["partition"], dead[0]["offset"]) == ("crm.clickstream", 2, 17)
    assert "identity could not process page_view event bad (crm.clickstream[2]@17): RuntimeError: boom" in dead[0]["reason"]
    assert [k for t, k, _ in effects if t == "put"] == ["crm:anon:a2"]


def test_a_buffered_event_that_cannot_be_encoded_leaves_the_buffer_as_a_dead_letter():
    from crm_stream.operators.io.keys import KeySpace
    from crm_stream.operators.stages.identity import IdentityShard

    shard = IdentityShard(_BytesStore(), KeySpace("crm"), 4, 50)
    good = {"event_id": "g", "type": "page_view", "anonymous_id": "a1", "ts": 1, "url": "/", "_src": "file#-1", "_off": 1}
    bad = {**good, "event_id": "b", "x": _nested(300), "_off": 2}  # as if the decoder's bound were missing
    _, effects = shard.process([good, bad])
    dead = [jsonutil.loads(v) for t, _, v in effects if t == DEADLETTER]
    assert [(d["line"], "TypeError" in d["reason"]) for d in dead] == [(2, True)]
    assert [
        e["event_id"] for e in jsonutil.loads(dict((k, v) for t, k, v in effects if t == "put")["crm:anon:a1"])["events"]
    ] == ["g"]


def test_a_bug_in_decoding_costs_one_record_never_the_engine(monkeypatch):
    from crm_stream.operators.events.router import DEAD, Router

    decoder = Decoder({"USD": 1.0}, "USD")
    router = Router(decoder, 2)
    real = decoder.decode_fast

    def flaky(raw):
        if b'"bad"' in raw:
            raise ValueError("a bug")
        return real(raw)

    monkeypatch.setattr(decoder, "decode_fast", flaky)
    good = jsonutil.dumps({"event_id": "good", "type": "search", "customer_id": "c", "ts": 1, "query": "q"})
    bad = jsonutil.dumps({"event_id": "bad", "type": "search", "customer_id": "c", "ts": 1, "query": "q"})
    out = dict(router.route([("crm.clickstream", 1, 7, bad), ("crm.clickstream", 1, 8, good)]))
    [(_, _, letter)] = out[DEAD]
    record = jsonutil.loads(letter)
    assert (record["topic"], record["partition"], record["offset"]) == ("crm.clickstream", 1, 7)
    assert "internal error decoding the record: ValueError: a bug" in record["reason"]
    assert sum(len(v[1]) for k, v in out.items() if k != DEAD) == 1


def test_a_dead_letter_always_fits_the_dead_letter_topic():
    """A record just under the message limit whose bytes need escaping used to make a dead letter several times the
    limit: Kafka refused it and the engine stopped. ``raw`` is now cut to fit, and the cut is said."""
    from crm_stream.operators.events.router import DEAD, Router

    limit = 20_000
    router = Router(Decoder({"USD": 1.0}, "USD", max_bytes=limit), 2)
    producer = _offline_producer(limit)
    for raw in (
        b'"' * (limit - 1),
        b"\x01" * (limit - 1),
        "é".encode() * (limit // 2 - 1),
        b"\xff" * (limit - 1),
        *(b"x" * n for n in range(limit - 200, limit - 80, 3)),  # plain text: records just under the limit
    ):
        [(_, _, letter)] = dict(router.route([("crm.purchases", 0, 3, raw)]))[DEAD]
        record = jsonutil.loads(letter)
        assert len(letter) <= limit and record["offset"] == 3
        assert "raw cut to its first" in record["reason"] or len(raw) < limit // 6
        producer.produce("crm.deadletter", letter)  # librdkafka checks the size here, before any broker: it must accept


def _offline_producer(limit: int):
    from confluent_kafka import Producer

    return Producer({"bootstrap.servers": "127.0.0.1:1", "message.max.bytes": limit, "log_level": 0})


@settings(max_examples=150, deadline=None)
@given(
    st.integers(MAX_NESTING - 4, MAX_NESTING + 3),
    st.sampled_from(["object", "array"]),
    st.sampled_from(["field", "item", "item_without_quantity"]),
)
def test_fast_and_full_paths_agree_on_nesting_at_the_limit(levels, kind, where):
    """The fast path walks only events with fields their type does not list (and items with fields of their own):
    it must still reject exactly what the full path rejects, wherever the deep value sits."""
    deep = (b'{"k":' if kind == "object" else b"[") * levels + b"0" + (b"}" if kind == "object" else b"]") * levels
    item = b'{"product_id":"p","category":"c","price":1.0' + (b',"quantity":1' if where == "item" else b"")
    if where == "field":
        items, extra = item + b"}", b',"x":' + deep
    else:
        items, extra = item + b',"x":' + deep + b"}", b""
    raw = (
        b'{"event_id":"e","type":"purchase","customer_id":"c","ts":1767000000000,"order_id":"o","amount":1.0,'
        b'"currency":"USD","items":[' + items + b"]" + extra + b"}"
    )
    full = DECODER.decode_full(raw, ORIGIN)
    fast = DECODER.decode_fast(raw)
    depth = levels + (1 if where == "field" else 3)  # event (1) -> x, or event -> items -> item -> x
    assert isinstance(full, DeadLetter) == (depth > MAX_NESTING)
    assert fast == (None if isinstance(full, DeadLetter) else full)
