"""win_back -> marketing: a formerly active customer (several purchases) silent for long."""

from __future__ import annotations

from crm_stream.operators.events.timeutil import MS_PER_DAY
from crm_stream.operators.io.interface import MARKETING
from crm_stream.operators.rules import Candidate, RuleContext
from crm_stream.operators.rules.alerts import make_alert

KIND = "win_back"
REARMS_ON = frozenset({"purchase", "identify"})


def deadline(ctx: RuleContext) -> int | None:
    """The first silence after ``now`` that the purchase history leaves unbroken.

    From the whole history, not only the last purchase: a partition read ahead of the others can bring later
    purchases before the watermark reaches a silence that, in event time, ran out before them.
    """
    times = ctx.profile["purchase_times"]
    silence = ctx.cfg.win_back_silence_days * MS_PER_DAY
    older = ctx.profile["frequency"] - len(times)  # purchases beyond the kept times
    for i, t in enumerate(times):
        due = int(t + silence)
        if due <= ctx.now or older + i + 1 < ctx.cfg.win_back_min_purchases:
            continue
        if i + 1 == len(times) or times[i + 1] > due:
            return due
    return None


def on_timer(ctx: RuleContext) -> list[Candidate]:
    last = ctx.last_purchase_by_now()
    frequency = ctx.profile["frequency"] - sum(1 for t in ctx.profile["purchase_times"] if t > ctx.now)  # as of now
    if last is None or frequency < ctx.cfg.win_back_min_purchases:
        return []
    if last + ctx.cfg.win_back_silence_days * MS_PER_DAY > ctx.now or not ctx.can_raise(MARKETING, KIND, str(last)):
        return []  # not silent long enough, or a trigger that would be dropped (had it already, or no consent): none built
    top = sorted(ctx.profile["category_purchases"].items(), key=lambda kv: (-kv[1][0], kv[0]))
    favourite = top[0][0] if top else None
    return [
        Candidate(
            MARKETING,
            make_alert(
                KIND,
                ctx.customer_id,
                ctx.now,
                situation=str(last),
                priority="medium",
                score=min(1.0, frequency / 10),
                reasons=[f"{frequency} purchases, none for {ctx.cfg.win_back_silence_days:g} days"]
                + ([f"favourite category: {favourite}"] if favourite else []),
                payload={
                    "last_purchase_at": last,
                    "favourite_category": favourite,
                    "lifetime_value": round(ctx.profile["monetary"], 2),
                    "offer": "win-back",
                },
            ),
        )
    ]
