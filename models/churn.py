"""The churn model: P(no purchase within the horizon), learned online from delayed labels.

A standardised, clipped logistic regression *on top of the streaming BG/NBD*
(models/components.OffsetLogistic, offset = the BG/NBD's logit of P(no purchase
in the horizon), feature ``bgnbd_churn_logit``; for a prospect, the rhythm
estimate's). Untrained, it serves exactly the probability model, which ranks
sanely from the first purchase on; trained, it learns corrections from what
the probability model cannot see: browsing, cart, support, rhythm regularity.
A linear model is the cheapest that learns well here (the repository's stack notes:
scaler + LR predict+learn ~56 k/s; trees are 4x-60x slower and pickle to
megabytes). It predicts only at prediction points and learns only when a
label arrives (models/labels.py), so its cost is per label, not per event.
The learning rate is 0.001 (``build``): the model learns a correction to an
offset that already ranks well, so it moves slowly. The clip (5 deviations)
was chosen on the simulated shop for the stand-alone model this replaced
(rate 0.01 there; unclipped features cost 0.02 AUC).

The recalibration of the BG/NBD logit depends on the stage of the silence
(``silence_stage_features``): one slope for every customer was right on the
prediction points, most of them at or just after a purchase, and wrong on the
long silences. On CDNOW at 30 days it shrank the logit of the one-time buyers
silent 270+ days at week 52 (55% of the customers at that cut) to 0.967 where
0.985 churned and the offset alone said 0.983: a Brier score worse than
BG/NBD's. A slope and a level per stage (log2 bins of the days since the last
purchase) fix that (0.05093 against BG/NBD's 0.05097) and move the progressive
AUC by -0.0003 at 30 days and +0.0003 at 90 (load/eval_real.py, docs/models.md).

>>> model = build(seed=1)
>>> predict(model, {"bgnbd_churn_logit": 0.0, "relative_recency": 2.0})  # untrained: the offset's probability
0.5
>>> for _ in range(3):
...     learn(model, {"bgnbd_churn_logit": 0.0, "relative_recency": 2.0}, True)
...     learn(model, {"bgnbd_churn_logit": 0.0, "relative_recency": 0.5}, False)
>>> predict(model, {"bgnbd_churn_logit": 0.0, "relative_recency": 2.0}) > 0.5
True
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from crm_stream.models.components import OffsetLogistic, learn_scaled, predict_proba_scaled
from crm_stream.models.features import FEATURE_NAMES

NAME = "churn"
OFFSET_FEATURE = "bgnbd_churn_logit"
SILENCE_STAGES = 8
"""Stages of a silence: under 3 days since the last purchase, then doubling bins (3-6, 6-12, ... 96-192), 192 on."""
_STAGE_COLUMNS = tuple((f"silence_stage_{k}", f"silence_stage_{k}_bgnbd_logit") for k in range(SILENCE_STAGES))
SILENCE_FEATURES: tuple[str, ...] = tuple(name for pair in _STAGE_COLUMNS for name in pair)
_NO_STAGE = dict.fromkeys(SILENCE_FEATURES, 0.0)
CORRECTION_FEATURES: tuple[str, ...] = (
    # what BG/NBD cannot see: how regular and how overdue the customer is against their own rhythm...
    "bgnbd_churn_logit",
    "gap_cv",
    "relative_recency",
    "log_relative_recency",
    "overdue",
    "rhythm_churn_logit",
    "log_avg_order_value",
    "purchases_30d",
    "purchases_90d",
    # ...and every browsing, cart, support, survey and consent feature, in features.py's order (one list to keep).
    *FEATURE_NAMES[FEATURE_NAMES.index("log_events") :],
    # ...and a level and a slope on the offset per stage of the silence (``silence_stage_features``).
    *SILENCE_FEATURES,
)
"""The correction's features. Recency, frequency and tenure themselves are left to the offset: BG/NBD
weighs them by maximum likelihood, and a linear correction on them, learned from labels that resolve in
bursts (every churn label of a day at once when the clock passes), only swung the model around (on CDNOW,
progressive AUC 0.73 with every feature against 0.83 for the offset alone)."""


def build(seed: int = 0, *, learning_rate: float = 0.001, l2: float = 1e-4, clip: float = 5.0) -> OffsetLogistic:
    """An untrained model. Linear models start at zero, so ``seed`` changes nothing today; it is
    taken (and kept in the snapshot) so every builder has the same signature and a stochastic model
    can replace this one without changing callers."""
    del seed
    return OffsetLogistic(
        OFFSET_FEATURE, learning_rate=learning_rate, l2=l2, clip=clip, clip_gradient=10.0, features=CORRECTION_FEATURES
    )


def silence_stage(recency_days: float) -> int:
    """The stage of a silence (``SILENCE_STAGES``) ``recency_days`` after the last purchase.

    >>> [silence_stage(d) for d in (0.0, 2.9, 3.0, 5.9, 6.0, 100.0, 191.0, 192.0, 900.0)]
    [0, 0, 1, 1, 2, 6, 6, 7, 7]
    """
    if recency_days < 3.0:
        return 0
    return min(SILENCE_STAGES - 1, int(math.log2(recency_days / 3.0)) + 1)


def silence_stage_features(x: Mapping[str, float]) -> dict[str, float]:
    """One-hot stage of the silence, and the offset's logit in that stage's column (0 in the others).

    Every column is always there: the scaler standardises a 0 differently from an absent feature.

    >>> f = silence_stage_features({"recency_days": 7.0, "bgnbd_churn_logit": 1.5})
    >>> f["silence_stage_2"], f["silence_stage_2_bgnbd_logit"], f["silence_stage_0"], f["silence_stage_0_bgnbd_logit"]
    (1.0, 1.5, 0.0, 0.0)
    """
    indicator, slope = _STAGE_COLUMNS[silence_stage(x.get("recency_days", 0.0))]
    out = _NO_STAGE.copy()  # on every prediction and learning step: a copy, not 16 names formatted
    out[indicator] = 1.0
    out[slope] = x.get(OFFSET_FEATURE, 0.0)
    return out


def predict(model: Any, x: Mapping[str, float]) -> float:
    """P(churn) for features ``x``; the offset's probability before the model has learned anything."""
    return float(predict_proba_scaled(model, {**x, **silence_stage_features(x)}).get(True, 0.0))


def learn(model: Any, x: Mapping[str, float], churned: bool) -> None:
    learn_scaled(model, {**x, **silence_stage_features(x)}, bool(churned))
