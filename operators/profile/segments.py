"""RFM segmentation with thresholds that adapt to the data.

"High value" and "active" mean different things in a coffee shop and a
furniture store, so the thresholds are read off the customers themselves:
the high-value line is a quantile of monetary value, the activity window a
multiple of the median purchase gap. Both come from log-bucketed histograms
kept per shard: O(1) to update as a customer's value moves, mergeable, and
deterministic (no sampling), which replay needs.
"""

from __future__ import annotations

import bisect
import heapq
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


EVENT_LINES_LAG_MS = 60 * MS_PER_DAY
"""Deadlines armed by an event, and the models' features, read the shop's lines of this much earlier event time.
Live, a purchases partition is read weeks ahead of the watermark, when the lines of its own day are not complete
yet; those of two months before are, live and in replay alike (a timer, fired at the watermark, reads its own day's)."""


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


GRID_MS = MS_PER_DAY
"""The thresholds in force during a day of event time are read off the distributions as they stood at the start of
the day before: a day's slack, so that a shard read a batch ahead of the others seldom waits for them."""
KEEP_LINES = 400
"""Grid points whose thresholds are kept (a timer held back by a slow partition still finds its day's lines)."""


class ThresholdBoard:
    """Thresholds read off all shards of a process together, as a function of event time.

    One shard of a small shop may hold too few customers to say what "high value" means there; hash sharding
    makes the union of shards a fair sample of everyone.

    Live, partitions are read at different speeds: when a shard applies a purchase, other shards may not have
    applied purchases of an earlier time yet, or may have applied later ones. Lines computed from whatever had
    arrived would differ between live and replay, and so would every segment judged with them. So each move of
    a customer's value is logged with its event time, and the lines of grid point ``g`` (the start of an
    event-time day, ``GRID_MS``) are computed from exactly the moves with ``ts <= g``, once every shard's
    watermark has passed ``g`` (``advance``): then no move of that time can still arrive. ``thresholds_at(ts)``
    gives the lines in force at ``ts``, the same live and in replay, or None while they are not complete yet.
    ``thresholds()`` (views, and the reads that are not judged in event time) gives the newest complete lines.

    After a restart the distributions the shards stored stand for "as of the restart": moves before it are not
    told apart by time any more (the lines of the first days after a restart may differ from a replay's).
    """

    def __init__(self, cfg: SegmentSettings, refresh: int = 256, *, settle_reports: int = 2) -> None:
        """``settle_reports``: reports from every member before any line is computed (``_settled``); 1 for a board
        one shard has to itself."""
        self.cfg = cfg
        self.settle_reports = settle_reports
        self.members: dict[int, SegmentStats] = {}
        """Each shard's current distributions (the shard persists them)."""
        self.watermarks: dict[int, int] = {}
        self._reports: dict[int, int] = {}
        """How many times each shard has reported a watermark (``_settled``)."""
        self._asof = SegmentStats()
        """The distributions as of ``self.through``: every logged move with ``ts <= through`` applied."""
        self.through: int | None = None
        self._pending: list[tuple[int, int, int, float | None, float | None]] = []
        """Moves not yet applied to ``_asof``, a heap of (ts, histogram: 0 monetary / 1 gap, arrival, old, new)."""
        self._arrivals = 0
        self._points: list[int] = []
        self._lines: list[Thresholds] = []
        self._cached = SegmentStats().thresholds(cfg)

    def register(self, shard: int, stats: SegmentStats) -> None:
        if shard in self.members:
            return
        self.members[shard] = stats
        # Restored distributions (a restart) count from now on; a new shard's are empty.
        for mine, theirs in ((self._asof.monetary, stats.monetary), (self._asof.gap_days, stats.gap_days)):
            for i, count in enumerate(theirs.counts):
                mine.counts[i] += count
            mine.total += theirs.total

    def note_update(self) -> None:
        """Kept for callers of the former count-paced board: lines move with event time only."""

    def track(self, ts: int, before: tuple[int, float, float | None], profile: dict[str, Any]) -> None:
        """Log a profile's move from its (frequency, monetary, mean gap) before an event at ``ts`` to after it."""
        old_freq, old_monetary, old_gap = before
        old_m = old_monetary if old_freq else None
        new_m = profile["monetary"] if profile["frequency"] else None
        if old_m != new_m:
            self._log(ts, 0, old_m, new_m)
        if old_gap != profile["gap_mean_days"]:
            self._log(ts, 1, old_gap, profile["gap_mean_days"])

    def _log(self, ts: int, which: int, old: float | None, new: float | None) -> None:
        # Moves of one time commute (counts in buckets): the arrival number only keeps the heap from comparing None.
        self._arrivals += 1
        heapq.heappush(self._pending, (ts, which, self._arrivals, old, new))

    def forget(self, profile: dict[str, Any], ts: int) -> None:
        """An erased customer leaves the distributions from ``ts`` on."""
        if profile["frequency"]:
            self._log(ts, 0, profile["monetary"], None)
            if profile["gap_mean_days"] is not None:
                self._log(ts, 1, profile["gap_mean_days"], None)

    def advance(self, shard: int, watermark: int) -> None:
        """A shard has applied everything up to ``watermark``: complete the grid points every shard has passed."""
        if watermark <= 0:
            return
        # Every report counts towards settling, a repeated watermark too: a small input may move it only once.
        reports = self._reports[shard] = self._reports.get(shard, 0) + 1
        if watermark > self.watermarks.get(shard, 0):
            self.watermarks[shard] = watermark
        elif reports > self.settle_reports:
            return  # nothing new from this shard, and the board was settled already
        if not self._settled():
            return
        safe = min(self.watermarks.values())
        if self.through is None:
            # Start a grid step before anything logged, so that every grid point is computed from all of its moves.
            first = min(safe, self._pending[0][0]) if self._pending else safe
            self.through = (first // GRID_MS - 1) * GRID_MS
        while self.through + GRID_MS <= safe:
            point = self.through + GRID_MS
            pending, hists = self._pending, (self._asof.monetary, self._asof.gap_days)
            while pending and pending[0][0] <= point:
                _, which, _, old, new = heapq.heappop(pending)
                hists[which].move(old, new)
            self.through = point
            self._cached = self._asof.thresholds(self.cfg)
            self._points.append(point)
            self._lines.append(self._cached)
            if len(self._points) > KEEP_LINES:
                del self._points[0], self._lines[0]

    @property
    def safe(self) -> int:
        """The event time every shard of this process has applied everything up to (0 until each has reported)."""
        if not self.watermarks or not self._settled():
            return 0
        return min(self.watermarks.values())

    def _settled(self) -> bool:
        """Every shard has reported, and reported again: a process's shards are made as their first batch comes, one
        after the other, so the first shard's first report came before the others existed; lines computed then
        missed their moves, and how many depended on the order the shards were reached in (live: on timing).
        A second report from each means every shard of this process that the first batches reached is a member."""
        if len(self.watermarks) < len(self.members):
            return False  # a shard that has not reported yet may still hold moves of any time
        return min(self._reports.get(shard, 0) for shard in self.members) >= self.settle_reports

    def thresholds_at(self, ts: int) -> Thresholds | None:
        """The lines in force at event time ``ts`` (as of the start of the day before), or None while not complete."""
        point = ts // GRID_MS * GRID_MS - GRID_MS
        if self.through is None or point > self.through:
            return None
        i = bisect.bisect_right(self._points, point) - 1
        # Before the first grid point (a time before this process's first moves): the first lines.
        return self._lines[max(i, 0)] if self._lines else None

    def complete_until(self) -> int:
        """The latest event time whose lines are complete (``thresholds_at`` gives them); -1 while none is.

        >>> from crm_stream.config.settings import SegmentSettings
        >>> board = ThresholdBoard(SegmentSettings())
        >>> board.register(0, SegmentStats())
        >>> board.complete_until(), board.advance(0, 2 * GRID_MS), board.advance(0, 3 * GRID_MS + 5)
        (-1, None, None)
        >>> board.complete_until() == 5 * GRID_MS - 1
        True
        """
        if self.through is None:
            return -1
        return self.through + 2 * GRID_MS - 1

    def thresholds(self, *, fresh: bool = False) -> Thresholds:
        """The newest complete lines (``fresh`` is kept for callers of the former board; it changes nothing)."""
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


# -- segment checks in event time ---------------------------------------------------------------------------------

SEGMENT_TIMER = "segment"
"""The timer kind under which a profile's next segment check waits (operators/profile/timers.py)."""
MAX_MARKS = 64


def mark(profile: dict[str, Any], ts: int) -> int:
    """After a purchase or refund at ``ts`` moved the inputs of the segment: remember them as of ``ts``, and return
    when the segment must be checked next (the earlier of a pending check and ``ts``).

    The segment is judged at a timer, once the watermark has passed ``ts`` and the shop's lines of that day are
    complete (``ThresholdBoard.thresholds_at``), never as the event arrives: live, purchases are often read days
    ahead of the rest of the stream, and a segment judged then would use lines that replay never saw. The marks
    keep the inputs as they were at each purchase, so a check judges the past even if later purchases are in.

    >>> from crm_stream.operators.profile.state import new_profile
    >>> p = new_profile("c1", 0)
    >>> p.update(frequency=1, monetary=50.0, first_purchase_at=0, last_purchase_at=0)
    >>> mark(p, 0), p["segment_marks"]
    (0, [[0, 1, 50.0, 0, 0, None]])
    """
    marks = profile["segment_marks"]
    entry = [ts, profile["frequency"], profile["monetary"], profile["first_purchase_at"], profile["last_purchase_at"]]
    entry.append(profile["gap_mean_days"])
    i = bisect.bisect_right([m[0] for m in marks], ts)
    marks.insert(i, entry)
    if len(marks) > MAX_MARKS:
        del marks[0]
    pending = profile["timers"].get(SEGMENT_TIMER)
    return ts if pending is None else min(pending, ts)


def check(profile: dict[str, Any], now: int, thresholds: Thresholds, cfg: SegmentSettings) -> tuple[str, int | None]:
    """The segment check due at ``now``: (the segment as of ``now``, when to check next or None).

    ``segment_marks[0]`` holds the inputs in force (the newest purchase at or before ``now``); later marks wait.
    Without a purchase the segment moves with time only: the next check is the first moment it could, under
    these lines (the end of "new", of the activity window, of the lost window), or the next mark.

    >>> from crm_stream.config.settings import SegmentSettings
    >>> from crm_stream.operators.profile.state import new_profile
    >>> p = new_profile("c1", 0)
    >>> p.update(frequency=1, monetary=50.0, first_purchase_at=0, last_purchase_at=0)
    >>> _ = mark(p, 0)
    >>> lines = Thresholds(high_value=100.0, active_days=20.0, population_gap_days=10.0)
    >>> check(p, 0, lines, SegmentSettings())
    ('new', 1728000001)
    >>> check(p, 1728000001, lines, SegmentSettings())  # 20 days silent: past the activity window
    ('sleeping', 2592000001)
    """
    marks = profile["segment_marks"]
    while len(marks) > 1 and marks[1][0] <= now:
        del marks[0]
    following = marks[1][0] if len(marks) > 1 else None
    if not marks or marks[0][0] > now:
        return "prospect", following
    _, frequency, monetary, first, last, gap = marks[0]
    if not frequency or last is None:
        return "prospect", following
    segment = segment_of(
        frequency,
        monetary,
        (now - first) / MS_PER_DAY if first is not None else None,
        max(0.0, (now - last) / MS_PER_DAY),
        gap,
        thresholds.high_value,
        thresholds.active_days,
        cfg,
    )
    window = (
        thresholds.active_days
        if not gap
        else min(cfg.max_active_days, max(thresholds.active_days, cfg.active_gap_multiplier * gap))
    )
    moments = [last + int(window * MS_PER_DAY) + 1, last + int(cfg.lost_gap_multiplier * window * MS_PER_DAY) + 1]
    if frequency == 1 and first is not None:
        moments.append(first + int(cfg.new_customer_days * MS_PER_DAY) + 1)
    if following is not None:
        moments.append(following)
    later = [m for m in moments if m > now]
    return segment, min(later) if later else None
