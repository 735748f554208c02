"""BG/NBD and MBG/NBD repeat-buying models: maximum-likelihood fit and closed-form per-customer predictions.

The probability models of the repeat-buying literature, fitted on three numbers
per customer: ``x`` repeat purchases (purchases after the first), ``t_x`` the
time of the last purchase and ``T`` the tenure, both counted from the first
purchase. A customer buys as a Poisson process with rate lambda ~ Gamma(r, alpha)
while alive; after every purchase (BG/NBD, Fader, Hardie & Lee 2005) or also at
the first one (MBG/NBD, Batislam, Denizel & Filiztekin 2007) they drop out with
probability p ~ Beta(a, b).

What the engine serves is **P(no purchase in the next tau)**, never the raw
P(alive): BG/NBD's P(alive) is 1 for every one-time buyer, however long ago
they bought (a known trap). Given alive, no purchase in tau also means no
chance to drop out, so

    P(none in tau | x, t_x, T) = 1 - P(alive | x, t_x, T) * (1 - ((alpha + T) / (alpha + T + tau)) ** (r + x))

which is O(1) with two powers. The conditional expectation of purchases in tau
needs Gauss's hypergeometric function (``scipy.special.hyp2f1``) and is used
where it is reported, not per event.

Time units are the caller's: days in the engine, weeks for the published
CDNOW parameters (r=0.243, alpha=4.414, a=0.793, b=2.426 on the 2,357-customer
sample's 39-week calibration period; tests/unit/test_bgnbd.py reproduces them).

>>> params = Params(r=0.243, alpha=4.414, a=0.793, b=2.426)  # CDNOW, weeks
>>> round(p_alive(params, 0, 0.0, 39.0), 3)  # BG/NBD: a one-time buyer is always "alive"...
1.0
>>> round(p_none(params, 0, 0.0, 39.0, 13.0), 3)  # ...but is unlikely to buy in the next quarter
0.938
>>> p_none(params, 5, 38.0, 39.0, 13.0) < p_none(params, 5, 10.0, 39.0, 13.0)  # recent buyers buy again
True
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from scipy import optimize, special

BGNBD = "bgnbd"
MBGNBD = "mbgnbd"
MODELS = (BGNBD, MBGNBD)


class Params(NamedTuple):
    r: float
    alpha: float
    a: float
    b: float

    def scaled(self, factor: float) -> Params:
        """The same model in a time unit ``factor`` times smaller (weeks -> days: 7): only alpha carries time."""
        return Params(self.r, self.alpha * factor, self.a, self.b)


def log_likelihood(
    params: Sequence[float] | np.ndarray,
    x: np.ndarray,
    t_x: np.ndarray,
    T: np.ndarray,
    weights: np.ndarray | None = None,
    model: str = BGNBD,
) -> float:
    """Sum of the customers' log-likelihoods (``weights``: how many customers share each row)."""
    return _log_likelihood(params, x, t_x, T, weights, model, _by_count(x))


def _by_count(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct repeat counts, and each row's: the log-gamma terms depend on the parameters and ``x`` alone."""
    values, index = np.unique(x, return_inverse=True)
    return values, index.reshape(-1)


def _log_likelihood(
    params: Sequence[float] | np.ndarray,
    x: np.ndarray,
    t_x: np.ndarray,
    T: np.ndarray,
    weights: np.ndarray | None,
    model: str,
    counts: tuple[np.ndarray, np.ndarray],
) -> float:
    """``log_likelihood`` with the log-gamma terms computed once per distinct repeat count (``_by_count``) and
    spread to the rows: each row gets the very value it would get on its own, so the sum is the same float, at
    a few dozen ``gammaln`` evaluations instead of one per row (a refit evaluates this hundreds of times)."""
    r, alpha, a, b = params
    xs, row = counts
    common = special.gammaln(r + xs)[row] - special.gammaln(r) + r * math.log(alpha)
    if model == BGNBD:
        beta_ratio = special.gammaln(a + b) + special.gammaln(b + xs)[row] - special.gammaln(b) - special.gammaln(a + b + xs)[row]
        alive_term = -(r + x) * np.log(alpha + T)
        # Dropped out right after the last purchase: only possible once there was a repeat purchase.
        with np.errstate(divide="ignore", invalid="ignore"):
            dead_term = np.where(
                x > 0, math.log(a) - np.log(np.maximum(b + x - 1, 1e-300)) - (r + x) * np.log(alpha + t_x), -np.inf
            )
    elif model == MBGNBD:
        beta_ratio = (
            special.gammaln(a + b) + special.gammaln(b + xs + 1)[row] - special.gammaln(b) - special.gammaln(a + b + xs + 1)[row]
        )
        alive_term = -(r + x) * np.log(alpha + T)
        dead_term = math.log(a) - np.log(b + x) - (r + x) * np.log(alpha + t_x)
    else:
        raise ValueError(f"unknown model {model!r}: use one of {MODELS}")
    each = common + beta_ratio + np.logaddexp(alive_term, dead_term)
    return float(np.sum(each * weights) if weights is not None else np.sum(each))


def fit(
    x: Sequence[float] | np.ndarray,
    t_x: Sequence[float] | np.ndarray,
    T: Sequence[float] | np.ndarray,
    weights: Sequence[float] | np.ndarray | None = None,
    *,
    model: str = BGNBD,
    start: Params | None = None,
) -> Params:
    """Maximum-likelihood parameters for customers ``(x, t_x, T)`` (rows may be weighted counts of identical customers).

    Optimised over the logs of the parameters (all four are positive) with L-BFGS-B; ``start``: a previous
    fit to warm-start from (a periodic refit then takes a few iterations).
    """
    xa = np.asarray(x, dtype=float)
    ta = np.asarray(t_x, dtype=float)
    Ta = np.asarray(T, dtype=float)
    wa = None if weights is None else np.asarray(weights, dtype=float)
    if xa.size == 0:
        raise ValueError("fit needs at least one customer: call it once some purchases were seen")
    if np.any(ta > Ta) or np.any(ta < 0) or np.any(xa < 0):
        raise ValueError("every customer needs 0 <= t_x <= T and x >= 0 (t_x and T counted from the first purchase)")
    n = float(np.sum(wa)) if wa is not None else float(xa.size)
    first = start or Params(1.0, max(1e-3, float(np.average(Ta, weights=wa))), 1.0, 1.0)

    counts = _by_count(xa)

    def objective(log_params: np.ndarray) -> float:
        value = -_log_likelihood(np.exp(log_params), xa, ta, Ta, wa, model, counts) / n
        return value if math.isfinite(value) else 1e10

    result = optimize.minimize(
        objective,
        np.log(np.asarray(first, dtype=float)),
        method="L-BFGS-B",
        bounds=[(-12.0, 12.0)] * 4,
        # Tight tolerances: the likelihood is flat along a ridge of (a, b) (their ratio matters far more than their
        # size), and the default ftol stopped warm-started refits early, miles from the optimum.
        options={"maxiter": 1000, "ftol": 1e-14, "gtol": 1e-9},
    )
    return Params(*(float(v) for v in np.exp(result.x)))


def p_alive(params: Params, x: float, t_x: float, T: float, model: str = BGNBD) -> float:
    """P(still alive at T | x, t_x, T). BG/NBD: 1 for one-time buyers (x = 0); MBG/NBD: not."""
    r, alpha, a, b = params
    ratio = ((alpha + T) / (alpha + t_x)) ** (r + x)
    if model == BGNBD:
        return 1.0 if x <= 0 else 1.0 / (1.0 + a / (b + x - 1.0) * ratio)
    return 1.0 / (1.0 + a / (b + x) * ratio)


def p_none(params: Params, x: float, t_x: float, T: float, tau: float, model: str = BGNBD) -> float:
    """P(no purchase in (T, T + tau] | x, t_x, T): the churn score of these models."""
    r, alpha = params.r, params.alpha
    stays_silent = ((alpha + T) / (alpha + T + tau)) ** (r + x)
    return 1.0 - p_alive(params, x, t_x, T, model) * (1.0 - stays_silent)


def median_days_to_next(params: Params, x: float, T: float, within: float | None = None) -> float:
    """Median time from T to the next purchase *if alive* (posterior rate Gamma(r + x, alpha + T)).

    P(no purchase in tau | alive) = ((alpha + T) / (alpha + T + tau)) ** (r + x) is 1/2 at this tau. With
    ``within``: the median among the futures where the next purchase comes within that time, which is what
    a next-purchase error measured on observed gaps rewards (a slow buyer's unconditional median can be years).

    >>> p = Params(0.243, 4.414, 0.793, 2.426)
    >>> round(median_days_to_next(p, 0, 39.0), 1), round(median_days_to_next(p, 0, 39.0, within=52.0), 1)
    (709.0, 19.7)
    """
    shape = params.r + x
    if within is None:
        return (params.alpha + T) * (2.0 ** (1.0 / shape) - 1.0)
    base = params.alpha + T
    buys_within = 1.0 - (base / (base + within)) ** shape
    return base * ((1.0 - buys_within / 2.0) ** (-1.0 / shape) - 1.0)


def expected_purchases(params: Params, x: float, t_x: float, T: float, tau: float, model: str = BGNBD) -> float:
    """E[purchases in (T, T + tau] | x, t_x, T] (Fader et al. 2005 eq. 10; Batislam et al. 2007 for MBG/NBD)."""
    r, alpha, a, b = params
    z = tau / (alpha + T + tau)
    power = ((alpha + T) / (alpha + T + tau)) ** (r + x)
    if model == BGNBD:
        head = (a + b + x - 1.0) / (a - 1.0)
        bracket = 1.0 - power * special.hyp2f1(r + x, b + x, a + b + x - 1.0, z)
    else:
        head = (a + b + x) / (a - 1.0)
        bracket = 1.0 - power * special.hyp2f1(r + x, b + x + 1.0, a + b + x, z)
    return float(max(0.0, head * bracket * p_alive(params, x, t_x, T, model)))


def unconditional_expected(params: Params, t: float) -> float:
    """E[X(t)] for a customer just acquired (BG/NBD): repeat purchases in their first t (a sanity check of a fit)."""
    r, alpha, a, b = params
    z = t / (alpha + t)
    return float((a + b - 1.0) / (a - 1.0) * (1.0 - (alpha / (alpha + t)) ** r * special.hyp2f1(r, b, a + b - 1.0, z)))


__all__ = [
    "BGNBD",
    "MBGNBD",
    "MODELS",
    "Params",
    "expected_purchases",
    "fit",
    "log_likelihood",
    "median_days_to_next",
    "p_alive",
    "p_none",
    "unconditional_expected",
]
