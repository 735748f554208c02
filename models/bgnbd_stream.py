"""BG/NBD in a stream: O(1) sufficient statistics per purchase, population parameters refitted in event time.

A customer's BG/NBD summary is three numbers the profile already holds:
``x = frequency - 1`` repeat purchases, ``t_x`` = last - first purchase and
``T`` = now - first purchase (days). Predictions for one customer are closed
forms of those and of four population parameters (models/bgnbd.py), so serving
is O(1).

The population parameters are refitted by maximum likelihood on every buyer
seen so far, at fixed points of *event time* (every ``refit_every_days``, when
the watermark crosses a multiple of it), so a replay and the live engine refit
at the same instants. The fit does not keep customers: it keeps how many
customers share each ``(x, first purchase day, last purchase day)``, a count
moved from one cell to another in O(1) per purchase. No customer id is held,
so an erasure has nothing to remove here (the counts are aggregate, like a
model's weights). Days are whole days: the fit's resolution, not the serving's.

Until the first fit (``min_buyers`` buyers seen), the parameters are the
published CDNOW ones converted to days (Fader, Hardie & Lee 2005): a sane
prior for a retail purchase log, replaced as soon as the data allow.

>>> stream = StreamingBGNBD(refit_every_days=7, min_buyers=2)
>>> day = 86_400_000
>>> stream.on_purchase(None, (0, 0, 0))              # c1 first buys on day 0
>>> stream.on_purchase((0, 0, 0), (1, 0, 5))         # ...and again on day 5
>>> stream.on_purchase(None, (0, 3, 3))              # c2 buys once on day 3
>>> stream.advance(6 * day), stream.advance(7 * day + 1)  # the first refit point is day 7
(False, True)
>>> stream.fits, sum(stream.cells.values())
(1, 2)
"""

from __future__ import annotations

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
    """Median days to the next purchase if alive."""


class StreamingBGNBD:
    def __init__(self, refit_every_days: float = 7.0, min_buyers: int = 100, params: bgnbd.Params = PRIOR) -> None:
        if refit_every_days <= 0:
            raise ValueError(f"refit_every_days must be positive, got {refit_every_days}")
        self.refit_every_ms = int(refit_every_days * MS_PER_DAY)
        self.min_buyers = min_buyers
        self.params = params
        self.cells: dict[Cell, int] = {}
        self.fits = 0
        self.fitted_at: int | None = None
        """Event time (ms) of the last fit."""
        self._period = -1

    # -- the stream ------------------------------------------------------------------------------

    def on_purchase(self, old: Cell | None, new: Cell) -> None:
        """A customer moved from ``old`` (None: a first purchase) to ``new``: O(1)."""
        cells = self.cells
        if old is not None:
            left = cells.get(old, 0) - 1
            if left > 0:
                cells[old] = left
            else:
                cells.pop(old, None)
        cells[new] = cells.get(new, 0) + 1

    def advance(self, watermark_ms: int) -> bool:
        """Refit when the watermark crosses a multiple of ``refit_every_days`` (event time); True if it refitted."""
        period = watermark_ms // self.refit_every_ms
        if period <= self._period:
            return False
        self._period = period
        return self.refit(period * self.refit_every_ms)

    def refit(self, as_of_ms: int) -> bool:
        """Fit the parameters on the buyers as of ``as_of_ms`` (warm-started); False if too few buyers yet."""
        now_day = as_of_ms / MS_PER_DAY
        rows = [(x, first, last, n) for (x, first, last), n in self.cells.items() if first <= now_day]
        buyers = sum(row[3] for row in rows)
        if buyers < self.min_buyers or not any(row[0] for row in rows):
            return False
        data = np.asarray(rows, dtype=float)
        T = np.maximum(now_day - data[:, 1], 0.5)  # a purchase today still counts half a day of observation
        t_x = np.minimum(data[:, 2] - data[:, 1], T)
        fitted = bgnbd.fit(data[:, 0], t_x, T, data[:, 3], start=self.params)
        if all(math.isfinite(v) and v > 0 for v in fitted):
            self.params = fitted
            self.fits += 1
            self.fitted_at = as_of_ms
        return True

    # -- serving -------------------------------------------------------------------------------

    def estimate(self, frequency: int, first_ms: int, last_ms: int, as_of_ms: int, horizon_days: float) -> Estimate:
        """The closed-form estimates for a buyer (``frequency`` >= 1) as of ``as_of_ms``."""
        params = self.params
        x = frequency - 1
        T = max(0.0, (as_of_ms - first_ms) / MS_PER_DAY)
        t_x = min(T, max(0.0, (last_ms - first_ms) / MS_PER_DAY))
        r, alpha, a, b = params
        shape = r + x
        alive = 1.0 if x <= 0 else 1.0 / (1.0 + a / (b + x - 1.0) * ((alpha + T) / (alpha + t_x)) ** shape)
        silent = ((alpha + T) / (alpha + T + horizon_days)) ** shape
        next_days = (alpha + T) * (2.0 ** (1.0 / shape) - 1.0)
        return Estimate(1.0 - alive * (1.0 - silent), alive, next_days)

    def expected_purchases(self, frequency: int, first_ms: int, last_ms: int, as_of_ms: int, horizon_days: float) -> float:
        """E[purchases in the horizon] for a buyer (models/bgnbd.py; costs a hypergeometric function, not per event)."""
        T = max(0.0, (as_of_ms - first_ms) / MS_PER_DAY)
        t_x = min(T, max(0.0, (last_ms - first_ms) / MS_PER_DAY))
        return bgnbd.expected_purchases(self.params, frequency - 1, t_x, T, horizon_days)


def cell_of(frequency: int, first_ms: int, last_ms: int) -> Cell:
    return (frequency - 1, first_ms // MS_PER_DAY, last_ms // MS_PER_DAY)
