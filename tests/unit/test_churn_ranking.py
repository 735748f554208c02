"""Short histories on the simulated shop: customers who churned must not get lower churn scores than those who did not."""

from __future__ import annotations

import statistics

from crm_stream.config.settings import SimulatorSettings
from crm_stream.operators.events.simulator import Shop
from crm_stream.operators.events.timeutil import parse_ts
from load.eval_real import Engine, auc


def test_short_histories_give_no_inverted_churn_ranking():
    shop = Shop(SimulatorSettings(customers=300, days=60, seed=7))
    events = list(shop.events())
    churned_at = {c["customer_id"]: c["churned_at"] for c in shop.truth() if c.get("kind") == "customer"}
    engine = Engine(30.0)
    for i in range(0, len(events), 500):
        engine.feed(events[i : i + 500])
    end = max(parse_ts(e["ts"]) for e in events)
    labels, risks, days = [], [], []
    for shard, profile in engine.profiles():
        if not profile["frequency"] or profile["customer_id"] not in churned_at:
            continue
        when = churned_at[profile["customer_id"]]
        labels.append(when is not None and parse_ts(when) <= end)
        risks.append(shard.churn_risk(profile, end))
        days.append(engine.models.next_purchase_in_days(profile, end, shard.thresholds().population_gap_days))
    churned = [r for r, y in zip(risks, labels) if y]
    kept = [r for r, y in zip(risks, labels) if not y]
    assert len(churned) >= 10 and len(kept) >= 50
    assert statistics.median(churned) > statistics.median(kept)
    assert auc(labels, risks) > 0.6
    churned_days = [d for d, y in zip(days, labels) if y]
    kept_days = [d for d, y in zip(days, labels) if not y]
    assert statistics.median(churned_days) > statistics.median(kept_days)
