"""Purchase-rhythm estimates: churn risk and days to next purchase from a customer's own gaps.

This is the engine's built-in estimate and the baseline the online models are
judged against. Each customer's typical gap is shrunk towards the population's
median gap (few purchases say little), purchases are treated as a Poisson
process at that rate while the customer is "alive", and the chance of still
being alive falls once the silence outgrows the customer's own rhythm. Pure
functions of numbers, so they are cheap and testable.
"""

from __future__ import annotations

import math

PRIOR_WEIGHT = 2.0  # how many gaps' worth of belief the population median carries
PROSPECT_ALIVE = 0.15  # chance that a browser who never bought buys at their "typical" rate
MAX_DAYS = 365.0


def typical_gap_days(frequency: int, gap_mean_days: float | None, population_gap_days: float) -> float:
    gaps = max(0, frequency - 1)
    own = gap_mean_days if gap_mean_days is not None else population_gap_days
    return max(0.5, (own * gaps + population_gap_days * PRIOR_WEIGHT) / (gaps + PRIOR_WEIGHT))


def alive_probability(frequency: int, days_since_last_purchase: float | None, gap_days: float) -> float:
    if frequency == 0 or days_since_last_purchase is None:
        return PROSPECT_ALIVE
    overdue = days_since_last_purchase / gap_days - 1.0
    return 1.0 if overdue <= 0 else math.exp(-0.5 * overdue)


def churn_risk(
    frequency: int,
    gap_mean_days: float | None,
    days_since_last_purchase: float | None,
    horizon_days: float,
    population_gap_days: float,
) -> float:
    """P(no purchase in the next ``horizon_days``)."""
    gap = typical_gap_days(frequency, gap_mean_days, population_gap_days)
    alive = alive_probability(frequency, days_since_last_purchase, gap)
    return 1.0 - alive * (1.0 - math.exp(-horizon_days / gap))


def next_purchase_in_days(
    frequency: int, gap_mean_days: float | None, days_since_last_purchase: float | None, population_gap_days: float
) -> float:
    """Expected days until the next purchase; long silences push it out."""
    gap = typical_gap_days(frequency, gap_mean_days, population_gap_days)
    alive = alive_probability(frequency, days_since_last_purchase, gap)
    due = gap - days_since_last_purchase if days_since_last_purchase is not None and days_since_last_purchase < gap else gap
    return min(MAX_DAYS, due / max(alive, 1e-3))


def estimates(
    frequency: int,
    gap_mean_days: float | None,
    days_since_last_purchase: float | None,
    horizon_days: float,
    population_gap_days: float,
) -> tuple[float, float]:
    """``(churn_risk(...), next_purchase_in_days(...))`` with the same arguments, the shared steps computed once.

    The models' hot path needs both at every prediction point; the arithmetic is the two functions', so
    the results are identical to calling them.
    """
    return estimates_for_gap(
        frequency, typical_gap_days(frequency, gap_mean_days, population_gap_days), days_since_last_purchase, horizon_days
    )


def estimates_for_gap(
    frequency: int, gap_days: float, days_since_last_purchase: float | None, horizon_days: float
) -> tuple[float, float]:
    """``estimates`` given the ``typical_gap_days`` already (model features need the gap itself too)."""
    alive = alive_probability(frequency, days_since_last_purchase, gap_days)
    risk = 1.0 - alive * (1.0 - math.exp(-horizon_days / gap_days))
    due = (
        gap_days - days_since_last_purchase
        if days_since_last_purchase is not None and days_since_last_purchase < gap_days
        else gap_days
    )
    return risk, min(MAX_DAYS, due / max(alive, 1e-3))
