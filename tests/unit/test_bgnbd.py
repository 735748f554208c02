"""BG/NBD and MBG/NBD (models/bgnbd.py), their streaming form (models/bgnbd_stream.py) and the offset churn model."""

from __future__ import annotations

import csv
import importlib.util
import math
import random
from pathlib import Path

import numpy as np
import pytest

from crm_stream.models import bgnbd, churn
from crm_stream.models.bgnbd_stream import PRIOR, StreamingBGNBD, cell_of
from crm_stream.models.components import OffsetLogistic

DAY = 86_400_000
PUBLISHED = bgnbd.Params(r=0.243, alpha=4.414, a=0.793, b=2.426)
"""Fader, Hardie & Lee (2005), CDNOW 1/10th sample (2,357 customers), 39-week calibration period, weeks."""


def _lifetimes_datasets() -> Path:
    spec = importlib.util.find_spec("lifetimes")  # the dev extra ships the data; the package is never imported
    assert spec is not None and spec.submodule_search_locations, "install the dev extras: pip install -e '.[dev]'"
    return Path(next(iter(spec.submodule_search_locations))) / "datasets"


def _calibration_from_transactions() -> tuple[list[float], list[float], list[float]]:
    """x, t_x, T (weeks) of the 2,357-customer sample's first 39 weeks, computed here from its raw purchase lines."""
    import datetime as dt

    days: dict[str, set[int]] = {}
    for line in (_lifetimes_datasets() / "CDNOW_sample.txt").read_text().splitlines():
        fields = line.split()
        if len(fields) == 5:
            date = dt.date(int(fields[2][:4]), int(fields[2][4:6]), int(fields[2][6:8]))
            days.setdefault(fields[0], set()).add(date.toordinal())
    end = dt.date(1997, 9, 30).toordinal()
    x, t_x, T = [], [], []
    for bought in days.values():
        inside = sorted(d for d in bought if d <= end)
        if inside:
            x.append(len(inside) - 1)
            t_x.append((inside[-1] - inside[0]) / 7)
            T.append((end - inside[0]) / 7)
    return x, t_x, T


def test_the_fit_reproduces_the_published_cdnow_parameters():
    rows = list(csv.DictReader(open(_lifetimes_datasets() / "cdnow_customers_summary.csv")))
    assert len(rows) == 2357
    fitted = bgnbd.fit([float(r["frequency"]) for r in rows], [float(r["recency"]) for r in rows], [float(r["T"]) for r in rows])
    for got, published in zip(fitted, PUBLISHED):
        assert got == pytest.approx(published, abs=0.0015)


def test_the_fit_from_the_raw_purchase_lines_matches_too():
    x, t_x, T = _calibration_from_transactions()
    assert len(x) == 2357
    fitted = bgnbd.fit(x, t_x, T)
    for got, published in zip(fitted, PUBLISHED):
        assert got == pytest.approx(published, rel=0.02)
    # The published log-likelihood at the published parameters: -9582.4 (Fader, Hardie & Lee 2005).
    assert bgnbd.log_likelihood(PUBLISHED, np.array(x), np.array(t_x), np.array(T)) == pytest.approx(-9582.4, abs=2.0)


def test_weighted_rows_count_like_repeated_customers():
    x, t_x, T = [0, 1, 3, 0, 2], [0.0, 5.0, 20.0, 0.0, 9.0], [30.0, 30.0, 31.0, 12.0, 25.0]
    weights = [3, 1, 2, 5, 1]
    repeated = [np.array(v, dtype=float) for v in zip(*[(a, b, c) for a, b, c, w in zip(x, t_x, T, weights) for _ in range(w)])]
    arrays = [np.array(v, dtype=float) for v in (x, t_x, T)]
    for model in bgnbd.MODELS:
        weighted = bgnbd.log_likelihood(PUBLISHED, *arrays, np.array(weights, dtype=float), model)
        assert weighted == pytest.approx(bgnbd.log_likelihood(PUBLISHED, *repeated, model=model), rel=1e-12)


@pytest.mark.parametrize("model", bgnbd.MODELS)
def test_the_likelihood_is_the_same_float_as_each_row_on_its_own(model):
    """The log-gamma terms are computed once per distinct repeat count (models/bgnbd.py): the sum must be the very
    float the row-by-row formula gives, so a refit follows the same optimiser path."""
    from scipy import special

    rng = np.random.default_rng(5)
    x = rng.integers(0, 20, 500).astype(float) * (rng.random(500) < 0.4)
    T = rng.uniform(0.5, 400.0, 500)
    t_x = np.minimum(T, rng.uniform(0.0, 400.0, 500)) * (x > 0)
    weights = rng.integers(1, 30, 500).astype(float)
    r, alpha, a, b = params = (0.3, 25.0, 0.7, 2.1)
    common = special.gammaln(r + x) - special.gammaln(r) + r * math.log(alpha)
    alive = -(r + x) * np.log(alpha + T)
    if model == bgnbd.BGNBD:
        beta = special.gammaln(a + b) + special.gammaln(b + x) - special.gammaln(b) - special.gammaln(a + b + x)
        with np.errstate(divide="ignore", invalid="ignore"):
            dead = np.where(x > 0, math.log(a) - np.log(np.maximum(b + x - 1, 1e-300)) - (r + x) * np.log(alpha + t_x), -np.inf)
    else:
        beta = special.gammaln(a + b) + special.gammaln(b + x + 1) - special.gammaln(b) - special.gammaln(a + b + x + 1)
        dead = math.log(a) - np.log(b + x) - (r + x) * np.log(alpha + t_x)
    expected = float(np.sum((common + beta + np.logaddexp(alive, dead)) * weights))
    assert bgnbd.log_likelihood(params, x, t_x, T, weights, model) == expected


def test_conditional_expectation_of_a_new_customer_is_the_unconditional_one():
    for t in (1.0, 13.0, 39.0, 78.0):
        assert bgnbd.expected_purchases(PUBLISHED, 0, 0.0, 0.0, t) == pytest.approx(
            bgnbd.unconditional_expected(PUBLISHED, t), rel=1e-9
        )


def test_p_none_is_a_probability_that_rises_with_silence_and_falls_with_frequency():
    assert bgnbd.p_alive(PUBLISHED, 0, 0.0, 39.0) == 1.0  # the BG/NBD trap the engine never serves
    assert bgnbd.p_alive(PUBLISHED, 0, 0.0, 39.0, bgnbd.MBGNBD) < 1.0
    for model in bgnbd.MODELS:
        silent = [bgnbd.p_none(PUBLISHED, 3, t_x, 39.0, 13.0, model) for t_x in (38.0, 30.0, 20.0, 5.0)]
        assert all(0.0 < p < 1.0 for p in silent) and silent == sorted(silent)
        busy = [bgnbd.p_none(PUBLISHED, x, 38.0, 39.0, 13.0, model) for x in (1, 3, 10)]
        assert busy == sorted(busy, reverse=True)


def test_mbgnbd_fits_cdnow_at_least_as_well_as_bgnbd():
    rows = list(csv.DictReader(open(_lifetimes_datasets() / "cdnow_customers_summary.csv")))
    data = [np.array([float(r[k]) for r in rows]) for k in ("frequency", "recency", "T")]
    lls = {model: bgnbd.log_likelihood(bgnbd.fit(*data, model=model), *data, model=model) for model in bgnbd.MODELS}
    assert lls[bgnbd.MBGNBD] >= lls[bgnbd.BGNBD] - 1.0


# -- the streaming form ----------------------------------------------------------------------------------


def _simulate(params: bgnbd.Params, customers: int, days: int, seed: int) -> list[tuple[str, int]]:
    """BG/NBD purchases (customer, day), everyone acquired in the first 30 days."""
    rng = random.Random(seed)
    out = []
    for c in range(customers):
        rate = rng.gammavariate(params.r, 1.0 / params.alpha)
        p = rng.betavariate(params.a, params.b)
        t = rng.uniform(0, 30)
        out.append((f"c{c}", int(t)))
        while True:
            t += rng.expovariate(rate) if rate > 0 else math.inf
            if t >= days:
                break
            out.append((f"c{c}", int(t)))
            if rng.random() < p:
                break  # dropped out after this repeat purchase (BG/NBD: never right after the first)
    return sorted(out, key=lambda e: (e[1], e[0]))


def _stream(purchases: list[tuple[str, int]], stream: StreamingBGNBD) -> dict[str, tuple[int, int, int]]:
    seen: dict[str, tuple[int, int, int]] = {}
    for customer, day in purchases:
        ts = day * DAY
        stream.advance(ts)
        old = seen.get(customer)
        frequency, first, last = (1, ts, ts) if old is None else (old[0] + 1, old[1], max(old[2], ts))
        if old is not None and (old[2] // DAY) == day:
            continue  # one purchase a day, as the literature counts them
        stream.on_purchase(None if old is None else cell_of(*old), cell_of(frequency, first, last), ts)
        seen[customer] = (frequency, first, last)
    return seen


def test_streaming_bgnbd_recovers_the_parameters_it_was_simulated_with():
    truth = bgnbd.Params(r=0.5, alpha=20.0, a=0.8, b=2.5)
    stream = StreamingBGNBD(refit_every_days=28, min_buyers=50, model=bgnbd.BGNBD)
    seen = _stream(_simulate(truth, 4000, 365, seed=3), stream)
    stream.advance(400 * DAY)
    assert stream.fits >= 10 and sum(stream.cells.values()) == len(seen)
    assert stream.params.r == pytest.approx(truth.r, rel=0.25)
    assert stream.params.alpha == pytest.approx(truth.alpha, rel=0.35)
    assert stream.params.a / (stream.params.a + stream.params.b) == pytest.approx(truth.a / (truth.a + truth.b), rel=0.3)


def test_streaming_bgnbd_is_deterministic_and_keeps_no_customer():
    purchases = _simulate(PRIOR, 500, 200, seed=5)
    one, two = StreamingBGNBD(7, 50), StreamingBGNBD(7, 50)
    _stream(purchases, one), _stream(purchases, two)
    assert one.params == two.params and one.fits == two.fits > 0
    assert all(isinstance(key, tuple) and all(isinstance(v, int) for v in key) for key in one.cells)


@pytest.mark.parametrize("model", bgnbd.MODELS)
def test_streaming_estimates_equal_the_closed_forms(model):
    stream = StreamingBGNBD(model=model)
    estimate = stream.estimate(4, 0, 40 * DAY, 100 * DAY, 90.0)
    assert estimate.p_none == pytest.approx(bgnbd.p_none(PRIOR, 3, 40.0, 100.0, 90.0, model), rel=1e-12)
    assert estimate.p_alive == pytest.approx(bgnbd.p_alive(PRIOR, 3, 40.0, 100.0, model), rel=1e-12)
    alive = bgnbd.p_alive(PRIOR, 3, 40.0, 100.0, model)
    if_alive = bgnbd.median_days_to_next(PRIOR, 3, 100.0, within=360.0)
    assert estimate.next_days == pytest.approx(alive * if_alive + (1 - alive) * 360.0, rel=1e-12)


@pytest.mark.parametrize("model", bgnbd.MODELS)
def test_days_if_return_is_the_median_within_the_window_without_the_weight_of_the_gone(model):
    estimate = StreamingBGNBD(model=model).estimate(1, 0, 0, 200 * DAY, 90.0)  # a one-time buyer silent for 200 days
    if_return = bgnbd.median_days_to_next(PRIOR, 0, 200.0, within=360.0)
    assert estimate.next_days_if_return == pytest.approx(if_return, rel=1e-12)
    assert estimate.next_days == pytest.approx(estimate.p_alive * if_return + (1 - estimate.p_alive) * 360.0, rel=1e-12)
    if model == bgnbd.MBGNBD:  # P(alive) < 1: the estimate for everyone is pulled towards W, the one if they return is not
        assert estimate.p_alive < 0.9 and estimate.next_days_if_return < estimate.next_days - 10


def test_too_few_buyers_keep_the_prior():
    stream = StreamingBGNBD(refit_every_days=1, min_buyers=10)
    stream.on_purchase(None, (0, 0, 0), 0)
    assert stream.advance(5 * DAY) is False and stream.params == PRIOR and stream.fits == 0


# -- the churn model on top of it ------------------------------------------------------------------------


def test_untrained_churn_model_serves_its_offset_and_learns_a_correction():
    model = churn.build()
    x = {"bgnbd_churn_logit": 1.5, "relative_recency": 0.0, "log_events": 0.0}
    assert churn.predict(model, x) == pytest.approx(1 / (1 + math.exp(-1.5)))
    rng = random.Random(1)
    for _ in range(3000):
        browsing = rng.random()
        churn.learn(model, {"bgnbd_churn_logit": 0.0, "log_events": browsing}, rng.random() > browsing)
    assert (
        churn.predict(model, {"bgnbd_churn_logit": 0.0, "log_events": 0.9})
        < 0.5
        < churn.predict(model, {"bgnbd_churn_logit": 0.0, "log_events": 0.1})
    )


def test_churn_model_recalibrates_its_offset_per_stage_of_the_silence():
    # Right after a purchase the offset is overconfident (the truth is half its logit), long silent it is right:
    # one slope for both gets the long silences wrong (CDNOW, models/churn.py); a slope per stage does not.
    model = churn.build(learning_rate=0.01)
    rng = random.Random(3)
    for _ in range(5000):
        for recency, low, shrink in ((0.0, -1.0, 0.5), (300.0, 2.0, 1.0)):
            logit = rng.uniform(low, 5.0)
            churned = rng.random() < 1 / (1 + math.exp(-shrink * logit))
            churn.learn(model, {"bgnbd_churn_logit": logit, "recency_days": recency}, churned)
    after_purchase = churn.predict(model, {"bgnbd_churn_logit": 4.0, "recency_days": 0.0})
    long_silent = churn.predict(model, {"bgnbd_churn_logit": 4.0, "recency_days": 300.0})
    assert after_purchase < 0.93 < long_silent


def test_offset_model_ignores_features_outside_its_correction():
    model = OffsetLogistic("base", learning_rate=0.5, features=("f",))
    for _ in range(50):
        model.learn_one({"base": 0.0, "f": 0.0, "g": 1.0}, True)
        model.learn_one({"base": 0.0, "f": 0.0, "g": -1.0}, False)
    assert "g" not in model.weights


def test_the_fit_is_the_same_whatever_order_shards_handle_a_batch_in():
    """A batch is handled shard by shard: a shard's late purchases arrive after another's later ones. Within the
    refit slack (``refit_every_days``), the fits as of each refit point are the same as in time order."""
    purchases = _simulate(PRIOR, 600, 240, seed=8)
    in_order = StreamingBGNBD(7, 50)
    _stream(purchases, in_order)
    by_shard = StreamingBGNBD(7, 50)
    batches: dict[int, list[tuple[str, int]]] = {}
    for customer, day in purchases:
        batches.setdefault(day // 5, []).append((customer, day))  # 5-day batches, then 4 shards in turn within each
    shuffled = [p for _, batch in sorted(batches.items()) for s in range(4) for p in batch if hash(p[0]) % 4 == s]
    assert shuffled != purchases
    _stream(shuffled, by_shard)
    assert in_order.fits == by_shard.fits > 10 and in_order.params == by_shard.params
