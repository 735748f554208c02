"""The serving guard: serve whichever estimate ranks (or predicts) best over the recent labels, never worse than recency.

The hub scores every source on the same prediction points and labels as they
resolve (models/evaluation.py, progressive validation), so the comparison is
paired and honest: each score was made before its label was known. Every
``every`` labels the guard looks at the rolling window and picks

- for churn, the source with the highest AUC among ``CHURN_CANDIDATES``, the mean of
  its rolling AUC and its AUC since the start
  (ties and near-ties, within ``margin``, keep the current choice, so the served
  source does not flap on noise); recency is a candidate, so what is served
  never ranks worse than recency alone over the window;
- for next purchase, the lowest rolling error among ``DAYS_CANDIDATES``, counting for each
  censored gap (no purchase within the hub's window W) the shortfall ``max(0, W - prediction)``:
  on observed gaps alone "soon" for everyone wins, as churned customers are never scored.

The decision depends only on the labels, in their order, so replay and live
switch at the same points. Before ``min_labels`` labels of each class, the
guard keeps its starting choice (the streaming BG/NBD: a fitted population
model is a better cold start than an untrained regression).

>>> choose({"model": 0.70, "bgnbd": 0.74, "recency": 0.72}, "model", margin=0.005, higher_is_better=True)
'bgnbd'
>>> choose({"model": 0.742, "bgnbd": 0.744, "recency": 0.72}, "model", margin=0.005, higher_is_better=True)
'model'
>>> choose({"model": 0.70, "bgnbd": 0.69, "recency": 0.71}, "model", margin=0.05, higher_is_better=True)  # never below recency
'recency'
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
