"""The next-purchase model: days until the customer's next purchase, and the likely category.

Days are regressed on ``log1p(days)``: gaps are heavy-tailed and multiplicative
(a 60-day buyer is off by weeks, a weekly buyer by days), and squared error in
log space tracks the median, which is what mean absolute error rewards. The
regressor starts at ``prior_days`` so an untrained model already says
something sensible.

The next category is a rule, not a model: the category the customer has
bought most (most recent on ties), else their strongest decayed interest.

>>> model = build(seed=1)
>>> round(predict(model, {"log_typical_gap_days": 3.0}))  # untrained: the prior
30
>>> for _ in range(200):
...     model.learn_one({"log_typical_gap_days": 1.0}, 5.0)
>>> 3.0 < predict(model, {"log_typical_gap_days": 1.0}) < 7.0
True
"""

from __future__ import annotations

import math
from typing import Any, Mapping

from river import compose, linear_model, optim, preprocessing

NAME = "next_purchase"
MAX_DAYS = 365.0
_MAX_LOG = math.log1p(4 * MAX_DAYS)  # keeps expm1 finite whatever the weights say


def to_log_days(days: float) -> float:
    return math.log1p(max(0.0, days))


def from_log_days(value: float) -> float:
    return math.expm1(min(_MAX_LOG, max(0.0, value)))


def build(seed: int = 0, *, prior_days: float = 30.0, learning_rate: float = 0.01, l2: float = 1e-4) -> compose.TargetTransformRegressor:
    """An untrained pipeline predicting days (``seed``: see models/churn.py's ``build``)."""
    del seed
    regressor = preprocessing.StandardScaler() | linear_model.LinearRegression(
        optimizer=optim.SGD(learning_rate),
        l2=l2,
        intercept_init=to_log_days(prior_days),
        intercept_lr=learning_rate,
        initializer=optim.initializers.Zeros(),
        clip_gradient=10.0,
    )
    return compose.TargetTransformRegressor(regressor=regressor, func=to_log_days, inverse_func=from_log_days)


def predict(model: Any, x: Mapping[str, float]) -> float:
    """Days until the next purchase, within [0, MAX_DAYS]."""
    return min(MAX_DAYS, max(0.0, float(model.predict_one(x))))


def learn(model: Any, x: Mapping[str, float], days: float) -> None:
    model.learn_one(x, max(0.0, days))


def likely_category(profile: Mapping[str, Any], as_of_ms: int, interest_half_life_days: float = 14.0) -> str | None:
    """The category of the next purchase, by rule: most bought, else strongest interest (None if neither)."""
    bought = profile.get("category_purchases") or {}
    if bought:
        return max(bought.items(), key=lambda kv: (kv[1][0], kv[1][1], kv[0]))[0]
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
