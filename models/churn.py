"""The churn model: P(no purchase within the horizon), learned online from delayed labels.

A standardised, clipped logistic regression (models/components.StandardClip):
the cheapest River pipeline that learns well here (../shared/perf-facts.md:
scaler + LR predict+learn ~56 k/s; trees are 4x-60x slower and pickle to
megabytes). It predicts only at prediction points and learns only when a
label arrives (models/labels.py), so its cost is per label, not per event.
The learning rate (0.01) and the clip (5 deviations) were chosen on the
simulated shop: 0.05 learned faster but overshot, 0.005 was slower to start,
and unclipped features cost 0.02 AUC.

>>> model = build(seed=1)
>>> predict(model, {"relative_recency": 2.0})  # untrained: no opinion yet
0.5
>>> for _ in range(3):
...     learn(model, {"relative_recency": 2.0}, True)
...     learn(model, {"relative_recency": 0.5}, False)
>>> predict(model, {"relative_recency": 2.0}) > 0.5 > predict(model, {"relative_recency": 0.5})
True
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from river import compose, linear_model, optim

from crm_stream.models.components import StandardClip, learn_scaled, predict_proba_scaled

NAME = "churn"


def build(seed: int = 0, *, learning_rate: float = 0.01, l2: float = 1e-4, clip: float = 5.0) -> compose.Pipeline:
    """An untrained pipeline. Linear models start at zero, so ``seed`` changes nothing today; it is
    taken (and kept in the snapshot) so every builder has the same signature and a stochastic model
    can replace this one without changing callers."""
    del seed
    return compose.Pipeline(
        StandardClip(clip),
        linear_model.LogisticRegression(
            optimizer=optim.SGD(learning_rate),
            l2=l2,
            intercept_lr=learning_rate,
            initializer=optim.initializers.Zeros(),
            clip_gradient=10.0,
        ),
    )


def predict(model: Any, x: Mapping[str, float]) -> float:
    """P(churn) for features ``x``; 0.5 before the model has learned anything."""
    return float(predict_proba_scaled(model, x).get(True, 0.0))


def learn(model: Any, x: Mapping[str, float], churned: bool) -> None:
    learn_scaled(model, x, bool(churned))
