"""abandoned_interest -> marketing: repeated attention to a category, then no purchase within a window: an offer."""

from __future__ import annotations

from operators.alerts import make_alert
from operators.io import MARKETING
from operators.rules import Candidate, RuleContext
from operators.timeutil import MS_PER_HOUR

KIND = "abandoned_interest"


def _ready(ctx: RuleContext) -> list[tuple[str, list[int]]]:
    """Episodes with enough attention whose category was not offered within the cooldown."""
    cooldown = ctx.cfg.abandoned_cooldown_days * 24 * MS_PER_HOUR
    offered = ctx.profile["alerted"]
    return [(cat, ep) for cat, ep in ctx.profile["episodes"].items()
            if ep[1] >= ctx.cfg.abandoned_min_signals and ep[2] - offered.get(f"{KIND}:{cat}", -cooldown) >= cooldown]


def deadline(ctx: RuleContext) -> int | None:
    window = ctx.cfg.abandoned_window_hours * MS_PER_HOUR
    due = [int(ep[2] + window) for _, ep in _ready(ctx)]
    return min(due) if due else None


def on_timer(ctx: RuleContext) -> list[Candidate]:
    window = ctx.cfg.abandoned_window_hours * MS_PER_HOUR
    out = []
    for category, (start, signals, last) in sorted(_ready(ctx)):
        if last + window > ctx.now:
            continue  # still browsing: the window restarts with each look
        del ctx.profile["episodes"][category]
        if any(start <= t <= ctx.now for t in ctx.profile["category_times"].get(category, ())):
            continue  # they bought in the category before the deadline: nothing abandoned
        ctx.profile["alerted"][f"{KIND}:{category}"] = int(last + window)
        in_cart = sorted(pid for pid, item in ctx.profile["cart"].items() if item["category"] == category)
        out.append(Candidate(MARKETING, make_alert(
            KIND, ctx.customer_id, int(last + window), situation=f"{category}:{start}", priority="low",
            score=min(1.0, signals / (2.0 * ctx.cfg.abandoned_min_signals)),
            reasons=[f"{signals} looks at {category} (a view counts 1, a cart add 2)",
                     f"no purchase in {category} within {ctx.cfg.abandoned_window_hours:g} h of the last look"]
                    + ([f"{len(in_cart)} {category} item(s) still in the cart"] if in_cart else []),
            payload={"category": category, "offer": f"{category}-10pct", "products_in_cart": in_cart, "interest_since": start},
        )))
    return out
