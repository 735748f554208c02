"""The real-data evaluation (load/eval_real.py): the paired comparison that says whether served beats a baseline; alert lift."""

from __future__ import annotations

import random

import pytest

from load.eval_real import alert_lift, auc, paired_auc_difference


def _labels_and_scores(n: int, seed: int) -> tuple[list[bool], list[float], list[float]]:
    rng = random.Random(seed)
    labels = [rng.random() < 0.3 for _ in range(n)]
    better = [(0.6 if y else 0.0) + rng.random() for y in labels]
    worse = [b + rng.gauss(0.0, 0.8) for b in better]  # the same signal plus noise: correlated, as sources are
    return labels, better, worse


def test_the_paired_difference_is_the_difference_of_the_aucs():
    labels, better, worse = _labels_and_scores(2_000, 1)
    diff, se = paired_auc_difference(labels, better, worse)
    assert diff == pytest.approx(auc(labels, better) - auc(labels, worse), abs=1e-12)
    assert diff > 3 * se > 0


def test_the_standard_error_shrinks_with_more_labels_and_vanishes_for_the_same_scores():
    small = paired_auc_difference(*_labels_and_scores(500, 2))[1]
    large = paired_auc_difference(*_labels_and_scores(20_000, 2))[1]
    assert large < small / 4
    labels, better, _ = _labels_and_scores(500, 3)
    assert paired_auc_difference(labels, better, better) == (0.0, 0.0)


def test_alert_lift_is_against_the_high_value_pool_and_counts_only_customers_silent_since_the_call():
    rows = [
        {"customer": "called", "last": 10, "churned": True, "high_value": True},
        {"customer": "bought_after", "last": 50, "churned": False, "high_value": True},  # bought after the call: not counted
        {"customer": "loyal", "last": 10, "churned": False, "high_value": True},
        {"customer": "once", "last": 10, "churned": True, "high_value": False},
        {"customer": "once2", "last": 10, "churned": True, "high_value": False},
    ]
    lift = alert_lift(rows, {"called": 20, "bought_after": 20})
    assert lift["alerted"] == 1 and lift["churn_rate"] == 1.0
    assert (
        lift["high_value"] == 3
        and lift["high_value_rate"] == pytest.approx(1 / 3)
        and lift["lift_high_value"] == pytest.approx(3.0)
    )
    assert lift["base_rate"] == pytest.approx(3 / 5) and lift["lift"] == pytest.approx(5 / 3)
    assert alert_lift(rows, {})["lift_high_value"] is None
