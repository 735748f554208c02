"""replenishment -> marketing: a customer who buys a category on a regular cycle is due again."""

from __future__ import annotations

import statistics

from operators.alerts import make_alert
from operators.io import MARKETING
from operators.rules import Candidate, RuleContext
from operators.timeutil import MS_PER_DAY

KIND = "replenishment"


def _cycles(ctx: RuleContext, *, as_of_now: bool = False) -> list[tuple[str, float, int]]:
    """(category, mean cycle in days, due time) for every category bought regularly enough."""
    out = []
    for category, times in ctx.profile["category_times"].items():
        if as_of_now:
            times = [t for t in times if t <= ctx.now]
        if len(times) < ctx.cfg.replenishment_min_purchases:
            continue
        gaps = [(b - a) / MS_PER_DAY for a, b in zip(times, times[1:])]
        mean = statistics.fmean(gaps)
        if mean < 1 or statistics.pstdev(gaps) / mean > ctx.cfg.replenishment_max_cv:
            continue
        out.append((category, mean, int(times[-1] + mean * MS_PER_DAY)))
    return out


def deadline(ctx: RuleContext) -> int | None:
    lead = ctx.cfg.replenishment_lead_days * MS_PER_DAY
    due = [int(d - lead) for _, _, d in _cycles(ctx)]
    return min(due) if due else None


def on_timer(ctx: RuleContext) -> list[Candidate]:
    lead = ctx.cfg.replenishment_lead_days * MS_PER_DAY
    out = []
    for category, mean, due in sorted(_cycles(ctx, as_of_now=True)):
        if due - lead > ctx.now:
            continue
        last = max(t for t in ctx.profile["category_times"][category] if t <= ctx.now)
        out.append(Candidate(MARKETING, make_alert(
            KIND, ctx.customer_id, int(due - lead), situation=f"{category}:{last}", priority="low", score=1.0,
            reasons=[f"buys {category} every {mean:.0f} days", f"next purchase due in {ctx.cfg.replenishment_lead_days:g} days"],
            payload={"category": category, "cycle_days": round(mean, 1), "predicted_date_ms": due, "offer": f"{category}-reorder"},
        )))
    return out
