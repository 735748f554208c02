"""The serving guard (models/guard.py): the hub serves whichever estimate ranks best recently, never worse than recency."""

from __future__ import annotations

import random

from crm_stream.models.evaluation import CHURN_SOURCES
from crm_stream.models.hub import ModelHub


def _score(hub: ModelHub, n: int, quality: dict[str, float], seed: int = 1) -> None:
    """``n`` churn labels scored for every source; ``quality``: how well each source separates (1 perfect, 0 noise, <0 inverted)."""
    rng = random.Random(seed)
    for _ in range(n):
        churned = rng.random() < 0.4
        scores = []
        for name in CHURN_SOURCES:
            q = quality.get(name, 0.0)
            signal = (1.0 if churned else 0.0) * q + (1.0 - abs(q)) * rng.random()
            scores.append(min(0.999, max(0.001, signal if q >= 0 else 1.0 - signal)))
        hub.evaluation.score_churn(churned, scores)
    hub.churn_learned = [n, n]


def test_the_guard_switches_away_from_a_model_that_ranks_worse():
    hub = ModelHub(30, warmup_labels=10, guard_every=1, guard_margin=0.005)
    _score(hub, 500, {"model": 0.8, "bgnbd": 0.4, "recency": 0.2, "rhythm": 0.1})
    hub._guard()
    assert hub.serving[0] == "model"
    _score(hub, 12_000, {"model": -0.3, "bgnbd": 0.4, "recency": 0.2, "rhythm": 0.1}, seed=2)  # the model went bad
    hub._guard()
    assert hub.serving[0] == "bgnbd" and hub.guard_switches >= 2
    assert hub.metrics()["hub"]["serving"]["churn"] == "bgnbd"


def test_the_guard_never_serves_a_score_that_ranks_worse_than_recency():
    hub = ModelHub(30, warmup_labels=10, guard_every=1, guard_margin=0.05)
    _score(hub, 3_000, {"model": 0.1, "bgnbd": 0.15, "recency": 0.5, "rhythm": -0.2})
    hub._guard()
    assert hub.serving[0] == "recency"


def test_the_guard_waits_for_warm_up():
    hub = ModelHub(30, warmup_labels=10_000, guard_every=1)
    _score(hub, 500, {"model": 0.9})
    hub.churn_learned = [500, 500]
    hub._guard()
    assert hub.serving == ["bgnbd", "bgnbd"]
