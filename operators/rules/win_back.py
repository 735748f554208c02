"""win_back -> marketing: a formerly active customer (several purchases) silent for long."""

from __future__ import annotations

from operators.alerts import make_alert
from operators.io import MARKETING
from operators.rules import Candidate, RuleContext
from operators.timeutil import MS_PER_DAY

KIND = "win_back"


def deadline(ctx: RuleContext) -> int | None:
    last = ctx.profile["last_purchase_at"]
    if last is None or ctx.profile["frequency"] < ctx.cfg.win_back_min_purchases:
        return None
    return int(last + ctx.cfg.win_back_silence_days * MS_PER_DAY)


def on_timer(ctx: RuleContext) -> list[Candidate]:
    last = ctx.last_purchase_by_now()
    if last is None or ctx.profile["frequency"] < ctx.cfg.win_back_min_purchases:
        return []
    if last + ctx.cfg.win_back_silence_days * MS_PER_DAY > ctx.now:
        return []
    top = sorted(ctx.profile["category_purchases"].items(), key=lambda kv: (-kv[1][0], kv[0]))
    favourite = top[0][0] if top else None
    return [Candidate(MARKETING, make_alert(
        KIND, ctx.customer_id, ctx.now, situation=str(last), priority="medium",
        score=min(1.0, ctx.profile["frequency"] / 10),
        reasons=[f"{ctx.profile['frequency']} purchases, none for {ctx.cfg.win_back_silence_days:g} days"]
                + ([f"favourite category: {favourite}"] if favourite else []),
        payload={"last_purchase_at": last, "favourite_category": favourite, "lifetime_value": round(ctx.profile["monetary"], 2),
                 "offer": "win-back"},
    ))]
