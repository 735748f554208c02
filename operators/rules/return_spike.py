"""return_spike -> service: a product's refund rate jumps against its own baseline.

Product-level, so the state is shared by the shards of a process
(``ReturnWatch``): with several processes each sees its own customers' orders,
a fair sample under hash sharding, but a spike needs ``min_refunds`` in one
process to show.
"""

from __future__ import annotations

import math

from crm_stream.operators.events.timeutil import MS_PER_DAY
from crm_stream.operators.io.interface import SERVICE
from crm_stream.operators.rules import Candidate, RuleContext
from crm_stream.operators.rules.alerts import make_alert

KIND = "return_spike"
REACTS_TO = frozenset({"purchase", "refund"})
BASELINE_HALF_LIFE_DAYS = 90.0


class _Rate:
    """Decayed counts of sales and refunds: a short window and a long baseline."""

    __slots__ = ("sold", "refunded", "base_sold", "base_refunded", "at")

    def __init__(self) -> None:
        self.sold = self.refunded = self.base_sold = self.base_refunded = 0.0
        self.at = 0

    def advance(self, ts: int, window_days: float) -> None:
        if ts <= self.at:
            return
        dt = (ts - self.at) / MS_PER_DAY
        short, long = math.exp(-dt / window_days), math.exp(-dt / BASELINE_HALF_LIFE_DAYS)
        self.sold *= short
        self.refunded *= short
        self.base_sold *= long
        self.base_refunded *= long
        self.at = ts


class ReturnWatch:
    def __init__(self) -> None:
        self.products: dict[str, _Rate] = {}
        self.alerted_week: dict[str, int] = {}

    def sold(self, product_id: str, ts: int, window_days: float) -> None:
        rate = self.products.setdefault(product_id, _Rate())
        rate.advance(ts, window_days)
        rate.sold += 1
        rate.base_sold += 1

    def refunded(self, product_id: str, ts: int, window_days: float) -> _Rate:
        rate = self.products.setdefault(product_id, _Rate())
        rate.advance(ts, window_days)
        rate.refunded += 1
        rate.base_refunded += 1
        return rate


def on_event(ctx: RuleContext) -> list[Candidate]:
    event = ctx.event
    if event is None or event["type"] not in ("purchase", "refund"):
        return []
    window = ctx.cfg.return_spike_window_days
    if event["type"] == "purchase":
        for item in event.get("items") or []:
            ctx.returns.sold(item["product_id"], event["ts"], window)
        return []
    order = ctx.profile["orders"].get(event["order_id"])
    out = []
    for product_id in order[1] if order else []:
        rate = ctx.returns.refunded(product_id, event["ts"], window)
        recent = rate.refunded / max(rate.sold, 1.0)
        baseline = (rate.base_refunded - rate.refunded + 1.0) / (
            rate.base_sold - rate.sold + 20.0
        )  # smoothed, excludes the window
        week = event["ts"] // (7 * MS_PER_DAY)
        if rate.refunded < ctx.cfg.return_spike_min_refunds or recent < ctx.cfg.return_spike_ratio * baseline:
            continue
        if ctx.returns.alerted_week.get(product_id) == week:
            continue
        ctx.returns.alerted_week[product_id] = week
        out.append(
            Candidate(
                SERVICE,
                make_alert(
                    KIND,
                    ctx.customer_id,
                    event["ts"],
                    situation=f"{product_id}:{week}",
                    priority="high",
                    score=min(1.0, recent),
                    reasons=[
                        f"{rate.refunded:.0f} refunds of {product_id} in ~{window:g} days: {recent:.0%} of sales",
                        f"baseline refund rate {baseline:.0%}",
                    ],
                    payload={
                        "product_id": product_id,
                        "refund_rate": round(recent, 4),
                        "baseline_rate": round(baseline, 4),
                        "order_id": event["order_id"],
                    },
                ),
            )
        )
    return out
