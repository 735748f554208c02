"""churn_risk alerts sized for people: a daily service budget by value at risk, and reasons with the numbers used."""

from __future__ import annotations

import dataclasses

from crm_stream.config.settings import RuleSettings
from crm_stream.operators.events.timeutil import MS_PER_DAY
from crm_stream.operators.io.interface import MARKETING, SERVICE
from crm_stream.operators.profile.segments import Thresholds
from crm_stream.operators.profile.state import ProfileRules, apply, new_profile
from crm_stream.operators.rules import churn_risk, context

T0 = 1_767_225_600_000  # 2026-01-01
RULES = ProfileRules(14, 72, 64)


def _buyer(customer_id: str, amounts: list[float], every_days: float = 10.0) -> dict:
    profile = new_profile(customer_id, T0)
    for i, amount in enumerate(amounts):
        ts = T0 + int(i * every_days * MS_PER_DAY)
        event = {"event_id": f"{customer_id}-{i}", "type": "purchase", "ts": ts, "order_id": f"{customer_id}-o{i}"}
        apply(profile, {**event, "amount": amount, "amount_base": amount, "currency": "USD"}, RULES)
    return profile


def _check(profile: dict, now: int, book, *, risk: float = 0.9, horizon: float = 90.0, budget: int = 50, high_value=0.0):
    ctx = context(
        profile,
        now=now,
        thresholds=Thresholds(high_value=high_value, active_days=30.0, population_gap_days=30.0),
        cfg=dataclasses.replace(RuleSettings(), churn_daily_budget=budget),
        churn_risk=lambda _p, _t: risk,
        horizon_days=horizon,
    )
    return churn_risk.on_timer(dataclasses.replace(ctx, churn_budget=book))


def _first_check(profile: dict) -> int:
    """The first deadline at which the lapse risk crosses the threshold (the rule's own schedule)."""
    ctx = context(profile, now=profile["last_purchase_at"], horizon_days=90.0)
    while True:
        when = churn_risk.deadline(ctx)
        assert when is not None
        ctx = dataclasses.replace(ctx, now=when)
        if _check(profile, when, None):
            return when


def test_the_daily_budget_holds_under_a_burst():
    book = churn_risk.ServiceBudget()
    customers = [_buyer(f"c{i:03d}", [20.0 + i] * 5) for i in range(300)]  # same rhythm: every check lands on one day
    when = _first_check(customers[0])
    destinations = [dest for p in customers for dest, _ in _check(p, when, book, budget=50)]
    assert len(destinations) == 300  # every customer lapsed: each gets an alert or a trigger
    assert destinations.count(SERVICE) == 50 and destinations.count(MARKETING) == 250
    assert book.admitted(when) == 50


def test_a_day_stays_full_when_a_shard_fires_in_it_after_another_reached_weeks_later():
    # A batch of a sparse history spans weeks: one shard fires days D..D+20 before the next fires day D.
    book = churn_risk.ServiceBudget()
    day = MS_PER_DAY
    assert sum(book.admit(100 * day, 1.0, 2) for _ in range(3)) == 2
    for later in range(101, 121):
        book.admit(later * day, 1.0, 2)
    assert not book.admit(100 * day, 5.0, 2)  # day 100's two places were taken: none is opened again


def test_the_next_day_admits_only_what_would_have_made_yesterdays_list():
    book = churn_risk.ServiceBudget()
    day = MS_PER_DAY
    values = list(range(100))  # day 0: 100 candidates, budget 10 -> the bar for day 1 is the 10th best: 90
    assert sum(book.admit(5 * day, float(v), 10) for v in values) == 10
    assert [book.admit(6 * day, v, 10) for v in (89.0, 90.0, 150.0)] == [False, True, True]


def test_service_goes_to_the_most_value_at_risk_once_the_bar_is_set():
    book = churn_risk.ServiceBudget()
    small = [_buyer(f"s{i}", [5.0] * 5) for i in range(20)]
    big = [_buyer(f"b{i}", [500.0] * 5) for i in range(3)]
    when = _first_check(small[0])
    for p in small:  # day 1: small spenders fill the budget of 3 and set the bar
        _check(p, when, book, budget=3)
    next_day = [_buyer(f"t{i}", [4.0] * 5) for i in range(3)] + big  # smaller spenders first: they do not take the places
    later = when + MS_PER_DAY
    shifted = [_shift(p, MS_PER_DAY) for p in next_day]
    sent = {p["customer_id"]: _check(p, later, book, budget=3)[0][0] for p in shifted}
    assert [c for c, dest in sent.items() if dest == SERVICE] == ["b0", "b1", "b2"]


def _shift(profile: dict, by_ms: int) -> dict:
    out = dict(profile)
    for key in ("first_seen", "last_seen", "first_purchase_at", "last_purchase_at"):
        out[key] = profile[key] + by_ms
    out["purchase_times"] = [t + by_ms for t in profile["purchase_times"]]
    return out


def test_only_high_value_customers_get_a_call():
    book = churn_risk.ServiceBudget()
    profile = _buyer("c1", [40.0] * 6)
    when = _first_check(profile)
    [(destination, alert)] = _check(profile, when, book, high_value=1_000.0)
    assert destination == MARKETING and alert["payload"]["offer"] == "we-miss-you" and book.admitted(when) == 0


def test_reasons_state_the_horizon_and_the_numbers_used():
    profile = _buyer("c1", [40.0] * 6)
    when = _first_check(profile)
    [(_, alert)] = _check(profile, when, churn_risk.ServiceBudget(), risk=0.83, horizon=90.0)
    text = " | ".join(alert["reasons"])
    assert "next 90 days" in text and "30 days" not in text
    assert "served churn score: 83%" in text and "rhythm estimate (own purchase gaps)" in text
    assert alert["payload"]["horizon_days"] == 90.0 and alert["payload"]["model_churn_risk"] == 0.83
    assert alert["payload"]["value_at_risk"] > 0


def test_a_served_score_that_is_the_rhythm_estimate_is_stated_once():
    profile = _buyer("c1", [40.0] * 6)
    when = _first_check(profile)
    from crm_stream.models import rhythm

    silent = (when - profile["last_purchase_at"]) / MS_PER_DAY
    lapse = rhythm.churn_risk(profile["frequency"], profile["gap_mean_days"], silent, 90.0, 30.0)
    [(_, alert)] = _check(profile, when, None, risk=lapse, horizon=90.0)
    assert sum("chance of no purchase" in r for r in alert["reasons"]) == 1


def test_a_silence_is_proposed_once_not_at_every_later_check():
    profile = _buyer("c1", [40.0] * 6)
    when = _first_check(profile)
    ctx = context(profile, now=when, horizon_days=90.0)
    later = churn_risk.deadline(ctx)
    assert later is not None and _check(profile, later, churn_risk.ServiceBudget()) == []


def test_evaluate_runs_the_rules_with_the_models_horizon(tmp_path):
    """``crm-stream evaluate --churn-horizon-days 90``: the rules' horizon is the models', not the config's 30."""
    import orjson

    from crm_stream.operators.stages.evaluate import evaluate_file

    path = tmp_path / "events.jsonl"
    with open(path, "wb") as fh:
        for i in range(3):
            event = {"event_id": f"e{i}", "type": "purchase", "customer_id": "c1", "ts": T0 + i * 10 * MS_PER_DAY}
            fh.write(orjson.dumps({**event, "order_id": f"o{i}", "amount": 10.0, "currency": "USD"}) + b"\n")
    shards: dict = {}
    result = evaluate_file(path, 90.0, shards_out=shards)
    assert result["horizon_days"] == 90.0 and shards
    assert {shard.settings.engine.churn_horizon_days for shard in shards.values()} == {90.0}
