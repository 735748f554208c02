"""Progressive validation: every prediction is scored when its label arrives, before anyone learns from it.

The score recorded for a prediction is the one made at prediction time and
kept in the pending buffer (models/labels.py), so it cannot have seen its own
label; the hub calls ``score_*`` here and only then lets the model learn.
Baselines are scored on exactly the same prediction points and labels, so the
model-versus-baseline comparison is paired, not two samples of different
customers.

Churn: ROC AUC, Brier score and log loss, cumulative and over the last
``window`` labels. Next purchase: mean absolute error in days over observed
gaps, cumulative and rolling, plus ``mae_with_censored``: observed errors and,
for gaps censored at W (the customer had not bought W days later), the
shortfall ``max(0, W - prediction)``, a lower bound on the error there. A
model that predicts short gaps for customers who never return looks good on
observed gaps alone; the second figure does not let it hide.

River metrics are used throughout (rolling Brier, log loss and MAE as rolling
means of per-label losses, ~25x cheaper than ``utils.Rolling`` around the
metric; ``RollingMean`` is River's ``Mean`` in a window, leaner), except for
the cumulative AUC: River's
``ROCAUC`` integrates over ``n_thresholds`` evenly spaced on [0, 1] (10 by
default), far too coarse for scores packed near 0 or 1, and it costs one
confusion-matrix update per threshold. ``LogitBinnedAUC`` counts labels in
fine bins of the logit instead: O(1) per update, exact up to ties within a
bin (0.02 in logit).
"""

from __future__ import annotations

import collections
import math
from collections.abc import Iterable, Sequence
from typing import Any

from river import metrics

CHURN_SOURCES = ("model", "served", "rhythm", "recency", "bgnbd", "frequency")
"""Churn scores kept per prediction: the online model, what the hub served (the source its serving guard
chose: models/guard.py), the engine's rhythm estimate (models/rhythm.py), recency alone (days since last
purchase squashed), the streaming BG/NBD's P(no purchase in the horizon) (models/bgnbd_stream.py), and
frequency alone (1 / (1 + purchases))."""
DAYS_SOURCES = ("model", "served", "rhythm", "gap", "bgnbd", "if_return")
"""Next-purchase predictions kept per prediction: model, served, rhythm estimate, the customer's
typical gap minus the days already elapsed (floored at 0), the streaming BG/NBD's estimate (the median
days to the next purchase if alive, the censoring window W if not, weighted by P(alive)), and what the hub
serves as the days *if the customer returns* within W (``ModelHub.next_purchase_if_return_in_days``: the
BG/NBD's median among those futures). Only the last answers the question observed gaps score, and only on
them: counting censored gaps it is "soon" for everyone by design."""
CATEGORY_SOURCES = ("most_bought", "top_interest")


_P_MAX = 1.0 - 1e-12


class LogitBinnedAUC:
    """Cumulative ROC AUC from label counts in fine logit bins (see the module doc).

    >>> auc = LogitBinnedAUC()
    >>> for y, p in [(0, 0.1), (0, 0.4), (1, 0.35), (1, 0.8)]:
    ...     auc.update(y, p)
    >>> auc.get()
    0.75
    """

    LOW, HIGH, BINS = -10.0, 10.0, 1000

    def __init__(self) -> None:
        self.positives = [0] * self.BINS
        self.negatives = [0] * self.BINS

    def update(self, y_true: bool | int, y_pred: float) -> None:
        # min(1 - 1e-12, max(1e-12, y_pred)) and the bin's clamp, as comparisons: the same values (a NaN
        # goes to 1e-12 as ``max`` sends it there), without four builtin calls on a path taken ~17 times a label.
        p = y_pred if y_pred >= 1e-12 else 1e-12
        if p > _P_MAX:
            p = _P_MAX
        index = int((math.log(p / (1.0 - p)) - self.LOW) / (self.HIGH - self.LOW) * self.BINS)
        if index < 0:
            index = 0
        elif index >= self.BINS:
            index = self.BINS - 1
        (self.positives if y_true else self.negatives)[index] += 1

    def get(self) -> float:
        pos_total, neg_total = sum(self.positives), sum(self.negatives)
        if not pos_total or not neg_total:
            return 0.5
        wins, negatives_below = 0.0, 0
        for pos, neg in zip(self.positives, self.negatives):
            wins += pos * (negatives_below + 0.5 * neg)
            negatives_below += neg
        return wins / (pos_total * neg_total)


def _clamp(p: float) -> float:
    return min(1.0 - 1e-15, max(1e-15, p))  # as River's LogLoss clamps


class RollingMean:
    """The mean of the last ``window_size`` values: ``utils.Rolling(stats.Mean, window_size=...)``, leaner.

    The same arithmetic in the same order (River's ``Mean.update`` / ``Mean.revert`` with weight 1), so the
    same floats, bit for bit; without River's wrapper, which stores ``((x,), {})`` per value and reverts and
    updates through two method calls with keyword arguments (~1.5 us per update, ~17 updates per churn label).

    >>> from river import stats, utils
    >>> lean, river = RollingMean(3), utils.Rolling(stats.Mean, window_size=3)
    >>> for x in (1.0, 3.0, 5.0, 7.0, 0.1, 0.7):
    ...     lean.update(x)
    ...     river.update(x)
    ...     assert lean.get() == river.get()
    >>> lean.get()
    2.6
    """

    def __init__(self, window_size: int) -> None:
        self.window_size = window_size
        self.window: collections.deque[float] = collections.deque()
        self.n = 0.0
        self.mean = 0.0

    def update(self, x: float) -> None:
        window = self.window
        n, mean = self.n, self.mean
        if len(window) == self.window_size:
            old = window.popleft()
            n -= 1.0
            mean = mean - (1.0 / n) * (old - mean) if n else 0.0
        n += 1.0
        self.n, self.mean = n, mean + (1.0 / n) * (x - mean)
        window.append(x)

    def get(self) -> float:
        return self.mean


class _MeanOf:
    """A running mean of a per-label loss: River's ``MSE`` / ``MAE`` / ``LogLoss`` (a ``Mean`` of the loss, weight 1)
    with the same arithmetic, without the metric's ``_eval`` and keyword-argument calls (~17 updates per label)."""

    def __init__(self) -> None:
        self.n = 0.0
        self.mean = 0.0

    def _add(self, loss: float) -> None:
        n = self.n + 1.0
        self.n = n
        self.mean += (1.0 / n) * (loss - self.mean)

    def get(self) -> float:
        return self.mean


class SquaredError(_MeanOf):
    """``metrics.MSE``, leaner (the same floats).

    >>> from river import metrics
    >>> lean, river = SquaredError(), metrics.MSE()
    >>> for y, p in [(1.0, 0.9), (0.0, 0.3), (1.0, 0.05)]:
    ...     lean.update(y, p)
    ...     river.update(y, p)
    >>> lean.get() == river.get()
    True
    """

    def update(self, y_true: float, y_pred: float) -> None:
        self._add((y_true - y_pred) ** 2)


class AbsoluteError(_MeanOf):
    """``metrics.MAE``, leaner (the same floats)."""

    def update(self, y_true: float, y_pred: float) -> None:
        self._add(abs(y_true - y_pred))


class LogLoss(_MeanOf):
    """``metrics.LogLoss`` for a probability of True, leaner (the same floats: River clamps to [1e-15, 1 - 1e-15]).

    >>> from river import metrics
    >>> lean, river = LogLoss(), metrics.LogLoss()
    >>> for y, p in [(True, 0.9), (False, 0.3), (True, 0.0), (False, 1.0)]:
    ...     lean.update(y, p)
    ...     river.update(y, p)
    >>> lean.get() == river.get()
    True
    """

    def update(self, y_true: bool, y_pred: float) -> None:
        p = max(min(y_pred, 1 - 1e-15), 1e-15)
        self._add(-math.log(p) if y_true else -math.log(1 - p))


class ChurnScores:
    def __init__(self, window: int) -> None:
        self.auc = LogitBinnedAUC()
        self.brier = SquaredError()
        self.log_loss = LogLoss()
        self.rolling_auc = metrics.RollingROCAUC(window_size=window)
        # Rolling means of per-label losses: utils.Rolling(metrics.LogLoss) reverts through the
        # metric and costs ~25 us per update, a rolling mean ~1 us.
        self.rolling_brier = RollingMean(window)
        self.rolling_log_loss = RollingMean(window)

    def update(self, churned: bool, p: float) -> None:
        y = 1.0 if churned else 0.0
        self.auc.update(churned, p)
        self.brier.update(y, p)
        self.log_loss.update(churned, p)
        self.rolling_auc.update(churned, p)
        self.rolling_brier.update((y - p) ** 2)
        self.rolling_log_loss.update(-math.log(_clamp(p) if churned else 1.0 - _clamp(p)))

    def report(self) -> dict[str, float]:
        return {
            "auc": self.auc.get(),
            "brier": self.brier.get(),
            "log_loss": self.log_loss.get(),
            "rolling_auc": self.rolling_auc.get(),
            "rolling_brier": self.rolling_brier.get(),
            "rolling_log_loss": self.rolling_log_loss.get(),
        }


class DaysScores:
    def __init__(self, window: int) -> None:
        self.mae = AbsoluteError()
        self.rolling_mae = RollingMean(window)
        self.rolling_with_censored = RollingMean(window)
        """Rolling mean of observed errors and censored shortfalls together: what the serving guard compares."""
        self.shortfall = 0.0
        self.censored = 0

    def update(self, days: float, predicted: float) -> None:
        self.mae.update(days, predicted)
        error = abs(days - predicted)
        self.rolling_mae.update(error)
        self.rolling_with_censored.update(error)

    def update_censored(self, lower_bound_days: float, predicted: float) -> None:
        shortfall = max(0.0, lower_bound_days - predicted)
        self.shortfall += shortfall
        self.rolling_with_censored.update(shortfall)
        self.censored += 1

    def with_censored(self, observed: int) -> float:
        """Mean error since the start over ``observed`` gaps and every censored one (its shortfall)."""
        total = observed + self.censored
        return (self.mae.get() * observed + self.shortfall) / total if total else 0.0

    def report(self, observed: int) -> dict[str, float]:
        return {
            "mae": self.mae.get(),
            "rolling_mae": self.rolling_mae.get(),
            "mae_with_censored": self.with_censored(observed),
        }


class CompleteCohorts:
    """What the serving guard compares: each prediction scored once its horizon H has passed, in that order.

    Progressive scores take labels as they resolve, and a purchase resolves a prediction at once while
    "no purchase" waits H days: at any moment the churned labels come from predictions at least H old and
    the bought ones also from the newest. A source whose scale drifts over time (a model in training, a
    population fit that moves) then "ranks" old points above new ones and reads as a good churn ranker
    (measured on the simulated shop: the model 0.78 on the first 2,400 labels, 0.73 on the points it was
    then served for, where rhythm had 0.75). Here every prediction is scored at made-at + H, churned or not,
    so each comparison is over complete cohorts.

    Next purchase, the same cohorts give bounds on the error counting censored gaps (``mae_with_censored``,
    what the guard compares once gaps censored at W are scored, months later): a gap within H is its error;
    for a gap longer than H (churned) the error will lie between ``max(0, H - p)`` (the gap turns out as close
    to the prediction ``p`` as it can) and ``max(|H - p|, |W - p|)`` (as far). A source whose worst case beats
    the serving one's best case is better whatever the unseen gaps turn out to be: the guard switches to it
    before W has passed, and only then (measured: on the simulated shop the learned model's worst case, 25
    days, beats the cold start's best, 110; on CDNOW at 90 days, where most customers never return, no source's
    worst case beats the MBG/NBD's best, and it rightly keeps serving).

    >>> cohorts = CompleteCohorts(100, horizon_days=30.0, censor_days=120.0)
    >>> cohorts.score(True, [0.9, 0.9, 0.2, 0.5, 0.5, 0.5], [10.0, 10.0, 40.0, 40.0, 40.0], 30.0)
    >>> cohorts.score(False, [0.1, 0.1, 0.8, 0.5, 0.5, 0.5], [5.0, 5.0, 5.0, 40.0, 40.0], 5.0)
    >>> cohorts.churn_auc("model"), cohorts.churn_auc("rhythm")
    (1.0, 0.0)
    >>> cohorts.days_bounds("model"), cohorts.days_bounds("gap")  # (best case, worst case) of the mean error
    ((10.0, 55.0), (17.5, 57.5))
    """

    def __init__(self, window: int, *, horizon_days: float, censor_days: float) -> None:
        self.horizon_days = horizon_days
        self.censor_days = censor_days
        self.auc = {name: LogitBinnedAUC() for name in CHURN_SOURCES}
        self.rolling_auc = {name: metrics.RollingROCAUC(window_size=window) for name in CHURN_SOURCES}
        self.days_low = {name: RollingMean(window) for name in DAYS_SOURCES}
        self.days_high = {name: RollingMean(window) for name in DAYS_SOURCES}
        self.days_auc = {name: LogitBinnedAUC() for name in DAYS_SOURCES}
        """How well each next-purchase estimate ranks the customers who leave (longer) above those who buy."""
        self.labels = 0
        self.positives = 0

    def score(self, churned: bool, churn: Sequence[float], days: Sequence[float], gap_days: float) -> None:
        """One prediction, H after it was made: churned or not, the sources' scores, and the gap (any when churned)."""
        self.labels += 1
        self.positives += churned
        for name, p in zip(CHURN_SOURCES, churn):
            self.auc[name].update(churned, p)
            self.rolling_auc[name].update(churned, p)
        h, w = self.horizon_days, self.censor_days
        for name, predicted in zip(DAYS_SOURCES, days):
            if churned:
                low, high = max(0.0, h - predicted), max(abs(h - predicted), abs(w - predicted))
            else:
                low = high = abs(gap_days - predicted)
            self.days_low[name].update(low)
            self.days_high[name].update(high)
            self.days_auc[name].update(churned, predicted / (predicted + h) if predicted > 0 else 0.0)

    def churn_auc(self, name: str) -> float:
        """The mean of the rolling AUC and the AUC since the start (one burst does not swing it)."""
        return 0.5 * (self.rolling_auc[name].get() + self.auc[name].get())

    def days_ranks_churners_later(self, name: str) -> bool:
        """Does the source clearly tell customers who leave a longer wait than those who buy (AUC of 0.55 or more)?"""
        return self.days_auc[name].get() >= 0.55

    def days_bounds(self, name: str) -> tuple[float, float]:
        """(best case, worst case) of the source's rolling next-purchase error once every gap is known (class doc)."""
        return self.days_low[name].get(), self.days_high[name].get()


class ProgressiveValidation:
    """Paired, test-then-train scores for the models and their baselines.

    Sequences of predictions are ordered like ``CHURN_SOURCES`` / ``DAYS_SOURCES`` / ``CATEGORY_SOURCES``.
    """

    def __init__(self, window: int = 10_000) -> None:
        self.window = window
        self.churn = {name: ChurnScores(window) for name in CHURN_SOURCES}
        self.days = {name: DaysScores(window) for name in DAYS_SOURCES}
        self.churn_labels = 0
        self.churn_positives = 0
        self.days_observed = 0
        self.days_censored = 0
        self.category_scored = 0
        self.category_hits = dict.fromkeys(CATEGORY_SOURCES, 0)

    def score_churn(self, churned: bool, predictions: Sequence[float]) -> None:
        self.churn_labels += 1
        self.churn_positives += bool(churned)
        for name, p in zip(CHURN_SOURCES, predictions):
            self.churn[name].update(bool(churned), p)

    def score_days(self, days: float, predictions: Sequence[float]) -> None:
        self.days_observed += 1
        for name, predicted in zip(DAYS_SOURCES, predictions):
            self.days[name].update(days, predicted)

    def score_days_censored(self, lower_bound_days: float, predictions: Sequence[float]) -> None:
        self.days_censored += 1
        for name, predicted in zip(DAYS_SOURCES, predictions):
            self.days[name].update_censored(lower_bound_days, predicted)

    def score_category(self, bought: Iterable[str], predictions: Sequence[str | None]) -> None:
        """A hit when the predicted category is among those of the next purchase."""
        bought = set(bought)
        if not bought:
            return  # an order without line items says nothing about categories
        self.category_scored += 1
        for name, category in zip(CATEGORY_SOURCES, predictions):
            self.category_hits[name] += category in bought

    def report(self) -> dict[str, Any]:
        labels = self.churn_labels
        return {
            "churn": {
                "labels": labels,
                "positive_rate": self.churn_positives / labels if labels else 0.0,
                **{name: scores.report() for name, scores in self.churn.items()},
            },
            "next_purchase": {
                "observed": self.days_observed,
                "censored": self.days_censored,
                **{name: scores.report(self.days_observed) for name, scores in self.days.items()},
            },
            "category": {
                "scored": self.category_scored,
                **{
                    name: (hits / self.category_scored if self.category_scored else 0.0)
                    for name, hits in self.category_hits.items()
                },
            },
        }


def format_table(report: dict[str, Any]) -> str:
    """The report as a plain-text table: one row per source, model first."""
    rows = []
    churn = report["churn"]
    rows.append(f"churn: {churn['labels']} labels, {churn['positive_rate']:.1%} churned")
    rows.append(f"  {'source':<10} {'AUC':>7} {'Brier':>7} {'logloss':>8} | {'rAUC':>7} {'rBrier':>7} {'rlogloss':>8}")
    for name in CHURN_SOURCES:
        s = churn[name]
        rows.append(
            f"  {name:<10} {s['auc']:>7.4f} {s['brier']:>7.4f} {s['log_loss']:>8.4f} | "
            f"{s['rolling_auc']:>7.4f} {s['rolling_brier']:>7.4f} {s['rolling_log_loss']:>8.4f}"
        )
    days = report["next_purchase"]
    rows.append(f"next purchase: {days['observed']} observed gaps, {days['censored']} censored")
    rows.append(f"  {'source':<10} {'MAE':>7} {'rMAE':>7} {'MAE+cens':>9}")
    for name in DAYS_SOURCES:
        s = days[name]
        rows.append(f"  {name:<10} {s['mae']:>7.2f} {s['rolling_mae']:>7.2f} {s['mae_with_censored']:>9.2f}")
    category = report["category"]
    rows.append(
        f"next category: {category['scored']} purchases scored; hit rate "
        + ", ".join(f"{name} {category[name]:.1%}" for name in CATEGORY_SOURCES)
    )
    return "\n".join(rows)
