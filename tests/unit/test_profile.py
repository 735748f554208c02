from __future__ import annotations

import random

import pytest

from crm_stream.operators.events.timeutil import MS_PER_DAY
from crm_stream.operators.profile import state as profiles
from crm_stream.operators.profile.state import ProfileRules
from tests.events import T0, event, purchase, view

RULES = ProfileRules(interest_half_life_days=14, sentiment_half_life_hours=72, dedup_max_ids=64)


def norm(ev):
    ev = dict(ev)
    if ev["type"] in ("purchase", "refund"):
        ev["amount_base"] = ev["amount"]
    ev.setdefault("quantity", 1)
    return ev


def fold(events, customer_id="c1"):
    p = profiles.new_profile(customer_id, events[0]["ts"])
    for ev in events:
        profiles.apply(p, norm(ev), RULES)
    return p


def test_rfm_and_gap_statistics():
    p = fold([purchase(day=0, amount=10), purchase(day=10, amount=20), purchase(day=30, amount=30)])
    assert p["frequency"] == 3 and p["monetary"] == 60
    assert p["first_purchase_at"] == T0 and p["last_purchase_at"] == T0 + 30 * MS_PER_DAY
    assert p["gap_mean_days"] == pytest.approx(15.0) and p["gap_std_days"] == pytest.approx(5.0)


def test_redelivered_event_changes_nothing():
    ev = purchase(day=1, amount=10)
    p = fold([ev])
    snapshot = repr(p)
    assert profiles.apply(p, norm(ev), RULES) is False
    assert repr(p) == snapshot


def test_same_order_under_two_event_ids_counts_once():
    a = purchase(day=1, amount=10, order_id="o-x")
    b = dict(a, event_id="other-id")
    assert fold([a, b])["frequency"] == 1


def test_dedup_window_is_bounded():
    rules = ProfileRules(14, 72, dedup_max_ids=5)
    p = profiles.new_profile("c1", T0)
    for i in range(50):
        profiles.apply(p, norm(view(day=i / 100)), rules)
    assert len(p["seen_ids"]) <= 5


def test_interest_decays_and_is_order_independent():
    events = [view(category="coffee", day=d) for d in (0, 1, 2, 9)] + [view(category="tea", day=5)]
    shuffled = events[:]
    random.Random(3).shuffle(shuffled)
    a, b = fold(events), fold(shuffled)
    as_of = T0 + 20 * MS_PER_DAY
    for cat in ("coffee", "tea"):
        assert profiles.decayed_value(a["interests"][cat], as_of, RULES.interest_half_life_ms) == pytest.approx(
            profiles.decayed_value(b["interests"][cat], as_of, RULES.interest_half_life_ms)
        )
    # one view 14 days (a half-life) before as_of counts half
    single = fold([view(category="books", day=6)])
    assert profiles.decayed_value(single["interests"]["books"], as_of, RULES.interest_half_life_ms) == pytest.approx(0.5)


def test_cart_add_remove_and_checkout():
    add = lambda pid, q=1: event("add_to_cart", product_id=pid, category="coffee", price=5.0, quantity=q)
    p = fold([add("p1", 2), add("p2"), event("remove_from_cart", product_id="p1", category="coffee", quantity=1)])
    assert p["cart"]["p1"]["quantity"] == 1 and "p2" in p["cart"]
    profiles.apply(
        p, norm(purchase(amount=5, items=[{"product_id": "p2", "category": "coffee", "price": 5, "quantity": 1}])), RULES
    )
    assert list(p["cart"]) == ["p1"]


def test_tickets_and_sentiment():
    p = fold(
        [
            event("ticket_opened", ticket_id="t1"),
            event(
                "support_message", ticket_id="t1", text="this is the third time I'm asking, unacceptable!!!", direction="inbound"
            ),
            event("support_message", ticket_id="t1", text="We are sorry", direction="outbound"),
        ]
    )
    assert p["tickets"]["t1"]["inbound"] == 1
    assert profiles.sentiment_value(p, T0, RULES) < -0.3
    profiles.apply(p, norm(event("ticket_closed", ticket_id="t1", csat=2)), RULES)
    assert p["tickets"] == {} and p["last_csat"] == 2 and p["tickets_closed"] == 1


def test_newer_consent_wins_even_if_older_arrives_late():
    p = fold(
        [event("consent", day=5, marketing_email=False), event("consent", day=1, marketing_email=True, contact_frequency="low")]
    )
    assert p["consent"]["marketing_email"] is False and p["consent"]["contact_frequency"] == "normal"


def test_active_hours_histogram_counts_customer_actions_only():
    p = fold([view(day=0), view(day=1 + 13.5 / 24), event("consent", marketing_email=True)])
    assert p["active_hours"][0] == 1 and p["active_hours"][13] == 1 and sum(p["active_hours"]) == 2


def test_refund_reduces_monetary_value():
    p = fold([purchase(amount=50), event("refund", order_id="o", amount=20, currency="USD")])
    assert p["monetary"] == 30 and p["refunds"] == 1


def test_the_utc_offset_is_the_newest_one_the_customers_device_wrote_whatever_the_order_events_came_in():
    """Live, a purchase (written in UTC by the shop) is often read weeks ahead of the clickstream: the customer's
    own clock must still be learned from the page views that came before it in time."""
    from crm_stream.operators.events.schema import UTC_OFFSET

    rules = ProfileRules(14, 72, 64)
    p = profiles.new_profile("c1", T0)
    bought = purchase("c1", amount=10, day=10)
    bought["amount_base"] = 10
    assert profiles.apply(p, bought, rules)
    assert profiles.apply(p, {**view("c1", day=1), UTC_OFFSET: 330}, rules)
    assert p["utc_offset_min"] == 330
    assert profiles.apply(p, {**view("c1", day=0.5), UTC_OFFSET: 60}, rules)  # older: not the customer's clock now
    assert p["utc_offset_min"] == 330
