"""churn_risk -> service for high-value customers, marketing for the others: silence long against their own rhythm."""

from __future__ import annotations

from models import rhythm
from operators.alerts import make_alert
from operators.io import MARKETING, SERVICE
from operators.rules import Candidate, RuleContext
from operators.timeutil import MS_PER_DAY

KIND = "churn_risk"


MAX_CHECKS = 6


def deadline(ctx: RuleContext) -> int | None:
    """Look again every typical gap of silence, from ``churn_check_gap_multiplier`` gaps on, until the risk is high."""
    last = ctx.profile["last_purchase_at"]
    if last is None:
        return None
    gap = rhythm.typical_gap_days(ctx.profile["frequency"], ctx.profile["gap_mean_days"], ctx.thresholds.population_gap_days)
    step = max(ctx.cfg.churn_min_check_days, gap)
    first = max(ctx.cfg.churn_min_check_days, ctx.cfg.churn_check_gap_multiplier * gap)
    for check in range(MAX_CHECKS):
        when = int(last + (first + check * step) * MS_PER_DAY)
        if when > ctx.now:
            return when
    return None


def on_timer(ctx: RuleContext) -> list[Candidate]:
    last = ctx.last_purchase_by_now()
    if last is None:
        return []
    risk = ctx.churn_risk(ctx.profile, ctx.now)
    if risk < ctx.cfg.churn_threshold:
        return []
    valuable = ctx.high_value()
    silent = (ctx.now - last) / MS_PER_DAY
    gap = ctx.profile["gap_mean_days"]
    reasons = [f"churn risk {risk:.2f} (threshold {ctx.cfg.churn_threshold:.2f})", f"no purchase for {silent:.0f} days"]
    if gap:
        reasons.append(f"usually buys every {gap:.0f} days")
    if valuable:
        reasons.append(f"high-value customer (lifetime {ctx.profile['monetary']:.2f})")
    return [Candidate(SERVICE if valuable else MARKETING, make_alert(
        KIND, ctx.customer_id, ctx.now, situation=str(last), priority="high" if valuable else "medium", score=risk,
        reasons=reasons, payload={"last_purchase_at": last, "days_silent": round(silent, 1), "segment": ctx.segment_after,
                                  "offer": None if valuable else "we-miss-you"},
    ))]
