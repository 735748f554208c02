"""Property-based: whatever arrives, the decoder returns an event or a dead letter, and the dataflow keeps going."""

from __future__ import annotations

import math
from datetime import timedelta

from bytewax.testing import run_main
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crm_stream.config import settings as config
from crm_stream.flows.dataflow import build_flow
from crm_stream.operators.events.schema import EVENT_TYPES, DeadLetter, Decoder, Origin
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
