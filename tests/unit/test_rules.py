"""Each rule and each governance rule on a small event sequence, through a real profile shard."""

from __future__ import annotations

from dataclasses import replace

import pytest

from crm_stream.config import settings as config
from crm_stream.operators.events.timeutil import MS_PER_DAY, MS_PER_HOUR
from crm_stream.operators.io import jsonutil
from crm_stream.operators.io.interface import MARKETING, SERVICE
from crm_stream.operators.io.keys import KeySpace
from crm_stream.operators.io.stores import MemoryStore
from crm_stream.operators.profile.state import SOURCE, SOURCE_OFFSET
from crm_stream.operators.stages.shard import ProfileShard
from tests.events import T0, event, purchase, view

BASE = config.load(None, env={})
SETTINGS = replace(BASE, engine=replace(BASE.engine, allowed_lateness_ms=0))


class Harness:
    """Feeds events one batch at a time, as the dataflow does, and collects what the shard emits."""

    def __init__(self, settings=SETTINGS):
        self.shard = ProfileShard(0, settings, MemoryStore(), KeySpace("crm"))
        self.line = 0
        self.out: list = []

    def feed(self, *events, clock_only_until=None):
        batch = []
        for ev in events:
            self.line += 1
            ev = dict(ev, **{SOURCE: "file#-1", SOURCE_OFFSET: self.line})
            ev.setdefault("quantity", 1)
            if ev["type"] in ("purchase", "refund"):
                ev.setdefault("amount_base", ev["amount"])
            batch.append(ev)
        newest = max([e["ts"] for e in batch] + ([clock_only_until] if clock_only_until else []))
        self.out += self.shard.process(batch, {"file#-1": newest})
        return self

    def advance(self, ts):
        """The stream's clock moves on (other customers' events), with nothing from this one."""
        self.out += self.shard.process([], {"file#-1": ts})
        return self

    def alerts(self, kind=None, destination=None):
        found = [(d, jsonutil.loads(v)) for d, _, v in self.out if d in (SERVICE, MARKETING)]
        return [a for d, a in found if (kind is None or a["kind"] == kind) and (destination is None or d == destination)]


def opt_in(cid="c1", day=0.0, **channels):
    return event("consent", cid, day=day, **(channels or {"marketing_email": True}))


def items(category, amount=20.0, product="p1"):
    return [{"product_id": product, "category": category, "price": amount, "quantity": 1}]


def test_angry_customer_is_urgent_for_a_valuable_customer_and_quiet_for_a_polite_one():
    h = Harness()
    for i in range(30):  # make the shop's value distribution: c1 will be the top spender
        h.feed(purchase(f"o{i}", amount=10 + i, day=0.1))
    h.feed(purchase("c1", amount=5000, day=1))
    h.feed(event("ticket_opened", "c1", ticket_id="t1", day=2))
    h.feed(
        event(
            "support_message",
            "c1",
            ticket_id="t1",
            direction="inbound",
            day=2.01,
            text="Hi, could you tell me when my order ships? Thanks",
        )
    )
    assert h.alerts("angry_customer") == []
    h.feed(
        event(
            "support_message",
            "c1",
            ticket_id="t1",
            direction="inbound",
            day=2.1,
            text="This is the THIRD time I'm asking, unacceptable!!! Worst service ever",
        )
    )
    [alert] = h.alerts("angry_customer", SERVICE)
    assert alert["priority"] in ("urgent", "high") and alert["payload"]["ticket_id"] == "t1"
    assert any("anger score" in r for r in alert["reasons"]) and any("high-value" in r for r in alert["reasons"])
    h.feed(event("support_message", "c1", ticket_id="t1", direction="inbound", day=2.2, text="unacceptable!!! terrible!!!"))
    assert len(h.alerts("angry_customer")) == 1  # one alert per ticket within the cooldown


def test_chinese_anger_registers():
    h = Harness()
    h.feed(event("support_message", "c2", ticket_id="t9", direction="inbound", text="这破玩意儿真难用!!!"))
    assert len(h.alerts("angry_customer")) == 1


def test_abandoned_interest_fires_when_the_clock_passes_even_without_more_events():
    h = Harness().feed(opt_in())
    for i in range(5):
        h.feed(
            view("c1", category="cameras", day=1 + i * 0.01),
            event("add_to_cart", "c1", product_id="p7", category="cameras", price=300.0, day=1 + i * 0.01 + 0.001),
        )
    assert h.alerts("abandoned_interest") == []
    h.advance(T0 + 3 * MS_PER_DAY + MS_PER_HOUR * 2)  # other customers' events move the stream's clock
    assert h.shard.profiles["c1"]["scheduled"]  # raised at 01:00 UTC: held until the quiet hours end (08:00)
    h.advance(T0 + 5 * MS_PER_DAY)
    [trigger] = h.alerts("abandoned_interest", MARKETING)
    assert trigger["payload"]["category"] == "cameras" and trigger["payload"]["products_in_cart"] == ["p7"]
    assert trigger["send_at"] == "2026-01-04T08:00:00.000Z" > trigger["ts"]


def test_abandoned_interest_is_cancelled_by_a_purchase_in_the_category():
    h = Harness().feed(opt_in())
    for i in range(5):
        h.feed(event("add_to_cart", "c1", product_id="p7", category="cameras", price=300.0, day=1 + i * 0.01))
    h.feed(purchase("c1", amount=300, day=1.5, items=items("cameras", 300, "p7")))
    h.advance(T0 + 10 * MS_PER_DAY)
    assert h.alerts("abandoned_interest") == []


def test_win_back_and_churn_risk_fire_for_a_customer_who_goes_silent():
    h = Harness().feed(opt_in())
    for i in range(6):
        h.feed(purchase("c1", amount=40, day=i * 10, items=items("coffee", 40)))
    h.advance(T0 + 200 * MS_PER_DAY)
    churn = h.alerts("churn_risk")
    assert churn and churn[0]["score"] >= SETTINGS.rules.churn_threshold
    assert len(h.alerts("win_back", MARKETING)) == 1


def test_replenishment_is_due_on_the_customers_cycle():
    h = Harness().feed(opt_in())
    for i in range(4):
        h.feed(purchase("c1", amount=12, day=i * 21, items=items("pet_food", 12, "p-food")))
    h.advance(T0 + 85 * MS_PER_DAY)
    # Due 2 days ahead of days 63 and 84: the purchase on day 63, read before the clock passed day 61, cancels nothing.
    first, second = h.alerts("replenishment")
    assert [first["ts"][:10], second["ts"][:10]] == ["2026-03-03", "2026-03-24"]
    for trigger in (first, second):
        assert trigger["payload"]["category"] == "pet_food" and trigger["payload"]["cycle_days"] == pytest.approx(21, abs=0.1)


def test_return_spike_against_the_products_own_baseline():
    h = Harness()
    for i in range(60):  # a normal product history: 60 sales, 1 refund
        h.feed(purchase(f"b{i}", amount=50, order_id=f"o{i}", day=i * 0.5, items=items("toys", 50, "p-drone")))
    h.feed(event("refund", "b0", order_id="o0", amount=50, currency="USD", day=31))
    for i in range(60, 75):  # then a burst: most new orders come back
        h.feed(purchase(f"b{i}", amount=50, order_id=f"o{i}", day=40 + i * 0.05, items=items("toys", 50, "p-drone")))
        h.feed(event("refund", f"b{i}", order_id=f"o{i}", amount=50, currency="USD", day=41 + i * 0.05))
    spikes = h.alerts("return_spike", SERVICE)
    assert spikes and spikes[0]["payload"]["product_id"] == "p-drone"


def test_segment_change_is_a_marketing_trigger():
    h = Harness()
    for i in range(30):
        h.feed(purchase(f"o{i}", amount=10 + i, day=0.1))
    h.feed(opt_in("c1"), purchase("c1", amount=20, day=1), purchase("c1", amount=3000, day=2))
    h.advance(T0 + 3 * MS_PER_DAY)
    assert any(a["payload"]["to"] == "high_value" for a in h.alerts("segment_change", MARKETING))


# -- governance ------------------------------------------------------------------------------------


def _interest(h, cid, day, category="cameras"):
    for i in range(5):
        h.feed(event("add_to_cart", cid, product_id=f"p-{category}", category=category, price=10.0, day=day + i * 0.001))


def test_no_consent_no_trigger_and_it_is_counted():
    h = Harness()
    _interest(h, "c1", 1)
    h.advance(T0 + 5 * MS_PER_DAY)
    assert h.alerts(destination=MARKETING) == []
    assert h.shard.suppressed["no_consent"] >= 1


def test_an_opt_out_cancels_a_trigger_already_scheduled():
    h = Harness()
    # c1 is usually active at 20:00 UTC, so a trigger raised in the morning waits for the evening
    h.feed(opt_in("c1", day=0.5), *[view("c1", category="x", day=d + 20 / 24) for d in range(3)])
    _interest(h, "c1", 10 + 1 / 24)
    h.advance(T0 + 12 * MS_PER_DAY + 2 * MS_PER_HOUR)  # the window passed at 01:00: scheduled for ~20:00
    assert h.alerts("abandoned_interest") == [] and h.shard.profiles["c1"]["scheduled"]
    h.feed(event("consent", "c1", marketing_email=False, day=12 + 3 / 24))
    h.advance(T0 + 14 * MS_PER_DAY)
    assert h.alerts("abandoned_interest") == []
    assert h.shard.profiles["c1"]["scheduled"] == {}


def test_daily_and_weekly_caps_hold_under_a_burst():
    h = Harness().feed(opt_in())
    for n, category in enumerate(["a", "b", "c", "d", "e", "f", "g", "h"]):
        _interest(h, "c1", 1 + n * 0.1, category)
    h.advance(T0 + 30 * MS_PER_DAY)
    sent = h.alerts(destination=MARKETING)
    days = sorted({a["send_at"][:10] for a in sent})
    assert len(sent) <= SETTINGS.governance.weekly_cap and len(days) == len(sent)  # at most one a day
    assert h.shard.suppressed["daily_cap"] + h.shard.suppressed["weekly_cap"] >= 8 - len(sent)


def test_low_contact_frequency_means_rarely():
    h = Harness().feed(opt_in(contact_frequency="low", marketing_email=True))
    for n, category in enumerate(["a", "b", "c", "d"]):
        _interest(h, "c1", 1 + n * 1.5, category)
    h.advance(T0 + 8 * MS_PER_DAY)
    assert len(h.alerts(destination=MARKETING)) == SETTINGS.governance.low_frequency_weekly_cap


def test_quiet_hours_move_send_at_in_the_customers_time_zone():
    h = Harness()
    # A customer in UTC+8 whose events say so; the trigger is raised at 15:00 UTC = 23:00 local.
    h.feed(dict(opt_in("c1", day=0.3), _utc_offset=480))
    _interest(h, "c1", 1 + (15 - 48) / 24 + 0.0)
    h.advance(T0 + 4 * MS_PER_DAY)
    [trigger] = h.alerts("abandoned_interest")
    local_hour = (int(trigger["send_at"][11:13]) + 8) % 24
    quiet = SETTINGS.governance
    assert not (local_hour >= quiet.quiet_start_hour or local_hour < quiet.quiet_end_hour)


def test_agent_feedback_on_an_escalation_teaches_the_shared_anger_model():
    h = Harness()
    h.feed(event("support_message", "c2", ticket_id="t9", direction="inbound", text="这破玩意儿真难用!!!"))
    [alert] = h.alerts("angry_customer")
    models = h.shard.models
    assert models.anger.n_learned == 0
    h.feed(event("alert_feedback", "c2", alert_id=alert["alert_id"], label="incorrect", day=0.1))
    h.feed(event("alert_feedback", "c2", alert_id="not-an-escalation", label="correct", day=0.2))
    assert models.anger.n_learned == 1
    snapshot = models.flush()
    assert snapshot and snapshot[0][1] == "crm:model:anger" and isinstance(snapshot[0][2], bytes)


def test_inactive_customers_leave_memory_and_come_back_from_the_store():
    settings = replace(SETTINGS, engine=replace(SETTINGS.engine, retention_days=2.0))
    h = Harness(settings)
    h.shard.working_set.evict_every_s = 0.0
    h.feed(purchase("c1", amount=10, day=0), purchase("c1", amount=20, day=1))
    h.shard.store.write({k: v for t, k, v in h.out if t == "put"})  # what the sink does
    h.feed(view("c2", day=5))
    assert "c1" not in h.shard.profiles and "c2" in h.shard.profiles and h.shard.evicted == 1
    h.feed(purchase("c1", amount=30, day=6))
    assert h.shard.profiles["c1"]["frequency"] == 3 and h.shard.profiles["c1"]["monetary"] == 60


def test_an_identify_that_releases_a_purchase_moves_the_segment_statistics_once():
    from crm_stream.operators.stages.identity import RELEASED

    h = Harness()
    earlier = dict(purchase("c1", amount=40, day=1, anonymous_id="a1"), amount_base=40.0, quantity=1)
    h.feed(dict(event("identify", "c1", day=2, anonymous_id="a1"), **{RELEASED: [earlier]}))
    assert h.shard.profiles["c1"]["frequency"] == 1
    assert h.shard.stats.monetary.total == 1  # one customer with a purchase (the merge counted it twice before)
    h.feed(purchase("c2", amount=10, day=3))
    assert h.shard.stats.monetary.total == 2
