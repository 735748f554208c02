"""Prometheus metrics, all created here, in one registry that the caller passes in.

Hot-path counters are incremented once per batch with the batch's totals,
never per event. State that already exists in the shards (customers held,
events applied, suppressed triggers, the watermark) is read at scrape time
by a collector, so it costs nothing between scrapes.
"""

from __future__ import annotations

import re
import time
from collections import Counter as Tally
from typing import Any, Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

_FIELD = re.compile(r"field '([^']+)'")


def deadletter_label(reason: str) -> str:
    """A bounded label for a dead-letter reason (the full text stays in the record)."""
    if reason.startswith("not valid JSON"):
        return "invalid_json"
    if reason.startswith("message is"):
        return "too_large"
    if reason.startswith("an event must be a JSON object"):
        return "not_an_object"
    if reason.startswith("internal error"):
        return "internal_error"
    found = _FIELD.match(reason)
    if found:
        field = found.group(1).split("[")[0].split(".")[0]
        return f"field_{field}" if len(field) <= 40 and field.replace("_", "").isalnum() else "field_other"
    return "other"


class EngineMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.events_in = Counter("crm_events_in_total", "Valid events decoded, by input topic and type", ["topic", "type"], registry=r)
        self.deadlettered = Counter("crm_deadletter_total", "Records sent to the dead-letter output, by reason", ["reason"], registry=r)
        self.outputs = Counter("crm_outputs_total", "Records made durable on the outputs, by destination", ["destination"], registry=r)
        self.store_write_seconds = Histogram("crm_store_write_seconds", "Time of one atomic store write (retries included)", registry=r,
                                             buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
        self.store_write_keys = Histogram("crm_store_write_keys", "Keys written or deleted per store write", registry=r,
                                          buckets=(1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000))
        self.store_retries = Counter("crm_store_retries_total", "Store operations retried because the store was unreachable", ["operation"], registry=r)
        self.started = time.time()
        self.last_batch: float | None = None

    def count_batch(self, events: Iterable[dict[str, Any]], dead_reasons: Iterable[str]) -> None:
        tally = Tally((e.get("_src", "?").split("#")[0], e["type"]) for e in events)
        for (topic, kind), n in tally.items():
            self.events_in.labels(topic or "file", kind).inc(n)
        for label, n in Tally(deadletter_label(r) for r in dead_reasons).items():
            self.deadlettered.labels(label).inc(n)
        self.last_batch = time.time()

    def watch_shards(self, shards: Callable[[], Iterable[Any]]) -> None:
        """Export the profile shards' own state at scrape time (see ShardCollector)."""
        self.registry.register(ShardCollector(shards))


class ShardCollector:
    """Reads the shards when Prometheus scrapes: customers in memory, events applied, suppressed triggers, clocks."""

    def __init__(self, shards: Callable[[], Iterable[Any]]) -> None:
        self.shards = shards

    def collect(self) -> Iterable[Any]:
        shards = list(self.shards())
        customers = GaugeMetricFamily("crm_customers_in_memory", "Customer profiles held in memory (the store holds all)")
        customers.add_metric([], sum(len(s.profiles) for s in shards))
        yield customers
        applied = CounterMetricFamily("crm_events_applied", "Events applied to profiles (redeliveries excluded)")
        applied.add_metric([], sum(s.applied for s in shards))
        yield applied
        suppressed = CounterMetricFamily("crm_triggers_suppressed", "Marketing triggers held back by governance", labels=["reason"])
        for reason, n in sorted(sum((s.suppressed for s in shards), Tally()).items()):
            suppressed.add_metric([reason], n)
        yield suppressed
        evicted = CounterMetricFamily("crm_customers_evicted", "Customers dropped from memory after engine.retention_days inactive")
        evicted.add_metric([], sum(s.evicted for s in shards))
        yield evicted
        timers = GaugeMetricFamily("crm_timers_pending", "Timer entries held in memory by the shards' wheels")
        timers.add_metric([], sum(s.wheel.pending() for s in shards))
        yield timers
        if shards:
            newest = GaugeMetricFamily("crm_event_time_newest_seconds", "Newest event time seen (epoch seconds)")
            newest.add_metric([], max(s.clock for s in shards) / 1000)
            yield newest
            watermark = GaugeMetricFamily("crm_watermark_seconds", "Slowest shard's event-time watermark (epoch seconds)")
            watermark.add_metric([], min(s.event_clock.watermark() for s in shards) / 1000)
            yield watermark
