"""abandoned_interest -> marketing: repeated attention to a category, then no purchase within a window: an offer.

The profile logs looks at each category as runs (operators/profile/state.py, ``looks``); episodes are cut from
that log in time order when the timer fires, as of its deadline: looks no more than ``EPISODE_GAP_MS`` apart make one
episode; one with ``abandoned_min_signals`` whose window then passes without a look is judged at
``last look + window`` (unless an offer for the category went out within the cooldown before its last look: then
it goes on, and later looks extend it). Looks read ahead of the watermark, or released late by ``identify``,
take their place in the log by time, so live and replay cut the same episodes.
"""

from __future__ import annotations

from typing import Any

from crm_stream.operators.events.timeutil import MS_PER_HOUR
from crm_stream.operators.io.interface import MARKETING
from crm_stream.operators.profile.state import EPISODE_GAP_MS, interest_looks
from crm_stream.operators.rules import Candidate, RuleContext
from crm_stream.operators.rules.alerts import make_alert

KIND = "abandoned_interest"
REARMS_ON = frozenset({"product_view", "add_to_cart", "purchase", "identify"})


def _cooled(ctx: RuleContext, category: str, last: int) -> bool:
    """No offer for the category within the cooldown before this episode's last look."""
    cooldown = ctx.cfg.abandoned_cooldown_days * 24 * MS_PER_HOUR
    alerted = ctx.profile.get("alerted") or {}  # a read: no empty container materialised (operators/profile/state.py)
    return last - alerted.get(f"{KIND}:{category}", -cooldown) >= cooldown


def _walk(ctx: RuleContext, category: str, runs: list[list[int]], until: int | None) -> tuple[list[tuple[int, list[int]]], int]:
    """Cut the runs of looks into episodes in time order, up to ``until`` (None: all of them, for the next deadline).

    Returns the episodes due for judgment by then, as (deadline, [first, signals, last]), and the index of the
    first run still needed (the open episode's first, or the first after ``until``). The cooldown is read as the
    profile holds it: ``on_timer`` judges one episode, then walks again.
    """
    window = int(ctx.cfg.abandoned_window_hours * MS_PER_HOUR)
    least = ctx.cfg.abandoned_min_signals
    due: list[tuple[int, list[int]]] = []
    episode: list[int] | None = None  # [first, signals, last, index of its first run]
    stop = len(runs)
    for i, (first, signals, last) in enumerate(runs):
        if until is not None and first > until:
            stop = i
            break
        if episode is not None and episode[1] >= least and first > episode[2] + window and _cooled(ctx, category, episode[2]):
            due.append((episode[2] + window, episode[:3]))
            if until is None:
                return due, episode[3]
            episode = None
        if episode is not None and first > episode[2] + EPISODE_GAP_MS:
            episode = None  # a new burst of interest
        if episode is None:
            episode = [first, 0, last, i]
        episode[1] += signals
        episode[2] = max(episode[2], last)
    if episode is None:
        return due, stop
    deadline = episode[2] + window
    # A run that began by ``until`` and ends after it keeps its episode open: its deadline is later.
    if episode[1] >= least and (until is None or deadline <= until) and _cooled(ctx, category, episode[2]):
        due.append((deadline, episode[:3]))
        return due, stop
    return due, episode[3]


def deadline(ctx: RuleContext) -> int | None:
    """The earliest deadline of an episode that may be judged (cooldowns as they stand: the timer checks again)."""
    looks = interest_looks(ctx.profile)
    firsts = [due[0][0] for category, runs in looks.items() if (due := _walk(ctx, category, runs, None)[0])]
    return min(firsts) if firsts else None


def on_timer(ctx: RuleContext) -> list[Candidate]:
    looks = interest_looks(ctx.profile)
    judged: list[tuple[int, str, list[Candidate]]] = []
    for category in sorted(looks):
        runs = looks[category]
        # One episode at a time, earliest first: judging one starts the cooldown the next is judged against.
        while True:
            due, keep = _walk(ctx, category, runs, ctx.now)
            if not due:
                del runs[:keep]
                break
            when, episode = due[0]
            judged.append((when, category, _judge(ctx, category, episode, when)))
            del runs[: next((i for i, run in enumerate(runs) if run[0] > episode[2]), len(runs))]  # its runs: done with
        if not runs:
            del looks[category]
    judged.sort(key=lambda j: (j[0], j[1]))
    return [c for _, _, candidates in judged for c in candidates]


def _judge(ctx: RuleContext, category: str, episode: list[int], as_of: int) -> list[Candidate]:
    window = ctx.cfg.abandoned_window_hours * MS_PER_HOUR
    start, signals, last = episode
    if any(start <= t <= as_of for t in ctx.profile["category_times"].get(category, ())):
        return []  # they bought in the category before the deadline: nothing abandoned
    ctx.profile["alerted"][f"{KIND}:{category}"] = int(last + window)
    # As of the deadline: items added later (read ahead of the watermark) are not what the customer left behind.
    cart = ctx.profile["cart"].items()
    in_cart = sorted(pid for pid, item in cart if item["category"] == category and item.get("added_at", as_of) <= as_of)
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
                payload=_payload(category, in_cart, start),
            ),
        )
    ]


def _payload(category: str, in_cart: list[str], start: int) -> dict[str, Any]:
    return {"category": category, "offer": f"{category}-10pct", "products_in_cart": in_cart, "interest_since": start}
