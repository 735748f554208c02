"""churn_risk: silence long against the customer's own rhythm, and a served churn score that agrees.

Service (a call) for the customers with the most expected value at risk, within a daily budget per
process (``rules.churn_daily_budget``, event-time days: ``ServiceBudget``); the others get a marketing
trigger (a we-miss-you offer, governed like every trigger). Every reason states the horizon and the
numbers actually used.
"""

from __future__ import annotations

import bisect
import heapq
import threading
from typing import Any

from crm_stream.models import rhythm
from crm_stream.operators.events.timeutil import MS_PER_DAY
from crm_stream.operators.io.interface import MARKETING, SERVICE
from crm_stream.operators.rules import Candidate, RuleContext
from crm_stream.operators.rules.alerts import make_alert

KIND = "churn_risk"
REARMS_ON = frozenset({"purchase", "identify"})


MAX_CHECKS = 6


def deadline(ctx: RuleContext) -> int | None:
    """Look again every typical gap of silence, from ``churn_check_gap_multiplier`` gaps on, until the risk is high.

    From the purchases made by ``now``: live, a later purchase read ahead of the watermark is often in the profile
    already when a check re-arms; in time order it comes after, and re-arms the rule itself then (the shard asks
    again as of each such purchase)."""
    last = ctx.last_purchase_by_now()
    if last is None:
        return None
    frequency, gap_mean = purchases_by_now(ctx)
    gap = rhythm.typical_gap_days(frequency, gap_mean, ctx.thresholds.population_gap_days)
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
    profile = ctx.profile
    horizon = ctx.cfg_horizon_days
    population_gap = ctx.thresholds.population_gap_days
    # The model answers "no purchase within the horizon?", which is likely for anyone who buys less often
    # than that; a churn alert also needs the silence to be long against the customer's own rhythm.
    frequency, gap_mean = purchases_by_now(ctx)
    gap = rhythm.typical_gap_days(frequency, gap_mean, population_gap)
    silent = (ctx.now - last) / MS_PER_DAY
    lapse = rhythm.churn_risk(frequency, gap_mean, silent, horizon, population_gap)
    # A check that cannot produce an alert costs no model prediction (most checks of a real backfill: customers who
    # bought once and fell silent): the rhythm says not yet, or this silence's alert was proposed at an earlier check
    # (``_crossed_before``) or raised already (the same id; later lines can move the previous check's lapse back under
    # the threshold, and a re-proposal, dropped as a duplicate, used to take a place in the day's service budget).
    # A look at a silent customer is still a prediction point for the models (models/hub.py) when they want one, so
    # they learn what silence means all the same.
    situation = str(last)
    if (
        lapse < ctx.cfg.churn_threshold
        or _crossed_before(ctx, last, gap, horizon, population_gap)
        or not ctx.can_raise(SERVICE, KIND, situation)
    ):
        ctx.look(profile, ctx.now)
        return []
    # The alert is new (above): a call needs a high-value customer, a trigger a channel the customer consents to.
    valuable, reachable = ctx.high_value(), ctx.reachable(profile)
    if not valuable and not reachable:
        ctx.look(profile, ctx.now)
        return []  # neither a call nor a trigger could go out: no prediction served, none built
    risk = ctx.churn_risk(profile, ctx.now)
    if risk < ctx.cfg.churn_model_floor:
        return []
    value = value_at_risk(risk, profile["monetary"], profile["first_purchase_at"] or last, ctx.now, gap, horizon)
    budget = ctx.cfg.churn_daily_budget
    book = ctx.churn_budget
    # A call is for a high-value customer, within the day's budget, by value at risk; the others get a trigger.
    admitted = valuable and (book is None or book.admit(ctx.now, value, budget))
    if not admitted and not reachable:
        return []  # a we-miss-you trigger nobody consented to receive: none is built
    reasons = [
        f"no purchase for {silent:.0f} days, {silent / gap:.1f}x the usual gap of {gap:.0f} days",
    ]
    if abs(risk - lapse) < 1e-9:  # the served score is the rhythm estimate itself (models off): say it once
        reasons.append(f"rhythm estimate: {lapse:.0%} chance of no purchase in the next {horizon:g} days")
    else:
        reasons.append(f"served churn score: {risk:.0%} chance of no purchase in the next {horizon:g} days")
        reasons.append(f"rhythm estimate (own purchase gaps): {lapse:.0%} over the same {horizon:g} days")
    reasons.append(f"expected value at risk {value:.2f} over the next {horizon:g} days")
    if valuable:
        reasons.append(f"high-value customer (lifetime {profile['monetary']:.2f})")
    if book is not None and valuable:
        if admitted:
            reasons.append(f"among today's service calls (budget {budget} a day, by value at risk)")
        else:
            reasons.append(f"today's service budget ({budget} a day) goes to customers with more value at risk")
    return [
        Candidate(
            SERVICE if admitted else MARKETING,
            make_alert(
                KIND,
                ctx.customer_id,
                ctx.now,
                situation=situation,
                priority="high" if admitted else "medium",
                score=max(risk, lapse),
                reasons=reasons,
                payload={
                    "model_churn_risk": round(risk, 4),
                    "lapse_risk": round(lapse, 4),
                    "horizon_days": horizon,
                    "value_at_risk": round(value, 2),
                    "last_purchase_at": last,
                    "days_silent": round(silent, 1),
                    "segment": ctx.segment_after,
                    "offer": None if admitted else "we-miss-you",
                },
            ),
        )
    ]


def purchases_by_now(ctx: RuleContext) -> tuple[int, float | None]:
    """(frequency, mean purchase gap in days) as they stood at ``ctx.now``, as ``last_purchase_by_now`` does for
    the last purchase. Live, a purchases partition is read ahead of the others, so a check can fire after later
    purchases were applied; judged with their rhythm, it would decide what replay (where they come after it) did
    not. The gaps are those of the kept purchase times up to ``now`` (profile/state.py keeps the last 32).

    >>> from crm_stream.operators.profile.state import new_profile
    >>> from crm_stream.operators.rules import context
    >>> p = new_profile("c1", 0)
    >>> p.update(frequency=3, gap_mean_days=15.0, purchase_times=[0, 10 * MS_PER_DAY, 30 * MS_PER_DAY])
    >>> purchases_by_now(context(p, now=20 * MS_PER_DAY))  # the purchase of day 30 is still to come
    (2, 10.0)
    """
    profile = ctx.profile
    times = profile["purchase_times"]
    later = len(times) - bisect.bisect_right(times, ctx.now)
    if not later:
        return profile["frequency"], profile["gap_mean_days"]
    kept = times[: len(times) - later]
    gaps = [(b - a) / MS_PER_DAY for a, b in zip(kept, kept[1:])]
    return profile["frequency"] - later, round(sum(gaps) / len(gaps), 6) if gaps else None


def _crossed_before(ctx: RuleContext, last: int, gap: float, horizon: float, population_gap: float) -> bool:
    """Did the lapse risk already pass the threshold at the previous check of this silence (``deadline``'s schedule)?

    The lapse risk only grows with silence, so the alert for this situation was proposed then (its id is the
    same: rule, customer, last purchase). Proposing it again would only be deduplicated, after costing a
    place in the daily budget.
    """
    step = max(ctx.cfg.churn_min_check_days, gap)
    first = max(ctx.cfg.churn_min_check_days, ctx.cfg.churn_check_gap_multiplier * gap)
    previous = (ctx.now - last) / MS_PER_DAY - step
    if previous < first - 1e-6:
        return False
    frequency, gap_mean = purchases_by_now(ctx)
    lapse = rhythm.churn_risk(frequency, gap_mean, previous, horizon, population_gap)
    return lapse >= ctx.cfg.churn_threshold


def value_at_risk(risk: float, monetary: float, first_purchase_at: int, now: int, gap_days: float, horizon_days: float) -> float:
    """P(no purchase in the horizon) x what the customer spends in a horizon at their own rate (spend / tenure).

    Tenure is floored at one usual gap, so a new customer's first order is not read as a daily habit.

    >>> value_at_risk(0.8, 300.0, 0, 300 * MS_PER_DAY, 30.0, 90.0)  # 1/day for 300 days, 90 days at risk
    72.0
    """
    tenure = max(gap_days, (now - first_purchase_at) / MS_PER_DAY, 1.0)
    return risk * max(0.0, monetary) / tenure * horizon_days


class ServiceBudget:
    """How many ``churn_risk`` service alerts a process sends per event-time day, to the most value at risk.

    One per process, shared by its shards (operators/stages/learning.py holds it). A day's candidates
    cannot all be seen before choosing, so the choice is streaming and deterministic in event time:
    a candidate is admitted while the day's count is under ``budget`` and its value at risk is at least
    the ``budget``-th highest value among the previous day's candidates (no bar when that day had fewer
    than ``budget``). A burst of candidates can never exceed the budget; a quiet day after a busy one
    admits only what would have made yesterday's list. Replay and live admit the same candidates when
    the shards reach each day in the same order (replay: always).

    >>> book = ServiceBudget()
    >>> day = MS_PER_DAY
    >>> [book.admit(0, v, budget=2) for v in (5.0, 1.0, 9.0)]  # day 0: no bar yet, two places
    [True, True, False]
    >>> [book.admit(day, v, budget=2) for v in (4.0, 6.0, 10.0)]  # day 1: the bar is day 0's 2nd best (5.0)
    [False, True, True]
    """

    KEEP_DAYS = 400
    """Days kept behind the newest day seen. A process's shards fire in step, within one input batch's span of event
    time of each other (a shard fires only up to the lines every shard has passed), but a batch of a sparse
    history spans weeks: with 4 days kept, a shard firing day D after another had reached D+5 found D's record
    gone, started it afresh and sent a second day's worth of calls (69 on one day of the real-shaped replay)."""

    def __init__(self) -> None:
        self._days: dict[int, list[Any]] = {}
        """Event-time day -> [admitted, min-heap of that day's best candidate values (at most budget)]."""
        self._lock = threading.Lock()

    def admit(self, now_ms: int, value: float, budget: int) -> bool:
        if budget <= 0:
            return False
        day = now_ms // MS_PER_DAY
        with self._lock:
            record = self._days.get(day)
            if record is None:
                record = self._days[day] = [0, []]
                for old in [d for d in self._days if d < day - self.KEEP_DAYS]:
                    del self._days[old]
            best = record[1]
            if len(best) < budget:
                heapq.heappush(best, value)
            elif value > best[0]:
                heapq.heapreplace(best, value)
            before = self._days.get(day - 1)
            bar = before[1][0] if before is not None and len(before[1]) >= budget else 0.0
            if record[0] < budget and value >= bar:
                record[0] += 1
                return True
            return False

    def admitted(self, now_ms: int) -> int:
        record = self._days.get(now_ms // MS_PER_DAY)
        return record[0] if record is not None else 0
