"""abandoned_interest -> marketing: repeated attention to a category, then no purchase within a window: an offer."""

from __future__ import annotations

from crm_stream.operators.events.timeutil import MS_PER_HOUR
from crm_stream.operators.io.interface import MARKETING
from crm_stream.operators.profile.state import EPISODE_GAP_MS
from crm_stream.operators.rules import Candidate, RuleContext
from crm_stream.operators.rules.alerts import make_alert

KIND = "abandoned_interest"
REARMS_ON = frozenset({"product_view", "add_to_cart", "purchase", "identify"})


def _cooled(ctx: RuleContext, category: str, last: int) -> bool:
    """No offer for the category within the cooldown before this episode's last look."""
    cooldown = ctx.cfg.abandoned_cooldown_days * 24 * MS_PER_HOUR
    alerted = ctx.profile.get("alerted") or {}  # a read: no empty container materialised (operators/profile/state.py)
    return last - alerted.get(f"{KIND}:{category}", -cooldown) >= cooldown


def _ready(ctx: RuleContext) -> list[tuple[str, list[int]]]:
    """Open episodes with enough attention whose category was not offered within the cooldown."""
    episodes = ctx.profile.get("episodes")
    if not episodes:
        return []
    least = ctx.cfg.abandoned_min_signals
    return [(cat, ep) for cat, ep in episodes.items() if ep[1] >= least and _cooled(ctx, cat, ep[2])]


def _closed(ctx: RuleContext) -> list[tuple[str, list[int]]]:
    """Episodes a later look closed before their deadline (operators/profile/state.py ``_episode``), oldest first."""
    closed = ctx.profile.get("closed_episodes")
    if not closed:
        return []
    return sorted(((cat, ep) for cat, eps in closed.items() for ep in eps), key=lambda ce: (ce[1][2], ce[0]))


def deadline(ctx: RuleContext) -> int | None:
    due = _closed(ctx) + _ready(ctx)
    if not due:
        return None
    window = ctx.cfg.abandoned_window_hours * MS_PER_HOUR
    return min(int(ep[2] + window) for _, ep in due)


def on_timer(ctx: RuleContext) -> list[Candidate]:
    window = ctx.cfg.abandoned_window_hours * MS_PER_HOUR
    out: list[Candidate] = []
    # Closed episodes first, each judged as of its own deadline, in deadline order (as time order would have).
    for category, episode in _closed(ctx):
        due = int(episode[2] + window)
        if due > ctx.now:
            continue
        closed = ctx.profile["closed_episodes"][category]
        closed.remove(episode)
        if not closed:
            del ctx.profile["closed_episodes"][category]
        if not _cooled(ctx, category, episode[2]):
            # In time order it would not have been judged but gone on, extended by the looks that followed.
            following = ctx.profile["episodes"].get(category)
            if following is not None and following[0] - episode[2] <= EPISODE_GAP_MS:
                following[0], following[1] = episode[0], following[1] + episode[1]
            continue
        out.extend(_judge(ctx, category, episode, due))
    for category, episode in sorted(_ready(ctx)):
        if episode[2] + window > ctx.now:
            continue  # still browsing: the window restarts with each look
        del ctx.profile["episodes"][category]
        out.extend(_judge(ctx, category, episode, ctx.now))
    return out


def _judge(ctx: RuleContext, category: str, episode: list[int], as_of: int) -> list[Candidate]:
    window = ctx.cfg.abandoned_window_hours * MS_PER_HOUR
    start, signals, last = episode
    if any(start <= t <= as_of for t in ctx.profile["category_times"].get(category, ())):
        return []  # they bought in the category before the deadline: nothing abandoned
    ctx.profile["alerted"][f"{KIND}:{category}"] = int(last + window)
    in_cart = sorted(pid for pid, item in ctx.profile["cart"].items() if item["category"] == category)
    return [
        Candidate(
            MARKETING,
            make_alert(
                KIND,
                ctx.customer_id,
                int(last + window),
                situation=f"{category}:{start}",
                priority="low",
                score=min(1.0, signals / (2.0 * ctx.cfg.abandoned_min_signals)),
                reasons=[
                    f"{signals} looks at {category} (a view counts 1, a cart add 2)",
                    f"no purchase in {category} within {ctx.cfg.abandoned_window_hours:g} h of the last look",
                ]
                + ([f"{len(in_cart)} {category} item(s) still in the cart"] if in_cart else []),
                payload={
                    "category": category,
                    "offer": f"{category}-10pct",
                    "products_in_cart": in_cart,
                    "interest_since": start,
                },
            ),
        )
    ]
