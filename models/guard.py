"""The serving guard: serve whichever estimate ranks (or predicts) best over the recent labels, never worse than recency.

The hub scores every source on the same prediction points (each score made before its label was known)
and hands the guard *complete cohorts*: every prediction H after it was made, churned or not
(models/evaluation.py ``CompleteCohorts``; in resolution order, churned labels come from older points than
bought ones, and a source whose scale drifts reads as a good ranker). Every ``every`` such labels the guard picks

- for churn, the source with the highest AUC among ``CHURN_CANDIDATES``, the mean of
  its rolling AUC and its AUC since the start
  (ties and near-ties, within ``margin``, keep the current choice, so the served
  source does not flap on noise); recency is a candidate, so what is served
  never ranks worse than recency alone over the window;
- for next purchase, once gaps censored at W were scored, the lowest rolling error among ``DAYS_CANDIDATES``,
  counting for each censored gap the shortfall ``max(0, W - prediction)`` (on observed gaps alone "soon" for
  everyone wins, as churned customers are never scored); before that, ``choose_surely_better`` on the
  cohorts' best- and worst-case errors: only a source better whatever the unseen gaps turn out to be.

The decision depends only on the labels and event time, so replay and live switch at the same points.
Before ``warmup_labels`` cohort labels (of each class, for churn), the guard keeps its starting choice (the
streaming MBG/NBD: a fitted population model is a better cold start than an untrained regression).

>>> choose({"model": 0.70, "bgnbd": 0.74, "recency": 0.72}, "model", margin=0.005, higher_is_better=True)
'bgnbd'
>>> choose({"model": 0.742, "bgnbd": 0.744, "recency": 0.72}, "model", margin=0.005, higher_is_better=True)
'model'
>>> choose({"model": 0.70, "bgnbd": 0.69, "recency": 0.71}, "model", margin=0.05, higher_is_better=True)  # never below recency
'recency'
>>> choose_surely_better({"model": (8.0, 25.0), "bgnbd": (110.0, 150.0), "gap": (9.0, 30.0)}, "bgnbd")
'model'
>>> choose_surely_better({"model": (20.0, 120.0), "bgnbd": (30.0, 60.0)}, "bgnbd")  # could turn out worse: keep
'bgnbd'
"""

from __future__ import annotations

from collections.abc import Mapping

CHURN_CANDIDATES = ("model", "bgnbd", "rhythm", "recency")
DAYS_CANDIDATES = ("model", "bgnbd", "gap", "rhythm")
FLOOR_SOURCE = "recency"
START_CHURN = "bgnbd"
START_DAYS = "bgnbd"


def choose(scores: Mapping[str, float], current: str, *, margin: float, higher_is_better: bool) -> str:
    """The source to serve given each candidate's recent score (see the module doc)."""
    sign = 1.0 if higher_is_better else -1.0
    best = max(scores, key=lambda name: (sign * scores[name], name == current))
    if current not in scores:
        return best
    if sign * (scores[best] - scores[current]) <= margin:
        best = current
    floor = scores.get(FLOOR_SOURCE)
    if higher_is_better and floor is not None and scores[best] < floor:
        return FLOOR_SOURCE
    return best


def choose_surely_better(bounds: Mapping[str, tuple[float, float]], current: str) -> str:
    """Errors known only within (best case, worst case): the source with the lowest worst case, if that beats the
    current source's best case (better whatever the unknown outcomes are), else the current one."""
    if current not in bounds:
        return min(bounds, key=lambda name: (bounds[name][1], name))
    best = min(bounds, key=lambda name: (bounds[name][1], name != current))
    return best if bounds[best][1] < bounds[current][0] else current
