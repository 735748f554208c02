from __future__ import annotations

import pytest

from crm_stream.operators.events.schema import EVENT_TYPES, DeadLetter, Decoder, Origin
from crm_stream.operators.io import jsonutil
from tests.events import T0, event

RATES = {"USD": 1.0, "EUR": 1.08, "CNY": 0.138}
ORIGIN = Origin("crm.purchases", 2, 41)
decoder = Decoder(RATES, "USD", max_bytes=10_000)

VALID = {
    "page_view": {"url": "/home"},
    "product_view": {"product_id": "p1", "category": "coffee", "price": 3.5},
    "search": {"query": "beans"},
    "add_to_cart": {"product_id": "p1", "category": "coffee"},
    "remove_from_cart": {"product_id": "p1", "category": "coffee", "quantity": 2},
    "purchase": {
        "order_id": "o1",
        "amount": 10,
        "currency": "EUR",
        "items": [{"product_id": "p1", "category": "coffee", "price": 10, "quantity": 1}],
    },
    "refund": {"order_id": "o1", "amount": 5, "currency": "USD", "reason": "broken"},
    "support_message": {"ticket_id": "t1", "text": "hello", "direction": "inbound", "channel": "chat"},
    "ticket_opened": {"ticket_id": "t1", "subject": "late"},
    "ticket_closed": {"ticket_id": "t1", "resolved": True, "csat": 4},
    "survey": {"score": 9, "comment": "fine"},
    "consent": {"marketing_email": True, "contact_frequency": "low"},
    "erasure_request": {},
    "identify": {"anonymous_id": "a1"},
    "alert_feedback": {"alert_id": "x", "label": "correct", "agent_id": "ag1"},
}


def decode(ev: object) -> dict | DeadLetter:
    return decoder.decode(jsonutil.dumps(ev), ORIGIN)


def test_every_contract_type_has_a_valid_example():
    assert set(VALID) == set(EVENT_TYPES)


@pytest.mark.parametrize("type_", sorted(VALID))
def test_valid_events_decode(type_):
    out = decode(event(type_, **VALID[type_]))
    assert isinstance(out, dict), out
    assert out["type"] == type_ and out["ts"] == T0


def test_normalisation_trims_converts_time_and_currency_and_carries_extras():
    out = decode(
        {
            "event_id": " e1 ",
            "type": " purchase",
            "customer_id": " c9 ",
            "ts": "2026-01-01T08:00:00+08:00",
            "order_id": "o",
            "amount": 100,
            "currency": "eur",
            "campaign": {"utm": "x"},
        }
    )
    assert out["event_id"] == "e1" and out["customer_id"] == "c9" and out["type"] == "purchase"
    assert out["ts"] == T0
    assert out["currency"] == "EUR" and out["amount_base"] == pytest.approx(108.0)
    assert out["campaign"] == {"utm": "x"}


def test_quantity_defaults_to_one():
    assert decode(event("add_to_cart", product_id="p", category="c"))["quantity"] == 1


@pytest.mark.parametrize(
    "mutate, field",
    [
        (lambda e: e.pop("event_id"), "event_id"),
        (lambda e: e.update(event_id=""), "event_id"),
        (lambda e: e.pop("customer_id"), "customer_id"),
        (lambda e: e.update(ts="yesterday"), "ts"),
        (lambda e: e.update(ts="2026-01-01T00:00:00"), "ts"),
        (lambda e: e.update(ts=True), "ts"),
        (lambda e: e.update(ts=1e30), "ts"),
        (lambda e: e.update(ts=99_999_999_999_999), "ts"),
        (lambda e: e.update(type="teleport"), "type"),
        (lambda e: e.pop("type"), "type"),
        (lambda e: e.update(amount=-5), "amount"),
        (lambda e: e.update(amount=0), "amount"),
        (lambda e: e.update(amount="12"), "amount"),
        (lambda e: e.update(amount=1e15), "amount"),
        (lambda e: e.update(currency="XXX"), "currency"),
        (lambda e: e.update(currency="euro"), "currency"),
        (lambda e: e.update(items=[{"product_id": "p"}]), "items[0].category"),
        (lambda e: e.update(items="p1"), "items"),
        (lambda e: e.update(customer_id=123), "customer_id"),
        (lambda e: e.update(order_id="x" * 300), "order_id"),
    ],
)
def test_contract_violations_are_dead_lettered_with_the_field_and_origin(mutate, field):
    ev = event("purchase", order_id="o1", amount=10, currency="USD")
    mutate(ev)
    out = decode(ev)
    assert isinstance(out, DeadLetter), out
    assert field in out.reason and "crm.purchases[2]@41" in out.reason
    record = out.to_record()
    assert record["topic"] == "crm.purchases" and record["partition"] == 2 and record["offset"] == 41
    assert jsonutil.loads(record["raw"]) == ev


@pytest.mark.parametrize("raw", [b"", b"not json", b"[1,2]", b'"str"', b"\xff\xfe{}", b'{"a": NaN}', b"{" * 5000])
def test_garbage_is_dead_lettered_never_raised(raw):
    out = decoder.decode(raw, ORIGIN)
    assert isinstance(out, DeadLetter)
    assert isinstance(out.to_record()["raw"], str)


def test_oversized_message_is_dead_lettered():
    out = decoder.decode(b'{"x":"' + b"a" * 20_000 + b'"}', ORIGIN)
    assert isinstance(out, DeadLetter) and "limit" in out.reason


def test_type_specific_rules():
    assert isinstance(decode(event("consent")), DeadLetter)  # needs at least one field
    assert isinstance(decode(event("survey", score=11)), DeadLetter)
    assert isinstance(decode(event("ticket_closed", ticket_id="t", csat=0)), DeadLetter)
    assert isinstance(decode(event("support_message", ticket_id="t", text="x", direction="sideways")), DeadLetter)
    assert isinstance(decode(event("identify")), DeadLetter)  # needs anonymous_id
    assert isinstance(decode(event("alert_feedback", alert_id="a", label="maybe")), DeadLetter)
    anon = event("page_view", None, url="/", anonymous_id="a1")
    assert isinstance(decode(anon), dict)


def test_file_origin_uses_line_in_place_of_partition_and_offset():
    out = decoder.decode(b"nope", Origin(None, line=7))
    record = out.to_record()
    assert record["line"] == 7 and "partition" not in record and "offset" not in record
    assert "line 7" in out.reason
