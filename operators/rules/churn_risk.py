"""churn_risk -> service for high-value customers, marketing for the others: silence long against their own rhythm."""

from __future__ import annotations

from crm_stream.models import rhythm
from crm_stream.operators.events.timeutil import MS_PER_DAY
from crm_stream.operators.io.interface import MARKETING, SERVICE
from crm_stream.operators.rules import Candidate, RuleContext
from crm_stream.operators.rules.alerts import make_alert

KIND = "churn_risk"
REARMS_ON = frozenset({"purchase", "identify"})


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
    # The model answers "no purchase within the horizon?", which is likely for anyone who buys less often
    # than that; a churn alert also needs the silence to be long against the customer's own rhythm.
    gap = rhythm.typical_gap_days(ctx.profile["frequency"], ctx.profile["gap_mean_days"], ctx.thresholds.population_gap_days)
    lapse = rhythm.churn_risk(
        ctx.profile["frequency"],
        ctx.profile["gap_mean_days"],
        (ctx.now - last) / MS_PER_DAY,
        ctx.cfg_horizon_days,
        ctx.thresholds.population_gap_days,
    )
    valuable = ctx.high_value()
    # A check that cannot produce an alert costs no model prediction and builds none (most checks of a real
    # backfill: customers who bought once and fell silent): the rhythm says not yet, the customer already had
    # this alert (same last purchase), or a marketing trigger nobody consented to receive. A look at a silent
    # customer is still a prediction point for the models when they want one (models/hub.py).
    if lapse < ctx.cfg.churn_threshold or not ctx.can_raise(SERVICE if valuable else MARKETING, KIND, str(last)):
        ctx.look(ctx.profile, ctx.now)
        return []
    risk = ctx.churn_risk(ctx.profile, ctx.now)
    if risk < ctx.cfg.churn_model_floor:
        return []
    silent = (ctx.now - last) / MS_PER_DAY
    reasons = [
        f"lapse risk {lapse:.2f} against their own rhythm (threshold {ctx.cfg.churn_threshold:.2f})",
        f"churn model: {risk:.0%} chance of no purchase in {ctx.cfg_horizon_days:g} days",
        f"no purchase for {silent:.0f} days, {silent / gap:.1f}x the usual gap of {gap:.0f} days",
    ]
    if valuable:
        reasons.append(f"high-value customer (lifetime {ctx.profile['monetary']:.2f})")
    return [
        Candidate(
            SERVICE if valuable else MARKETING,
            make_alert(
                KIND,
                ctx.customer_id,
                ctx.now,
                situation=str(last),
                priority="high" if valuable else "medium",
                score=max(risk, lapse),
                reasons=reasons,
                payload={
                    "model_churn_risk": round(risk, 4),
                    "lapse_risk": round(lapse, 4),
                    "last_purchase_at": last,
                    "days_silent": round(silent, 1),
                    "segment": ctx.segment_after,
                    "offer": None if valuable else "we-miss-you",
                },
            ),
        )
    ]
