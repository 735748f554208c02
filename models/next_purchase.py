"""The next-purchase model: days until the customer's next purchase, and the likely category.

A correction to the naive estimate "the customer's usual gap minus the days
already elapsed" (feature ``gap_due_days``), learned by a standardised,
clipped linear regression with absolute loss, in days
(models/components.BaselineOffset). Untrained, it predicts that baseline.

Why not a log-transformed target: measured on the simulated shop, a log
target made MAE *worse* than the baseline (11 vs 6.6 days), whatever the
loss. Many prediction points fall in a visit that ends in a purchase minutes
later, so a tenth of the targets are ~0 days; in log space those are the
largest residuals and they dominate the fit, while MAE in days barely notices
them. Absolute loss in days aims at the conditional median, which is what MAE
rewards, and its gradient is bounded.

The next category is a rule, not a model: the category the customer has
bought most (most recent on ties), else their strongest decayed interest.

>>> model = build(seed=1)
>>> predict(model, {"gap_due_days": 12.0})  # untrained: the baseline
12.0
>>> for _ in range(300):
...     learn(model, {"gap_due_days": 12.0, "relative_recency": 0.0}, 20.0)
>>> 12.0 < predict(model, {"gap_due_days": 12.0, "relative_recency": 0.0}) <= 20.0
True
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from river import compose, linear_model, optim

from crm_stream.models.components import BaselineOffset, StandardClip

NAME = "next_purchase"
MAX_DAYS = 365.0
OFFSET_FEATURE = "gap_due_days"


def build(seed: int = 0, *, learning_rate: float = 0.003, l2: float = 1e-4, clip: float = 5.0) -> BaselineOffset:
    """An untrained model predicting days (``seed``: see models/churn.py's ``build``)."""
    del seed
    regressor = compose.Pipeline(
        StandardClip(clip),
        linear_model.LinearRegression(
            optimizer=optim.SGD(learning_rate),
            loss=optim.losses.Absolute(),
            l2=l2,
            intercept_lr=learning_rate,
            initializer=optim.initializers.Zeros(),
            clip_gradient=10.0,
        ),
    )
    return BaselineOffset(regressor, OFFSET_FEATURE)


def predict(model: Any, x: Mapping[str, float]) -> float:
    """Days until the next purchase, within [0, MAX_DAYS]."""
    return min(MAX_DAYS, max(0.0, float(model.predict_one(x))))


def learn(model: Any, x: Mapping[str, float], days: float) -> None:
    model.learn_one(x, max(0.0, days))


_UNKNOWN: Any = object()


def likely_category(
    profile: Mapping[str, Any], as_of_ms: int, interest_half_life_days: float = 14.0, *, top: str | None = _UNKNOWN
) -> str | None:
    """The category of the next purchase, by rule: most bought, else strongest interest (None if neither).

    ``top``: the result of ``top_interest(profile, as_of_ms, interest_half_life_days)`` when the caller
    has it already (the hub records both at every prediction point), so it is not computed twice.
    """
    bought = profile.get("category_purchases") or {}
    if bought:
        return max(bought.items(), key=lambda kv: (kv[1][0], kv[1][1], kv[0]))[0]
    if top is not _UNKNOWN:
        return top
    return top_interest(profile, as_of_ms, interest_half_life_days)


def top_interest(profile: Mapping[str, Any], as_of_ms: int, interest_half_life_days: float = 14.0) -> str | None:
    """The category with the highest decayed interest score as of ``as_of_ms`` (None if none is positive)."""
    half_life_ms = interest_half_life_days * 86_400_000
    best, best_score = None, 0.0
    for category, (value, ref) in sorted((profile.get("interests") or {}).items()):
        score = value * math.exp(-0.6931471805599453 * (as_of_ms - ref) / half_life_ms) if as_of_ms > ref else value
        if score > best_score:
            best, best_score = category, score
    return best
