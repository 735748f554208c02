"""return_spike -> service: a product's refund rate jumps against its own baseline.

Product-level, so the state is shared by the shards of a process
(``ReturnWatch``): with several processes each sees its own customers' orders,
a fair sample under hash sharding, but a spike needs ``min_refunds`` in one
process to show.

Judged in event time. A refund is not judged as it arrives: live, the purchases
partitions are read at different speeds, so the sales and refunds other shards
have applied by then are not those of the refund's time (replay and live would
see different rates). Each sale and refund is logged with its event time, and a
refund is judged once every shard's watermark has passed it (``ReturnWatch.advance``),
from exactly the sales and refunds up to its time, in (time, customer, product)
order; its alert goes to the shard that owns the customer (``take``). The rates
are not persisted: after a restart they start again from the stream.
"""

from __future__ import annotations

import heapq
import math
from typing import Any

from crm_stream.operators.events.timeutil import MS_PER_DAY
from crm_stream.operators.io.interface import SERVICE
from crm_stream.operators.rules import Candidate, RuleContext
from crm_stream.operators.rules.alerts import make_alert

KIND = "return_spike"
REACTS_TO = frozenset({"purchase", "refund"})
BASELINE_HALF_LIFE_DAYS = 90.0
SOLD, REFUNDED = 0, 1


class _Rate:
    """Decayed counts of sales and refunds: a short window and a long baseline, as of ``at``."""

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

    def add(self, what: int) -> None:
        if what == SOLD:
            self.sold += 1
            self.base_sold += 1
        else:
            self.refunded += 1
            self.base_refunded += 1


class ReturnWatch:
    """Product refund rates of one process, moved in event-time order (see the module doc)."""

    def __init__(self) -> None:
        self.products: dict[str, _Rate] = {}
        self.alerted_week: dict[str, int] = {}
        self._log: list[tuple[int, int, str, str, str]] = []
        """Sales and refunds not yet counted, a heap of (ts, SOLD/REFUNDED, product, customer, order)."""
        self._judge: list[tuple[int, str, str, str, float, int]] = []
        """Refunds to judge, a heap of (ts, customer, product, order, window days, the customer's shard)."""
        self.watermarks: dict[int, int] = {}
        self._outbox: dict[int, list[tuple[str, Candidate, int]]] = {}

    def for_shard(self, shard: int) -> ShardReturns:
        """What a shard's rules see (``RuleContext.returns``): this watch, with the refunds' shard remembered."""
        self.watermarks.setdefault(shard, 0)
        return ShardReturns(self, shard)

    def sold(self, product_id: str, ts: int, window_days: float) -> None:
        heapq.heappush(self._log, (ts, SOLD, product_id, "", ""))

    def refunded(self, customer_id: str, product_id: str, order_id: str, ts: int, window_days: float, shard: int = 0) -> None:
        heapq.heappush(self._log, (ts, REFUNDED, product_id, customer_id, order_id))
        heapq.heappush(self._judge, (ts, customer_id, product_id, order_id, window_days, shard))

    def advance(self, shard: int, watermark: int, cfg: Any) -> None:
        """``shard`` has applied everything up to ``watermark``: judge the refunds every shard has passed."""
        if watermark > self.watermarks.get(shard, 0):
            self.watermarks[shard] = watermark
        safe = min(self.watermarks.values(), default=0)
        if safe <= 0:
            return
        judge = self._judge
        while judge and judge[0][0] <= safe:
            ts, customer_id, product_id, order_id, window, owner = heapq.heappop(judge)
            self._count(ts, window)  # everything up to the refund's time, this refund included
            rate = self.products.setdefault(product_id, _Rate())
            rate.advance(ts, window)
            candidate = self._judge_one(rate, customer_id, product_id, order_id, ts, window, cfg)
            if candidate is not None:
                self._outbox.setdefault(owner, []).append((customer_id, candidate, ts))
        self._count(safe, cfg.return_spike_window_days)  # no log grows while no refund comes

    def _count(self, until: int, window: float) -> None:
        log = self._log
        while log and log[0][0] <= until:
            when, what, product, _, _ = heapq.heappop(log)
            rate = self.products.setdefault(product, _Rate())
            rate.advance(when, window)
            rate.add(what)

    def take(self, shard: int) -> list[tuple[str, Candidate, int]]:
        """The alerts judged for customers of ``shard``: (customer, candidate, event time)."""
        return self._outbox.pop(shard, [])

    def _judge_one(
        self, rate: _Rate, customer_id: str, product_id: str, order_id: str, ts: int, window: float, cfg: Any
    ) -> Candidate | None:
        recent = rate.refunded / max(rate.sold, 1.0)
        # Smoothed, and excluding the window.
        baseline = (rate.base_refunded - rate.refunded + 1.0) / (rate.base_sold - rate.sold + 20.0)
        week = ts // (7 * MS_PER_DAY)
        if rate.refunded < cfg.return_spike_min_refunds or recent < cfg.return_spike_ratio * baseline:
            return None
        if self.alerted_week.get(product_id) == week:
            return None
        self.alerted_week[product_id] = week
        return Candidate(
            SERVICE,
            make_alert(
                KIND,
                customer_id,
                ts,
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
                    "order_id": order_id,
                },
            ),
        )


class ShardReturns:
    """A shard's handle on the process's ``ReturnWatch``: refunds logged through it are judged for this shard."""

    __slots__ = ("watch", "shard")

    def __init__(self, watch: ReturnWatch, shard: int) -> None:
        self.watch, self.shard = watch, shard

    def sold(self, product_id: str, ts: int, window_days: float) -> None:
        self.watch.sold(product_id, ts, window_days)

    def refunded(self, customer_id: str, product_id: str, order_id: str, ts: int, window_days: float) -> None:
        self.watch.refunded(customer_id, product_id, order_id, ts, window_days, self.shard)


def on_event(ctx: RuleContext) -> list[Candidate]:
    """Log the sale or the refund; refunds are judged later, in event time (``ReturnWatch.advance``)."""
    event = ctx.event
    if event is None or event["type"] not in ("purchase", "refund"):
        return []
    window = ctx.cfg.return_spike_window_days
    if event["type"] == "purchase":
        for item in event.get("items") or []:
            ctx.returns.sold(item["product_id"], event["ts"], window)
        return []
    order = ctx.profile["orders"].get(event["order_id"])
    for product_id in order[1] if order else []:
        ctx.returns.refunded(ctx.customer_id, product_id, event["order_id"], event["ts"], window)
    return []
