"""The serving guard: serve whichever estimate ranks (or predicts) best over the recent labels, never worse than recency.

The hub scores every source on the same prediction points (each score made before its label was known)
and hands the guard *complete cohorts*: every prediction H after it was made, churned or not
(models/evaluation.py ``CompleteCohorts``; in resolution order, churned labels come from older points than
bought ones, and a source whose scale drifts reads as a good ranker). Every ``every`` such labels the guard picks

- for churn, the source with the highest AUC among ``CHURN_CANDIDATES``, the mean of
  its rolling AUC and its AUC since the start
  (ties and near-ties, within ``margin`` plus the AUC's standard error over the window, keep the current
  choice, so the served source does not flap on noise: every switch mixes two scales in what was served);
  recency is a candidate, and a current choice below it, however close, gives way to the best source, so
  what is served never ranks worse than recency alone over the window;
- for next purchase, once gaps censored at W were scored, the lowest rolling error among ``DAYS_CANDIDATES``,
  counting for each censored gap the shortfall ``max(0, W - prediction)`` (on observed gaps alone "soon" for
  everyone wins, as churned customers are never scored); before that, ``choose_surely_better`` on the
  cohorts' best- and worst-case errors: only a source better whatever the unseen gaps turn out to be.

The decision depends only on the labels and event time, so replay and live switch at the same points.
Before ``warmup_labels`` cohort labels (of each class, for churn), the guard keeps its starting choice. For
churn that is the learned model: untrained it *is* the streaming MBG/NBD (a correction on its logit,
models/churn.py), so the cold start is the fitted population model, and the correction then serves unless
another source pulls ahead by more than the margin plus the AUC's noise over the window. Started on the
MBG/NBD instead, the guard never switched to the correction on CDNOW at 30 days, although it ranked
at least as well in 17 of 18 months (by ~0.005: inside the noise of one window). For next purchase it is the streaming MBG/NBD.

>>> choose({"model": 0.70, "bgnbd": 0.74, "recency": 0.72}, "model", margin=0.005, higher_is_better=True)
'bgnbd'
>>> choose({"model": 0.742, "bgnbd": 0.744, "recency": 0.72}, "model", margin=0.005, higher_is_better=True)
'model'
>>> choose({"model": 0.70, "bgnbd": 0.69, "recency": 0.71}, "model", margin=0.05, higher_is_better=True)  # never below recency
'recency'
>>> choose({"model": 0.545, "rhythm": 0.555, "recency": 0.50}, "model", margin=0.005, higher_is_better=True, noise=0.018)
'model'
>>> near = {"model": 0.529, "bgnbd": 0.529, "rhythm": 0.539, "recency": 0.538}
>>> choose(near, "model", margin=0.005, higher_is_better=True, noise=0.018)  # below recency, however close: the best
'rhythm'
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
START_CHURN = "model"
START_DAYS = "bgnbd"


def choose(scores: Mapping[str, float], current: str, *, margin: float, higher_is_better: bool, noise: float = 0.0) -> str:
    """The source to serve given each candidate's recent score (see the module doc); a switch needs a lead of
    more than ``margin + noise`` (``noise``: the scores' standard error, ``auc_standard_error``)."""
    sign = 1.0 if higher_is_better else -1.0
    top = max(scores, key=lambda name: (sign * scores[name], name == current))
    if current not in scores:
        return top
    best = current if sign * (scores[top] - scores[current]) <= margin + noise else top
    floor = scores.get(FLOOR_SOURCE)
    if higher_is_better and floor is not None and scores[best] < floor:
        return top  # below recency, however close: the best source, which ranks at least as well as recency
    return best


def auc_standard_error(positives: float, negatives: float) -> float:
    """The standard error of an AUC over ``positives`` and ``negatives`` labels, for scores that do not rank
    (Mann-Whitney: sqrt((n + 1) / (12 n+ n-))), an upper bound for scores that do; 1 without both classes.

    >>> round(auc_standard_error(200, 200), 3), round(auc_standard_error(8_000, 2_000), 4)
    (0.029, 0.0072)
    """
    if positives <= 0 or negatives <= 0:
        return 1.0
    return ((positives + negatives + 1.0) / (12.0 * positives * negatives)) ** 0.5


def choose_surely_better(bounds: Mapping[str, tuple[float, float]], current: str) -> str:
    """Errors known only within (best case, worst case): the source with the lowest worst case, if that beats the
    current source's best case (better whatever the unknown outcomes are), else the current one."""
    if current not in bounds:
        return min(bounds, key=lambda name: (bounds[name][1], name))
    best = min(bounds, key=lambda name: (bounds[name][1], name != current))
    return best if bounds[best][1] < bounds[current][0] else current
