"""A timer's cost follows what it can produce: checks that cannot raise an alert ask no model and build no alert."""

from __future__ import annotations

from dataclasses import replace

import pytest

from crm_stream.config.settings import RuleSettings
from crm_stream.operators.events.timeutil import MS_PER_DAY
from crm_stream.operators.io.interface import MARKETING, SERVICE
from crm_stream.operators.profile.segments import Thresholds
from crm_stream.operators.profile.state import new_profile
from crm_stream.operators.rules import churn_risk, context, segment_change, win_back
from crm_stream.operators.rules.alerts import alert_id
from tests.events import T0, purchase
from tests.unit.test_rules import SETTINGS, Harness, items, opt_in

NO_MODELS = replace(SETTINGS, models=replace(SETTINGS.models, enabled=False))


def counting(h: Harness, monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Count the churn checks that fire and the churn predictions the rule asks for."""
    counts = {"checks": 0, "predictions": 0}
    predict, check = h.shard.churn_risk, churn_risk.on_timer

    def counted_predict(profile, as_of):
        counts["predictions"] += 1
        return predict(profile, as_of)

    def counted_check(ctx):
        counts["checks"] += 1
        return check(ctx)

    h.shard._served = (counted_predict, *h.shard._served[1:])  # what the rules' context serves as ctx.churn_risk
    monkeypatch.setattr(churn_risk, "on_timer", counted_check)
    return counts


def test_silent_one_time_buyers_are_checked_without_a_prediction_until_one_can_alert(monkeypatch):
    h = Harness(NO_MODELS)
    counts = counting(h, monkeypatch)
    customers = [f"c{i}" for i in range(20)]
    for i, cid in enumerate(customers):
        h.feed(purchase(cid, amount=30 + i, day=i * 0.1, items=items("books", 30 + i)))
    h.advance(T0 + 400 * MS_PER_DAY)
    # Each silence is checked several times (deadline's schedule), but a prediction is asked only where the
    # rhythm says the lapse is long enough and the alert was not raised already: at most once per silence.
    assert counts["checks"] >= 3 * len(customers)
    assert counts["predictions"] <= len(customers)


def test_a_consenting_customer_gets_one_prediction_per_alert(monkeypatch):
    h = Harness(NO_MODELS).feed(opt_in())
    counts = counting(h, monkeypatch)
    for i in range(6):
        h.feed(purchase("c1", amount=40, day=i * 10, items=items("coffee", 40)))
    h.advance(T0 + 200 * MS_PER_DAY)
    alerts = h.alerts("churn_risk")
    assert alerts and counts["predictions"] == len(alerts) < counts["checks"]


def test_a_check_that_cannot_alert_asks_no_model_but_lets_the_models_look():
    looked = []

    def no_model(_profile, _as_of):
        raise AssertionError("no prediction should be asked for a check that cannot alert")

    profile = new_profile("c1", T0)
    profile.update(frequency=1, monetary=10.0, last_purchase_at=T0, purchase_times=[T0], last_seen=T0)
    ctx = context(profile, now=T0 + MS_PER_DAY, churn_risk=no_model)  # one day of silence: the rhythm says not yet
    ctx.look = lambda p, at: looked.append(at)
    assert churn_risk.on_timer(ctx) == []
    assert looked == [T0 + MS_PER_DAY]


def test_win_back_builds_no_trigger_nobody_may_receive():
    profile = new_profile("c1", T0)
    times = [T0 + d * MS_PER_DAY for d in range(4)]
    profile.update(frequency=4, monetary=80.0, last_purchase_at=times[-1], purchase_times=times, last_seen=times[-1])
    now = times[-1] + 400 * MS_PER_DAY
    reachable = context(profile, now=now, reachable=lambda _p: True)
    assert [c.destination for c in win_back.on_timer(reachable)] == [MARKETING]
    assert win_back.on_timer(context(profile, now=now, reachable=lambda _p: False)) == []


def _first_crossing(frequency_one_gap: float, cfg) -> int:
    """The time of a one-time buyer's first churn check (``churn_risk.deadline``'s schedule): no earlier check crossed."""
    return T0 + int(max(cfg.churn_min_check_days, cfg.churn_check_gap_multiplier * frequency_one_gap) * MS_PER_DAY)


def _lapsed_buyer(valuable: bool) -> tuple[dict, int, Thresholds]:
    profile = new_profile("c1", T0)
    profile.update(frequency=1, monetary=500.0, last_purchase_at=T0, first_purchase_at=T0, purchase_times=[T0], last_seen=T0)
    lines = Thresholds(high_value=100.0 if valuable else 1e9, active_days=30.0, population_gap_days=30.0)
    return profile, _first_crossing(lines.population_gap_days, RuleSettings(churn_threshold=0.05)), lines


def test_a_silence_whose_call_went_out_already_asks_no_model_and_takes_no_budget_place():
    # Later lines can move the previous check's lapse back under the threshold (``_crossed_before`` then finds no
    # crossing): the check proposed the same call again, and its place in the day's budget went to a duplicate.
    profile, now, lines = _lapsed_buyer(valuable=True)
    cfg, book, looked = RuleSettings(churn_threshold=0.05, churn_daily_budget=1), churn_risk.ServiceBudget(), []
    fresh = context(profile, now=now, cfg=cfg, thresholds=lines, churn_risk=lambda _p, _a: 0.9)
    fresh.churn_budget = book
    assert [c.destination for c in churn_risk.on_timer(fresh)] == [SERVICE]  # the first proposal is a call

    profile["alerted"][alert_id(churn_risk.KIND, "c1", str(T0))] = now
    book = churn_risk.ServiceBudget()
    again = context(profile, now=now, cfg=cfg, thresholds=lines, churn_risk=no_model_asked)
    again.churn_budget, again.look = book, lambda _p, at: looked.append(at)
    assert churn_risk.on_timer(again) == []
    assert looked == [now]  # the models may still take the check as a prediction point
    assert book.admit(now, 1.0, 1)  # the day's one place is still free


def test_a_churn_check_nobody_could_be_told_of_asks_no_model():
    # Not high-value (no call) and no channel consented to (no trigger): nothing can go out, so no prediction.
    profile, now, lines = _lapsed_buyer(valuable=False)
    ctx = context(
        profile,
        now=now,
        cfg=RuleSettings(churn_threshold=0.05),
        thresholds=lines,
        churn_risk=no_model_asked,
        reachable=lambda _p: False,
    )
    assert churn_risk.on_timer(ctx) == []
    reachable = context(profile, now=now, cfg=RuleSettings(churn_threshold=0.05), thresholds=lines, churn_risk=lambda _p, _a: 0.9)
    assert [c.destination for c in churn_risk.on_timer(reachable)] == [MARKETING]


def test_segment_change_builds_no_trigger_nobody_may_receive():
    profile = new_profile("c1", T0)
    profile["segment"] = "lost"
    moved = context(profile, now=T0, segment_before="high_value", reachable=lambda _p: True)
    assert [c.destination for c in segment_change.on_event(moved)] == [MARKETING]
    assert segment_change.on_event(context(profile, now=T0, segment_before="high_value", reachable=lambda _p: False)) == []


def no_model_asked(_profile: dict, _as_of: int) -> float:
    raise AssertionError("no prediction should be asked for a check that cannot alert")
