"""BG/NBD in a stream (MBG/NBD by default): O(1) statistics per purchase, population parameters refitted in event time.

A customer's BG/NBD summary is three numbers the profile already holds:
``x = frequency - 1`` repeat purchases, ``t_x`` = last - first purchase and
``T`` = now - first purchase (days). Predictions for one customer are closed
forms of those and of four population parameters (models/bgnbd.py), so serving
is O(1).

The population parameters are refitted by maximum likelihood on every buyer
seen so far, as of fixed points of *event time* B (multiples of
``refit_every_days``), with exactly the purchases made up to B. Shards reach a
given event time at different moments (a shard handles its part of a batch
before the next shard starts; live partitions run at different speeds), so
each purchase is logged with its time and the fit as of B runs only once event
time has passed B + ``refit_every_days``: shards less than that apart all
contribute, and the fit is the same whatever the batching, live or replayed.
The fit does not keep customers: it keeps how many customers share each
``(x, first purchase day, last purchase day)``, a count moved from one cell to
another in O(1) per purchase. No customer id is held, so an erasure has
nothing to remove here (the counts are aggregate, like a model's weights).
Days are whole days: the fit's resolution, not the serving's.

Until the first fit (``min_buyers`` buyers seen), the parameters are the
published CDNOW ones converted to days (Fader, Hardie & Lee 2005): a sane
prior for a retail purchase log, replaced as soon as the data allow.

>>> stream = StreamingBGNBD(refit_every_days=7, min_buyers=2)
>>> day = 86_400_000
>>> stream.on_purchase(None, (0, 0, 0), 0)                # c1 first buys on day 0
>>> stream.on_purchase((0, 0, 0), (1, 0, 5), 5 * day)     # ...and again on day 5
>>> stream.on_purchase(None, (0, 3, 3), 3 * day)          # c2 buys once on day 3
>>> stream.on_purchase(None, (0, 9, 9), 9 * day)          # c3, after the first refit point (day 7)
>>> stream.advance(13 * day), stream.advance(14 * day + 1)  # the fit as of day 7 runs once day 14 has passed
(False, True)
>>> stream.fits, sum(stream.cells.values())  # with the buyers of days 0-7 only
(1, 2)
"""

from __future__ import annotations

import heapq
import math
from typing import NamedTuple

import numpy as np

from crm_stream.models import bgnbd

MS_PER_DAY = 86_400_000
PRIOR = bgnbd.Params(r=0.243, alpha=4.414, a=0.793, b=2.426).scaled(7.0)
"""The published CDNOW parameters (weeks) in days: the prior until the first fit."""

Cell = tuple[int, int, int]
"""(repeat purchases x, first purchase day, last purchase day)."""


class Estimate(NamedTuple):
    p_none: float
    """P(no purchase in the horizon)."""
    p_alive: float
    next_days: float
    """Days to the next purchase: P(alive) x the median if alive (within a window) + P(gone) x the window."""
    next_days_if_return: float
    """Days to the next purchase *if it comes within the window*: the median among those futures. What a customer's
    "when will they buy again" means for one who does return; ``next_days`` is the estimate counting those who never do."""


class StreamingBGNBD:
    def __init__(
        self, refit_every_days: float = 7.0, min_buyers: int = 100, params: bgnbd.Params = PRIOR, model: str = bgnbd.MBGNBD
    ) -> None:
        if refit_every_days <= 0:
            raise ValueError(f"refit_every_days must be positive, got {refit_every_days}")
        if model not in bgnbd.MODELS:
            raise ValueError(f"unknown model {model!r}: use one of {bgnbd.MODELS}")
        self.model = model
        """MBG/NBD by default: a customer may also drop out right after the first purchase, so a one-time buyer's
        P(alive) falls with their silence (BG/NBD's is 1 for ever: a one-time buyer silent for a year "will buy
        soon"). On CDNOW it ranks no worse than BG/NBD at every cut (load/eval_real.py)."""
        self.refit_every_ms = int(refit_every_days * MS_PER_DAY)
        self.min_buyers = min_buyers
        self.params = params
        self.cells: dict[Cell, int] = {}
        """Customers per cell, as of the last refit point applied."""
        self._moves: list[tuple[int, int, Cell | None, Cell]] = []
        """Purchases not yet applied to ``cells``: a heap of (time, sequence, old cell, new cell)."""
        self._seq = 0
        self.fits = 0
        self.fitted_at: int | None = None
        """Event time (ms) of the last fit."""
        self._period = -1

    # -- the stream ------------------------------------------------------------------------------

    def on_purchase(self, old: Cell | None, new: Cell, ts: int) -> None:
        """A customer moved from ``old`` (None: a first purchase) to ``new`` by a purchase at ``ts``: O(log n)."""
        self._seq += 1
        heapq.heappush(self._moves, (ts, self._seq, old, new))

    def _apply_through(self, through_ms: int) -> None:
        cells, moves = self.cells, self._moves
        while moves and moves[0][0] <= through_ms:
            _, _, old, new = heapq.heappop(moves)
            if old is not None:
                left = cells.get(old, 0) - 1
                if left > 0:
                    cells[old] = left
                else:
                    cells.pop(old, None)
            cells[new] = cells.get(new, 0) + 1

    def advance(self, event_time_ms: int) -> bool:
        """Refit as of the newest refit point at least ``refit_every_days`` behind ``event_time_ms``; True if it refitted."""
        period = event_time_ms // self.refit_every_ms - 1
        if period <= self._period:
            return False
        self._period = period
        point = period * self.refit_every_ms
        self._apply_through(point)
        return self.refit(point)

    def refit(self, as_of_ms: int) -> bool:
        """Fit the parameters on the buyers in ``cells`` as of ``as_of_ms``; False if too few buyers yet."""
        now_day = as_of_ms / MS_PER_DAY
        # Sorted: the same rows in the same order, so the same floating-point sums, whatever order cells were made in.
        rows = sorted((x, first, last, n) for (x, first, last), n in self.cells.items() if first <= now_day)
        buyers = sum(row[3] for row in rows)
        if buyers < self.min_buyers or not any(row[0] for row in rows):
            return False
        data = np.asarray(rows, dtype=float)
        T = np.maximum(now_day - data[:, 1], 0.5)  # a purchase today still counts half a day of observation
        t_x = np.minimum(data[:, 2] - data[:, 1], T)
        # A cold start every time, not the previous fit: the likelihood has a ridge along which a and b can run off
        # together (a warm start drifted to a=245, b=1410 where a cold one finds a=0.58, b=1.79 on the same data),
        # and the fit as of a point must not depend on the fits before it.
        fitted = bgnbd.fit(data[:, 0], t_x, T, data[:, 3], model=self.model)
        if all(math.isfinite(v) and v > 0 for v in fitted):
            self.params = fitted
            self.fits += 1
            self.fitted_at = as_of_ms
        return True

    # -- serving -------------------------------------------------------------------------------

    def estimate(
        self, frequency: int, first_ms: int, last_ms: int, as_of_ms: int, horizon_days: float, within_days: float | None = None
    ) -> Estimate:
        """The closed-form estimates for a buyer (``frequency`` >= 1) as of ``as_of_ms``.

        ``next_days``: if alive, the median days to the next purchase among the futures where it comes
        within ``within_days`` (default ``max(4 * horizon_days, 90)``, the hub's censoring window: see
        ``bgnbd.median_days_to_next``); if gone, the whole window; weighted by P(alive). ``next_days_if_return``:
        that median alone (a purchase within the window implies alive), without the weight.

        >>> e = StreamingBGNBD().estimate(1, 0, 0, 200 * MS_PER_DAY, 90.0)  # a one-time buyer silent for 200 days
        >>> round(e.p_alive, 2), round(e.next_days_if_return), round(e.next_days)
        (0.65, 129, 209)
        """
        params = self.params
        x = frequency - 1
        T = max(0.0, (as_of_ms - first_ms) / MS_PER_DAY)
        t_x = min(T, max(0.0, (last_ms - first_ms) / MS_PER_DAY))
        r, alpha, a, b = params
        shape = r + x
        if self.model == bgnbd.MBGNBD:
            alive = 1.0 / (1.0 + a / (b + x) * ((alpha + T) / (alpha + t_x)) ** shape)
        else:
            alive = 1.0 if x <= 0 else 1.0 / (1.0 + a / (b + x - 1.0) * ((alpha + T) / (alpha + t_x)) ** shape)
        silent = ((alpha + T) / (alpha + T + horizon_days)) ** shape
        within = within_days if within_days is not None else max(4.0 * horizon_days, 90.0)
        base = alpha + T
        buys_within = 1.0 - (base / (base + within)) ** shape
        if_alive = base * ((1.0 - buys_within / 2.0) ** (-1.0 / shape) - 1.0)
        next_days = alive * if_alive + (1.0 - alive) * within  # gone: not within the window
        return Estimate(1.0 - alive * (1.0 - silent), alive, next_days, if_alive)

    def expected_purchases(self, frequency: int, first_ms: int, last_ms: int, as_of_ms: int, horizon_days: float) -> float:
        """E[purchases in the horizon] for a buyer (models/bgnbd.py; costs a hypergeometric function, not per event)."""
        T = max(0.0, (as_of_ms - first_ms) / MS_PER_DAY)
        t_x = min(T, max(0.0, (last_ms - first_ms) / MS_PER_DAY))
        return bgnbd.expected_purchases(self.params, frequency - 1, t_x, T, horizon_days, self.model)


def cell_of(frequency: int, first_ms: int, last_ms: int) -> Cell:
    return (frequency - 1, first_ms // MS_PER_DAY, last_ms // MS_PER_DAY)
