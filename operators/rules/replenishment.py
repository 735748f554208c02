"""replenishment -> marketing: a customer who buys a category on a regular cycle is due again."""

from __future__ import annotations

import statistics

from crm_stream.operators.events.timeutil import MS_PER_DAY
from crm_stream.operators.io.interface import MARKETING
from crm_stream.operators.rules import Candidate, RuleContext
from crm_stream.operators.rules.alerts import make_alert

KIND = "replenishment"
REARMS_ON = frozenset({"purchase", "identify"})


def _cycle(ctx: RuleContext, times: list[int]) -> tuple[float, int] | None:
    """(mean cycle in days, due time) if these purchase times of a category are regular enough."""
    if len(times) < ctx.cfg.replenishment_min_purchases:
        return None
    gaps = [(b - a) / MS_PER_DAY for a, b in zip(times, times[1:])]
    mean = statistics.fmean(gaps)
    if mean < 1 or statistics.pstdev(gaps) / mean > ctx.cfg.replenishment_max_cv:
        return None
    return mean, int(times[-1] + mean * MS_PER_DAY)


def _cycles(ctx: RuleContext, *, as_of_now: bool = False) -> list[tuple[str, float, int]]:
    """(category, mean cycle in days, due time) for every category bought regularly enough."""
    out = []
    for category, times in ctx.profile["category_times"].items():
        if as_of_now:
            times = [t for t in times if t <= ctx.now]
        cycle = _cycle(ctx, times)
        if cycle is not None:
            out.append((category, *cycle))
    return out


def deadline(ctx: RuleContext) -> int | None:
    """The first reminder after ``now`` that the purchase history leaves standing, over every category.

    Each purchase starts a cycle as the history up to it stands; its reminder is due unless the next purchase
    in the category came first. From the whole history, not only the last purchase: a partition read ahead of
    the others can bring later purchases before the watermark reaches a reminder that, in event time, was due
    before them (the timer judges as of its deadline, ``on_timer``).
    """
    lead = ctx.cfg.replenishment_lead_days * MS_PER_DAY
    first: int | None = None
    for times in ctx.profile["category_times"].values():
        for k in range(ctx.cfg.replenishment_min_purchases, len(times) + 1):
            cycle = _cycle(ctx, times[:k])
            if cycle is None:
                continue
            due = int(cycle[1] - lead)
            if due > ctx.now and (k == len(times) or times[k] > due) and (first is None or due < first):
                first = due
    return first


def on_timer(ctx: RuleContext) -> list[Candidate]:
    lead = ctx.cfg.replenishment_lead_days * MS_PER_DAY
    out = []
    for category, mean, due in sorted(_cycles(ctx, as_of_now=True)):
        if due - lead > ctx.now:
            continue
        last = max(t for t in ctx.profile["category_times"][category] if t <= ctx.now)
        out.append(
            Candidate(
                MARKETING,
                make_alert(
                    KIND,
                    ctx.customer_id,
                    int(due - lead),
                    situation=f"{category}:{last}",
                    priority="low",
                    score=1.0,
                    reasons=[
                        f"buys {category} every {mean:.0f} days",
                        f"next purchase due in {ctx.cfg.replenishment_lead_days:g} days",
                    ],
                    payload={
                        "category": category,
                        "cycle_days": round(mean, 1),
                        "predicted_date_ms": due,
                        "offer": f"{category}-reorder",
                    },
                ),
            )
        )
    return out
