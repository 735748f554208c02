"""RFM segmentation with thresholds that adapt to the data.

"High value" and "active" mean different things in a coffee shop and a
furniture store, so the thresholds are read off the customers themselves:
the high-value line is a quantile of monetary value, the activity window a
multiple of the median purchase gap. Both come from log-bucketed histograms
kept per shard: O(1) to update as a customer's value moves, mergeable, and
deterministic (no sampling), which replay needs.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from crm_stream.config.settings import SegmentSettings
from crm_stream.operators.events.timeutil import MS_PER_DAY

SEGMENTS = ("prospect", "new", "high_value", "potential", "at_risk", "sleeping", "lost")
_BUCKETS = 160  # log2 buckets of 1/8 octave: covers 1 .. 2^20


def _bucket(value: float) -> int:
    if value <= 1.0:
        return 0
    return min(_BUCKETS - 1, int(math.log2(value) * 8) + 1)


def _bucket_value(index: int) -> float:
    return 1.0 if index == 0 else 2.0 ** ((index - 0.5) / 8)


class Histogram:
    """Counts of values in log buckets; supports moving one value to another."""

    __slots__ = ("counts", "total")

    def __init__(self, counts: list[int] | None = None) -> None:
        self.counts = counts if counts is not None else [0] * _BUCKETS
        self.total = sum(self.counts)

    def move(self, old: float | None, new: float | None) -> None:
        if old is not None:
            b = _bucket(old)
            if self.counts[b] > 0:
                self.counts[b] -= 1
                self.total -= 1
        if new is not None:
            self.counts[_bucket(new)] += 1
            self.total += 1

    def quantile(self, q: float) -> float | None:
        if self.total == 0:
            return None
        rank = q * self.total
        seen = 0
        for index, count in enumerate(self.counts):
            seen += count
            if seen >= rank and count:
                return _bucket_value(index)
        return _bucket_value(_BUCKETS - 1)


class Thresholds(NamedTuple):
    high_value: float
    """Monetary value from which a customer counts as high value."""
    active_days: float
    """Days without a purchase after which a customer is no longer active."""
    population_gap_days: float
    """Median purchase gap across customers: the prior for customers with few purchases."""


class SegmentStats:
    """Distributions behind the adaptive thresholds (monetary value; mean purchase gap in days)."""

    def __init__(self, monetary: Histogram | None = None, gap_days: Histogram | None = None) -> None:
        self.monetary = monetary or Histogram()
        self.gap_days = gap_days or Histogram()

    def to_dict(self) -> dict[str, Any]:
        return {"monetary": self.monetary.counts, "gap_days": self.gap_days.counts}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SegmentStats:
        return cls(Histogram(list(data["monetary"])), Histogram(list(data["gap_days"])))

    def track(self, before: tuple[int, float, float | None], profile: dict[str, Any]) -> None:
        """Move the distributions from a profile's (frequency, monetary, mean gap) before an event to after it."""
        old_freq, old_monetary, old_gap = before
        self.monetary.move(old_monetary if old_freq else None, profile["monetary"] if profile["frequency"] else None)
        self.gap_days.move(old_gap, profile["gap_mean_days"])

    def forget(self, profile: dict[str, Any]) -> None:
        """Take an erased customer out of the distributions (shop-wide state keeps aggregates only)."""
        if profile["frequency"]:
            self.monetary.move(profile["monetary"], None)
            if profile["gap_mean_days"] is not None:
                self.gap_days.move(profile["gap_mean_days"], None)

    def thresholds(self, cfg: SegmentSettings) -> Thresholds:
        high_value = self.monetary.quantile(cfg.high_value_quantile) if self.monetary.total >= 20 else None
        median_gap = self.gap_days.quantile(0.5) if self.gap_days.total >= 20 else None
        active = cfg.active_gap_multiplier * median_gap if median_gap else cfg.min_active_days * 2
        active = min(cfg.max_active_days, max(cfg.min_active_days, active))
        population_gap = median_gap or cfg.min_active_days * 2
        return Thresholds(high_value if high_value is not None else math.inf, active, population_gap)


def segment_of(
    frequency: int,
    monetary: float,
    first_purchase_days_ago: float | None,
    recency_days: float | None,
    own_gap_days: float | None,
    high_value_line: float,
    active_days: float,
    cfg: SegmentSettings,
) -> str:
    """Classify one customer. Activity is judged against the customer's own rhythm when known."""
    if frequency == 0 or recency_days is None:
        return "prospect"
    window = (
        active_days if not own_gap_days else min(cfg.max_active_days, max(active_days, cfg.active_gap_multiplier * own_gap_days))
    )
    if recency_days > cfg.lost_gap_multiplier * window:
        return "lost"
    if recency_days > window:
        return "at_risk" if monetary >= high_value_line or frequency >= 3 else "sleeping"
    if frequency == 1 and first_purchase_days_ago is not None and first_purchase_days_ago <= cfg.new_customer_days:
        return "new"
    if monetary >= high_value_line:
        return "high_value"
    return "potential"


class ThresholdBoard:
    """Thresholds read off all shards of a process together.

    One shard of a small shop may hold too few customers to say what "high
    value" means there; hash sharding makes the union of shards a fair sample
    of everyone. Recomputed every ``refresh`` updates, not per event.
    """

    def __init__(self, cfg: SegmentSettings, refresh: int = 256) -> None:
        self.cfg = cfg
        self.refresh = refresh
        self.members: dict[int, SegmentStats] = {}
        self._updates = refresh
        self._due = 1
        """Updates after which the cached lines are stale: ``refresh``, or fewer while the population is small."""
        self._cached = SegmentStats().thresholds(cfg)

    def register(self, shard: int, stats: SegmentStats) -> None:
        self.members[shard] = stats
        self._updates = self.refresh

    def note_update(self) -> None:
        self._updates += 1

    def thresholds(self, *, fresh: bool = False) -> Thresholds:
        # Every `refresh` updates, or sooner while the population is small and each customer moves the lines.
        # Called for every event: one comparison unless due.
        if fresh or self._updates >= self._due:
            merged = merge_stats(list(self.members.values()))
            self._cached = merged.thresholds(self.cfg)
            self._due = min(self.refresh, max(1, merged.monetary.total // 10))
            self._updates = 0
        return self._cached


def merge_stats(parts: list[SegmentStats]) -> SegmentStats:
    monetary = [sum(col) for col in zip(*(p.monetary.counts for p in parts))] if parts else None
    gaps = [sum(col) for col in zip(*(p.gap_days.counts for p in parts))] if parts else None
    return SegmentStats(Histogram(monetary), Histogram(gaps))


def profile_segment(profile: dict[str, Any], as_of: int, thresholds: Thresholds, cfg: SegmentSettings) -> str:
    """The segment of a profile as of an event time, under the shop's current thresholds."""
    first, last = profile["first_purchase_at"], profile["last_purchase_at"]
    return segment_of(
        profile["frequency"],
        profile["monetary"],
        (as_of - first) / MS_PER_DAY if first is not None else None,
        max(0.0, (as_of - last) / MS_PER_DAY) if last is not None else None,
        profile["gap_mean_days"],
        thresholds.high_value,
        thresholds.active_days,
        cfg,
    )
