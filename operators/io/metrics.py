"""Prometheus metrics, all created here, in one registry that the caller passes in.

Hot-path counters are incremented once per batch with the batch's totals,
never per event. State that already exists in the shards (customers held,
events applied, suppressed triggers, the watermark) is read at scrape time
by a collector, so it costs nothing between scrapes. The same goes for the
consumer lag (watermarks the Kafka client already holds) and the online
models' progressive scores: read when scraped, never per event.

The README's "Operations" section lists every metric; tests/unit/test_dashboard.py
checks that the Grafana dashboard and the alert rules query only names made here.
"""

from __future__ import annotations

import re
import time
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

_FIELD = re.compile(r"field '([^']+)'")
INGESTED_AT = "_in"
"""Event key: wall time (epoch s) at which the source handed the event's batch to the dataflow. Set on the
first event of each shard's group only (flows/dataflow.py), so it costs nothing per event; live engine only."""
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 21600, 86400)


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
        self.events_in = Counter(
            "crm_events_in_total", "Valid events decoded, by input topic and type", ["topic", "type"], registry=r
        )
        self.deadlettered = Counter(
            "crm_deadletter_total", "Records sent to the dead-letter output, by reason", ["reason"], registry=r
        )
        self.outputs = Counter(
            "crm_outputs_total", "Records made durable on the outputs, by destination", ["destination"], registry=r
        )
        self.store_write_seconds = Histogram(
            "crm_store_write_seconds",
            "Time of one atomic store write (retries included)",
            registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.store_write_keys = Histogram(
            "crm_store_write_keys",
            "Keys written or deleted per store write",
            registry=r,
            buckets=(1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000),
        )
        self.store_retries = Counter(
            "crm_store_retries_total", "Store operations retried because the store was unreachable", ["operation"], registry=r
        )
        self.store_errors = Counter(
            "crm_store_errors_total",
            "Failed store calls, by operation and error class (retried or not)",
            ["operation", "error"],
            registry=r,
        )
        self.alert_event_latency = Histogram(
            "crm_alert_event_latency_seconds",
            "Wall time an alert or trigger became durable on its topic minus its event time (ts; a trigger's send_at)",
            ["destination"],
            registry=r,
            buckets=LATENCY_BUCKETS,
        )
        self.alert_ingest_latency = Histogram(
            "crm_alert_ingest_latency_seconds",
            "Source read of the batch that raised an alert or trigger -> the alert durable on its topic",
            ["destination"],
            registry=r,
            buckets=LATENCY_BUCKETS,
        )
        self.batch_ingest_latency = Histogram(
            "crm_batch_ingest_latency_seconds",
            "Source read of a batch's oldest record -> that shard batch's outputs and profiles durable",
            registry=r,
            buckets=LATENCY_BUCKETS,
        )
        self.crossing_items = Counter(
            "crm_crossing_items_total",
            "Dataflow items that reached a stateful step (identity, profiles) in another process than the one that made them",
            ["step"],
            registry=r,
        )
        self.crossing_events = Counter(
            "crm_crossing_events_total",
            "Events carried by those items: the records that crossed processes (issue 16: per 1,000 events in)",
            ["step"],
            registry=r,
        )
        self.started = time.time()
        self.last_batch: float | None = None

    def count_batch(self, counts: Mapping[tuple[str, str], int], dead_reasons: Iterable[str]) -> None:
        """``counts``: events of the batch by (source label ``topic#partition``, type), tallied by the router."""
        by_topic: Tally[tuple[str, str]] = Tally()
        for (source, kind), n in counts.items():
            by_topic[source.split("#")[0] or "file", kind] += n
        for (topic, kind), n in by_topic.items():
            self.events_in.labels(topic, kind).inc(n)
        for label, n in Tally(deadletter_label(r) for r in dead_reasons).items():
            self.deadlettered.labels(label).inc(n)
        self.last_batch = time.time()

    def crossed(self, step: str, items: int, events: int) -> None:
        """A stateful step's batch held ``items`` made by another process, carrying ``events`` events."""
        if items:
            self.crossing_items.labels(step).inc(items)
            self.crossing_events.labels(step).inc(events)

    def store_failed(self, operation: str, exc: BaseException, retried: bool = True) -> None:
        self.store_errors.labels(operation, type(exc).__name__).inc()
        if retried:
            self.store_retries.labels(operation).inc()

    def observe_alerts(self, alerts: Mapping[str, list[bytes]], ingested_at: float | None, now: float | None = None) -> None:
        """Alerts just made durable: each one's latency from its event time, and from the source read of its batch.

        Alerts are few (under 1% of events), so decoding them here is cheap; a record that does not parse
        is skipped rather than failing the sink.
        """
        now = time.time() if now is None else now
        for destination, values in alerts.items():
            by_event = self.alert_event_latency.labels(destination)
            by_ingest = self.alert_ingest_latency.labels(destination)
            for value in values:
                due = _due_time(value)
                if due is not None:
                    by_event.observe(max(0.0, now - due))
                if ingested_at is not None:
                    by_ingest.observe(max(0.0, now - ingested_at))

    def observe_batch(self, ingested_at: float, now: float | None = None) -> None:
        """A sink batch's outputs and state are durable: its latency from the source read of its oldest record."""
        self.batch_ingest_latency.observe(max(0.0, (time.time() if now is None else now) - ingested_at))

    def watch_shards(self, shards: Callable[[], Iterable[Any]]) -> None:
        """Export the profile shards' own state at scrape time (see ShardCollector)."""
        self.registry.register(ShardCollector(shards))

    def watch_lag(self, lags: Callable[[], Mapping[tuple[str, int], int]]) -> None:
        """Export consumer lag per input partition at scrape time; ``lags`` is e.g. ``KafkaReader.lags``."""
        self.registry.register(LagCollector(lags))

    def watch_models(self, report: Callable[[], Mapping[str, Any] | None]) -> None:
        """Export the online models' counters and progressive scores at scrape time; ``report`` is e.g. ``SharedModels.report``."""
        self.registry.register(ModelCollector(report))


def _due_time(value: bytes) -> float | None:
    """Epoch seconds an alert was due: a trigger's ``send_at`` (held by governance on purpose), else its ``ts``."""
    try:
        alert = orjson.loads(value)
        stamp = alert.get("send_at") or alert["ts"]
        return datetime.fromisoformat(stamp).timestamp()
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
        return None


class LagCollector:
    """``crm_consumer_lag{topic,partition}``: records between the engine's read position and the partition's end."""

    def __init__(self, lags: Callable[[], Mapping[tuple[str, int], int]]) -> None:
        self.lags = lags

    def collect(self) -> Iterable[Any]:
        lag = GaugeMetricFamily(
            "crm_consumer_lag",
            "Records in the input partition not yet read by the engine (high watermark - position)",
            labels=["topic", "partition"],
        )
        for (topic, partition), n in sorted(self.lags().items()):
            lag.add_metric([topic, str(partition)], n)
        yield lag


class ModelCollector:
    """The online models (operators/stages/learning.py ``SharedModels.report``): labels resolved, progressive scores, serving mode."""

    def __init__(self, report: Callable[[], Mapping[str, Any] | None]) -> None:
        self.report = report

    def collect(self) -> Iterable[Any]:
        report = self.report()
        if not report:
            return
        labels = CounterMetricFamily(
            "crm_model_labels",
            "Delayed labels resolved and scored (progressive validation) by model and label",
            labels=["model", "label"],
        )
        for (model, label), n in sorted(report["labels"].items()):
            labels.add_metric([model, label], n)
        yield labels
        auc = GaugeMetricFamily(
            "crm_model_churn_auc",
            "Progressive ROC AUC of churn scores (test-then-train), by source and window",
            labels=["source", "window"],
        )
        for (source, window), value in sorted(report["churn_auc"].items()):
            auc.add_metric([source, window], value)
        yield auc
        mae = GaugeMetricFamily(
            "crm_model_next_purchase_mae_days",
            "Progressive mean absolute error of next-purchase days, by source and window",
            labels=["source", "window"],
        )
        for (source, window), value in sorted(report["next_purchase_mae"].items()):
            mae.add_metric([source, window], value)
        yield mae
        serving = GaugeMetricFamily(
            "crm_model_serving",
            "1 when the learned model answers, 0 while a baseline the serving guard chose stands in",
            labels=["model"],
        )
        for model, on in sorted(report["serving"].items()):
            serving.add_metric([model], 1.0 if on else 0.0)
        yield serving
        source = GaugeMetricFamily(
            "crm_model_serving_source",
            "1 for the estimate the serving guard chose (models/guard.py: model, bgnbd, rhythm, recency, gap)",
            labels=["model", "source"],
        )
        for model, name in sorted(report.get("serving_source", {}).items()):
            source.add_metric([model, name], 1.0)
        yield source
        version = GaugeMetricFamily("crm_model_version", "Learning steps of the customer model hub (the snapshot's identity)")
        version.add_metric([], report["version"])
        yield version
        pending = GaugeMetricFamily("crm_model_pending_predictions", "Predictions waiting for their label")
        pending.add_metric([], report["pending"])
        yield pending


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
        suppressed = CounterMetricFamily(
            "crm_triggers_suppressed", "Marketing triggers held back by governance", labels=["reason"]
        )
        for reason, n in sorted(sum((s.suppressed for s in shards), Tally()).items()):
            suppressed.add_metric([reason], n)
        yield suppressed
        evicted = CounterMetricFamily(
            "crm_customers_evicted", "Customers dropped from memory after engine.retention_days inactive"
        )
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
