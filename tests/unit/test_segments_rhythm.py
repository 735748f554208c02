from __future__ import annotations

import pytest

from crm_stream.config.settings import SegmentSettings
from crm_stream.models import rhythm
from crm_stream.operators.profile.segments import Histogram, SegmentStats, segment_of

CFG = SegmentSettings()


def test_histogram_quantiles_follow_moves():
    h = Histogram()
    for v in range(1, 101):
        h.move(None, float(v))
    assert 70 <= h.quantile(0.8) <= 90
    for v in range(1, 81):
        h.move(float(v), 1000.0)
    assert h.quantile(0.5) > 500
    assert h.total == 100


def test_thresholds_adapt_to_the_data():
    cheap, pricey = SegmentStats(), SegmentStats()
    for i in range(100):
        cheap.monetary.move(None, 10.0 + i)
        pricey.monetary.move(None, 1000.0 + 10 * i)
        cheap.gap_days.move(None, 7.0)
        pricey.gap_days.move(None, 60.0)
    hv_cheap, active_cheap, _ = cheap.thresholds(CFG)
    hv_pricey, active_pricey, _ = pricey.thresholds(CFG)
    assert hv_cheap < 200 < hv_pricey
    assert active_cheap < active_pricey


@pytest.mark.parametrize(
    "args, expected",
    [
        ((0, 0.0, None, None, None), "prospect"),
        ((1, 30.0, 5.0, 5.0, None), "new"),
        ((5, 900.0, 200.0, 3.0, 20.0), "high_value"),
        ((5, 100.0, 200.0, 3.0, 20.0), "potential"),
        ((5, 900.0, 200.0, 40.0, 20.0), "at_risk"),
        ((1, 30.0, 60.0, 50.0, None), "sleeping"),
        ((5, 900.0, 400.0, 300.0, 20.0), "lost"),
    ],
)
def test_segment_rules(args, expected):
    assert segment_of(*args, high_value_line=500.0, active_days=30.0, cfg=CFG) == expected


def test_churn_risk_rises_with_silence_relative_to_own_rhythm():
    fresh = rhythm.churn_risk(10, 10.0, 2.0, 30, 20.0)
    overdue = rhythm.churn_risk(10, 10.0, 40.0, 30, 20.0)
    prospect = rhythm.churn_risk(0, None, None, 30, 20.0)
    assert 0 <= fresh < overdue <= 1 and prospect > fresh
    assert rhythm.next_purchase_in_days(10, 10.0, 4.0, 20.0) < rhythm.next_purchase_in_days(10, 10.0, 40.0, 20.0)
