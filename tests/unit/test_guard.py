"""The serving guard (models/guard.py): the hub serves whichever estimate ranks best recently, never worse than recency."""

from __future__ import annotations

import random

from crm_stream.models.evaluation import CHURN_SOURCES, DAYS_SOURCES
from crm_stream.models.hub import ModelHub

DAY_MS = 86_400_000


def _score(hub: ModelHub, n: int, quality: dict[str, float], seed: int = 1, days_error: dict[str, float] | None = None) -> None:
    """``n`` complete cohort labels scored for every source, as the hub scores them H after each prediction.

    ``quality``: how well each churn score separates (1 perfect, 0 noise, <0 inverted); ``days_error``: how far
    (days) each next-purchase source is off, on average (default 5 for all).
    """
    rng = random.Random(seed)
    days_rng = random.Random(-seed)  # its own draws: the churn scores do not depend on how many days sources there are
    days_error = days_error or {}
    for _ in range(n):
        churned = rng.random() < 0.4
        scores = []
        for name in CHURN_SOURCES:
            q = quality.get(name, 0.0)
            signal = (1.0 if churned else 0.0) * q + (1.0 - abs(q)) * rng.random()
            scores.append(min(0.999, max(0.001, signal if q >= 0 else 1.0 - signal)))
        gap = hub.horizon_days if churned else rng.uniform(1.0, hub.horizon_days)
        days = [max(0.0, gap + days_rng.choice((-1.0, 1.0)) * days_error.get(name, 5.0)) for name in DAYS_SOURCES]
        hub.cohorts.score(churned, scores, days, gap)


def test_the_guard_switches_away_from_a_model_that_ranks_worse():
    hub = ModelHub(30, warmup_labels=10, guard_every=1, guard_margin=0.005)
    assert hub.serving[0] == "model"  # the cold start: the untrained correction, i.e. the streaming MBG/NBD
    _score(hub, 500, {"model": -0.3, "bgnbd": 0.4, "recency": 0.2, "rhythm": 0.1})  # the model went bad
    hub._guard()
    assert hub.serving[0] == "bgnbd"
    _score(hub, 12_000, {"model": 0.8, "bgnbd": 0.4, "recency": 0.2, "rhythm": 0.1}, seed=2)  # ...and recovered
    hub._guard()
    assert hub.serving[0] == "model"
    _score(hub, 12_000, {"model": -0.3, "bgnbd": 0.4, "recency": 0.2, "rhythm": 0.1}, seed=3)
    hub._guard()
    assert hub.serving[0] == "bgnbd" and hub.guard_switches == 3
    assert hub.metrics()["hub"]["serving"]["churn"] == "bgnbd"


def test_a_lead_inside_the_noise_does_not_switch_the_same_lead_over_many_labels_does():
    few = ModelHub(30, warmup_labels=10, guard_every=1, guard_margin=0.0)
    _score(few, 400, {"model": 0.30, "bgnbd": 0.32}, seed=3)  # a draw where the better source does lead (0.013)
    few._guard()
    lead = few.cohorts.churn_auc("bgnbd") - few.cohorts.churn_auc("model")
    assert 0 < lead < 0.05 and few.serving[0] == "model"  # a few hundred labels: an AUC's noise is ~0.03
    many = ModelHub(30, warmup_labels=10, guard_every=1, guard_margin=0.0, window=100_000)
    _score(many, 60_000, {"model": 0.30, "bgnbd": 0.32})
    many._guard()
    assert many.serving[0] == "bgnbd"


def test_the_guard_never_serves_a_score_that_ranks_worse_than_recency():
    hub = ModelHub(30, warmup_labels=10, guard_every=1, guard_margin=0.05)
    _score(hub, 3_000, {"model": 0.1, "bgnbd": 0.15, "recency": 0.5, "rhythm": -0.2})
    hub._guard()
    assert hub.serving[0] == "recency"


def test_the_guard_waits_for_warm_up():
    hub = ModelHub(30, warmup_labels=10_000, guard_every=1)
    _score(hub, 500, {"model": -0.5, "bgnbd": 0.9}, days_error={"model": 1.0, "bgnbd": 90.0})
    hub._guard()
    assert hub.serving == ["model", "bgnbd"]


def test_the_guard_serves_the_next_purchase_source_that_is_clearly_better():
    hub = ModelHub(30, warmup_labels=10, guard_every=1)
    # The learned model ~2 days off, the cold start (MBG/NBD) ~150: whatever the gaps beyond H turn out to be
    # (up to W = 120 days), the model's worst case beats the MBG/NBD's best case.
    _score(hub, 1_000, {}, days_error={"model": 2.0, "gap": 6.0, "rhythm": 40.0, "bgnbd": 150.0})
    hub._guard()
    assert hub.serving[1] == "model"


def test_before_censored_gaps_the_guard_keeps_a_source_that_may_still_turn_out_better():
    hub = ModelHub(30, warmup_labels=10, guard_every=1)
    # A little closer on gaps within H, but the customers gone for good are where the sources differ:
    # the serving source predicts 120 days for them, the other 30; which is right shows only after W.
    rng = random.Random(3)
    for _ in range(1_000):
        churned = rng.random() < 0.7
        gap = 30.0 if churned else rng.uniform(1.0, 30.0)
        days = {"model": gap if not churned else 30.0, "bgnbd": gap + 3.0 if not churned else 120.0}
        hub.cohorts.score(churned, [0.5] * len(CHURN_SOURCES), [days.get(name, 60.0) for name in DAYS_SOURCES], gap)
    hub._guard()
    assert hub.serving[1] == "bgnbd"


def test_once_censored_gaps_are_scored_the_guard_compares_errors_counting_them():
    hub = ModelHub(30, warmup_labels=10, guard_every=1)
    hub.serving[1] = "model"
    order = {name: i for i, name in enumerate(DAYS_SOURCES)}
    predictions = [60.0] * len(DAYS_SOURCES)
    predictions[order["model"]], predictions[order["bgnbd"]] = 5.0, 130.0
    for i in range(300):  # a third come back after 5 days (the model is right), the rest never (MBG/NBD is)
        if i % 3 == 0:
            hub.evaluation.score_days(5.0, predictions)
        else:
            hub.evaluation.score_days_censored(hub.censor_days, predictions)
    hub.days_learned = 100
    hub._guard()
    assert hub.serving[1] == "bgnbd"  # on observed gaps alone the model would win (0 days off against 125)


def test_labels_reach_the_guard_in_complete_cohorts():
    """A purchase resolves its prediction at once, "no purchase" only after H: the guard sees both H after."""
    from tests.events import T0, purchase
    from tests.unit.test_models import Stream

    hub = ModelHub(30, seed=1)
    stream = Stream(hub)
    stream.send(purchase("a", day=0))
    stream.send(purchase("a", day=5))  # the day-0 prediction: bought within H
    stream.send(purchase("b", day=1))
    hub.advance(T0 + 6 * DAY_MS)
    assert hub.metrics()["churn"]["labels"] == 1 and hub.cohorts.labels == 0  # scored at once, compared later
    assert hub.churn_learned == [0, 0]  # ...and learned later too, with its cohort
    hub.advance(T0 + 32 * DAY_MS)  # H after both: a's day-0 and b's day-1 predictions (b churned)
    assert hub.cohorts.labels == 2 and hub.cohorts.positives == 1 and hub.churn_learned == [1, 1]
    assert hub.cohorts.days_bounds("model")[0] <= hub.cohorts.days_bounds("model")[1]
