from __future__ import annotations

import urllib.error
import urllib.request
from datetime import timedelta

from bytewax.testing import run_main
from prometheus_client import CollectorRegistry

from config import settings as config
from flows.dataflow import build_flow
from flows.health import serve
from operators.files_io import CollectingOutputs, FileReader
from operators.metrics import EngineMetrics, deadletter_label
from operators.router import Router
from operators.schema import Decoder
from operators.stores import MemoryStore
from tests.events import event, lines, purchase, view

SETTINGS = config.load(None, env={})


def _value(metrics: EngineMetrics, name: str, labels: dict | None = None) -> float:
    return metrics.registry.get_sample_value(name, labels or {}) or 0.0


def test_counts_from_a_real_run_land_in_a_fresh_registry(tmp_path):
    path = tmp_path / "e.jsonl"
    path.write_bytes(lines([view("c1"), view("c2"), purchase("c1", amount=5)]) + b"not json\n" + lines([event("survey", "c1", score=99)]))
    metrics = EngineMetrics(CollectorRegistry())
    store, shards = MemoryStore(), {}
    router = Router(Decoder(SETTINGS.currency_rates), SETTINGS.engine.shards, metrics)
    metrics.watch_shards(lambda: list(shards.values()))
    flow = build_flow(SETTINGS, reader=FileReader(path), outputs_factory=lambda w: CollectingOutputs(), store_provider=lambda: store,
                      router=router, shard_registry=shards, metrics=metrics)
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
        metrics.count_batch([], [])
        assert urllib.request.urlopen(base + "/readyz", timeout=5).status == 200
        body = urllib.request.urlopen(base + "/metrics", timeout=5).read().decode()
        assert "crm_store_write_seconds_bucket" in body
    finally:
        server.shutdown()
