from __future__ import annotations

import urllib.error
import urllib.request
from datetime import timedelta

from bytewax.testing import run_main
from prometheus_client import CollectorRegistry

from crm_stream.config import settings as config
from crm_stream.flows.dataflow import build_flow
from crm_stream.flows.health import serve
from crm_stream.operators.events.router import Router
from crm_stream.operators.events.schema import Decoder
from crm_stream.operators.io.files import CollectingOutputs, FileReader
from crm_stream.operators.io.metrics import EngineMetrics, deadletter_label
from crm_stream.operators.io.stores import MemoryStore
from tests.events import event, lines, purchase, view

SETTINGS = config.load(None, env={})


def _value(metrics: EngineMetrics, name: str, labels: dict | None = None) -> float:
    return metrics.registry.get_sample_value(name, labels or {}) or 0.0


def test_counts_from_a_real_run_land_in_a_fresh_registry(tmp_path):
    path = tmp_path / "e.jsonl"
    path.write_bytes(
        lines([view("c1"), view("c2"), purchase("c1", amount=5)]) + b"not json\n" + lines([event("survey", "c1", score=99)])
    )
    metrics = EngineMetrics(CollectorRegistry())
    store, shards = MemoryStore(), {}
    router = Router(Decoder(SETTINGS.currency_rates), SETTINGS.engine.shards, metrics)
    metrics.watch_shards(lambda: list(shards.values()))
    flow = build_flow(
        SETTINGS,
        reader=FileReader(path),
        outputs_factory=lambda w: CollectingOutputs(),
        store_provider=lambda: store,
        router=router,
        shard_registry=shards,
        metrics=metrics,
    )
    run_main(flow, epoch_interval=timedelta(seconds=1))
    assert _value(metrics, "crm_events_in_total", {"topic": "file", "type": "product_view"}) == 2
    assert _value(metrics, "crm_events_in_total", {"topic": "file", "type": "purchase"}) == 1
    assert _value(metrics, "crm_deadletter_total", {"reason": "invalid_json"}) == 1
    assert _value(metrics, "crm_deadletter_total", {"reason": "field_score"}) == 1
    assert _value(metrics, "crm_outputs_total", {"destination": "deadletter"}) == 2
    assert _value(metrics, "crm_customers_in_memory") == 2
    assert _value(metrics, "crm_events_applied_total") == 3
    assert _value(metrics, "crm_store_write_seconds_count") >= 1


def test_dead_letter_labels_are_bounded():
    assert deadletter_label("field 'items[3].price': must be a number") == "field_items"
    assert deadletter_label("message is 9999999 bytes; the limit is 1") == "too_large"
    assert deadletter_label("something new") == "other"


def test_http_endpoints():
    metrics = EngineMetrics(CollectorRegistry())
    server = serve(metrics, 0, ready=lambda: metrics.last_batch is not None, host="127.0.0.1")
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        assert urllib.request.urlopen(base + "/healthz", timeout=5).status == 200
        try:
            urllib.request.urlopen(base + "/readyz", timeout=5)
            raise AssertionError("not ready before any batch")
        except urllib.error.HTTPError as exc:
            assert exc.code == 503
        metrics.count_batch({}, [])
        assert urllib.request.urlopen(base + "/readyz", timeout=5).status == 200
        body = urllib.request.urlopen(base + "/metrics", timeout=5).read().decode()
        assert "crm_store_write_seconds_bucket" in body
    finally:
        server.shutdown()


def test_latency_histograms_are_fed_per_sink_batch_from_the_ingest_marker():
    from crm_stream.operators.io.effects import INGESTED, EffectsWriter

    class Outputs:
        def send(self, destination, key, value):
            pass

        def flush(self):
            pass

    metrics = EngineMetrics(CollectorRegistry())
    writer = EffectsWriter(Outputs(), MemoryStore(), metrics)
    now = __import__("time").time()
    alert = b'{"alert_id": "a1", "ts": "2020-01-01T00:00:00Z"}'
    trigger = b'{"alert_id": "t1", "ts": "2020-01-01T00:00:00Z", "send_at": "2020-01-02T00:00:00+00:00"}'
    writer.write(
        [
            ("service", "c1", alert),
            ("marketing", "c1", trigger),
            ("put", "k", 1),
            (INGESTED, None, now - 2.0),
            (INGESTED, None, now - 1.0),
        ]
    )
    assert _value(metrics, "crm_batch_ingest_latency_seconds_count") == 1
    assert 2.0 <= _value(metrics, "crm_batch_ingest_latency_seconds_sum") < 60  # the oldest read counts
    for destination in ("service", "marketing"):
        assert _value(metrics, "crm_alert_ingest_latency_seconds_count", {"destination": destination}) == 1
        assert _value(metrics, "crm_alert_event_latency_seconds_count", {"destination": destination}) == 1
    service = _value(metrics, "crm_alert_event_latency_seconds_sum", {"destination": "service"})
    marketing = _value(metrics, "crm_alert_event_latency_seconds_sum", {"destination": "marketing"})
    assert service - marketing == 86400  # a trigger is measured from its send_at
    writer.write([("put", "k", 2)])  # no marker (replay, timers): nothing observed
    assert _value(metrics, "crm_batch_ingest_latency_seconds_count") == 1


def test_store_failures_count_as_errors_and_retries():
    metrics = EngineMetrics(CollectorRegistry())
    metrics.store_failed("write", ConnectionError("refused"))
    metrics.store_failed("write", ValueError("bad"), retried=False)
    assert _value(metrics, "crm_store_retries_total", {"operation": "write"}) == 1
    assert _value(metrics, "crm_store_errors_total", {"operation": "write", "error": "ConnectionError"}) == 1
    assert _value(metrics, "crm_store_errors_total", {"operation": "write", "error": "ValueError"}) == 1


def test_lag_and_models_are_read_at_scrape_time():
    from crm_stream.operators.io.keys import KeySpace
    from crm_stream.operators.stages.learning import SharedModels

    metrics = EngineMetrics(CollectorRegistry())
    lags = {("crm.clickstream", 0): 5, ("crm.purchases", 1): 0}
    models = SharedModels(MemoryStore(), KeySpace("crm"))
    metrics.watch_lag(lambda: lags)
    metrics.watch_models(models.report)
    assert _value(metrics, "crm_consumer_lag", {"topic": "crm.clickstream", "partition": "0"}) == 5
    lags[("crm.clickstream", 0)] = 7
    assert _value(metrics, "crm_consumer_lag", {"topic": "crm.clickstream", "partition": "0"}) == 7
    # The churn cold start: the untrained correction, which is the streaming MBG/NBD (models/guard.py).
    assert _value(metrics, "crm_model_serving", {"model": "churn"}) == 1
    assert _value(metrics, "crm_model_serving_source", {"model": "churn", "source": "model"}) == 1
    assert _value(metrics, "crm_model_serving", {"model": "next_purchase"}) == 0
    assert _value(metrics, "crm_model_serving_source", {"model": "next_purchase", "source": "bgnbd"}) == 1
    models.hub.serving = ["recency", "gap"]  # as the guard may choose (tests/unit/test_guard.py)
    assert _value(metrics, "crm_model_serving_source", {"model": "churn", "source": "recency"}) == 1
    evaluation = models.hub.evaluation
    evaluation.score_churn(True, [0.9, 0.9, 0.5, 0.5])
    evaluation.score_churn(False, [0.1, 0.1, 0.5, 0.5])
    assert _value(metrics, "crm_model_labels_total", {"model": "churn", "label": "churned"}) == 1
    assert _value(metrics, "crm_model_churn_auc", {"source": "model", "window": "all"}) == 1.0


def test_a_stop_request_ends_every_reader_partition_as_if_exhausted():
    import threading

    import pytest

    from crm_stream.flows.bytewax_io import _ReaderPartition
    from crm_stream.operators.io.interface import Raw

    class Endless:
        def read_batch(self):
            return [Raw("t", 0, 0, b"{}")]

        def done(self):
            return False

    stop = threading.Event()
    part = _ReaderPartition(Endless(), stop)
    assert part.next_batch()
    stop.set()
    with pytest.raises(StopIteration):
        part.next_batch()


def test_items_made_by_another_process_count_as_crossing():
    """The reading process stamps each routed group (``Routed.origin``); a stateful step in another process counts
    it, and the events it carries, once per batch. Items of its own process are free."""
    from crm_stream.flows.dataflow import _IdentityLogic, _ProfileLogic
    from crm_stream.operators.events.router import Routed, process_tag, shard_key
    from crm_stream.operators.io.keys import KeySpace
    from crm_stream.operators.profile.state import SOURCE, SOURCE_OFFSET
    from crm_stream.operators.stages.learning import SharedModels
    from crm_stream.operators.stages.pipeline import Stages, ToProfiles

    store, keys = MemoryStore(), KeySpace("crm")
    models = SharedModels(store, keys, SETTINGS.models)
    stages = Stages(SETTINGS, lambda: store, keys, models=lambda: models)
    metrics = EngineMetrics(CollectorRegistry())
    here, elsewhere = process_tag(), process_tag() + 1
    seen = [dict(view("c1"), **{SOURCE: "file#-1", SOURCE_OFFSET: n}) for n in range(3)]
    clocks = {"file#-1": seen[0]["ts"]}
    out = _IdentityLogic(stages, metrics).on_batch(
        [Routed(0, seen[:2], clocks, elsewhere), Routed(0, seen[2:], clocks, here), Routed(0, [], clocks, elsewhere)]
    )[0]
    assert {item.origin for item in out} == {here}  # what the identity step sends on is stamped with its own process
    assert _value(metrics, "crm_crossing_items_total", {"step": "identity"}) == 2
    assert _value(metrics, "crm_crossing_events_total", {"step": "identity"}) == 2
    _ProfileLogic(stages, metrics).on_batch([ToProfiles(shard_key(0), seen[:1], clocks, elsewhere)])
    assert _value(metrics, "crm_crossing_events_total", {"step": "profiles"}) == 1
    _ProfileLogic(stages, metrics).on_batch([ToProfiles(shard_key(0), seen[1:], clocks, here)])
    assert _value(metrics, "crm_crossing_events_total", {"step": "profiles"}) == 1
