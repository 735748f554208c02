"""The Grafana dashboard, the alert rules and docker-compose only refer to things that exist."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path

import yaml
from bytewax.testing import run_main
from prometheus_client import CollectorRegistry

from crm_stream.config import settings as config
from crm_stream.flows.dataflow import build_flow
from crm_stream.operators.io.files import CollectingOutputs, FileReader
from crm_stream.operators.io.metrics import EngineMetrics
from crm_stream.operators.io.stores import MemoryStore
from tests.events import lines, purchase, view

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "config" / "grafana" / "dashboards" / "crm-stream.json"
ALERTS = ROOT / "config" / "prometheus-alerts.yml"
METRIC = re.compile(r"\b(crm_[a-z_]+)")
SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_count", "_sum", "_created"), "gauge": ("",)}


def exported_names(tmp_path: Path) -> set[str]:
    """Every sample name the engine's registry can export, with its collectors fed by a real run."""
    path = tmp_path / "e.jsonl"
    path.write_bytes(lines([view("c1"), purchase("c1", amount=5)]))
    settings = config.load(None, env={})
    metrics = EngineMetrics(CollectorRegistry())
    store, shards = MemoryStore(), {}
    metrics.watch_shards(lambda: list(shards.values()))
    metrics.watch_models(lambda: next((s.models.report() for s in shards.values()), None))
    metrics.watch_lag(lambda: {("crm.clickstream", 0): 3})
    flow = build_flow(
        settings,
        reader=FileReader(path),
        outputs_factory=lambda w: CollectingOutputs(),
        store_provider=lambda: store,
        shard_registry=shards,
        metrics=metrics,
    )
    run_main(flow, epoch_interval=timedelta(seconds=1))
    names = set()
    for family in metrics.registry.collect():
        names.update(family.name + suffix for suffix in SUFFIXES.get(family.type, ("",)))
    return names


def queried(text: str) -> set[str]:
    return set(METRIC.findall(text))


def test_every_metric_the_dashboard_and_the_alert_rules_query_is_exported(tmp_path):
    exported = exported_names(tmp_path)
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 20
    rules = [r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]]
    assert all(r["alert"] and r["expr"] and r["annotations"]["summary"] for r in rules)
    for where, names in (("dashboard", queried("\n".join(exprs))), ("alert rules", queried("\n".join(r["expr"] for r in rules)))):
        assert names, where
        assert names <= exported, f"{where} query metrics the engine does not export: {sorted(names - exported)}"
    # The lag, latency, store and model metrics this dashboard exists for are all on it.
    for name in (
        "crm_consumer_lag",
        "crm_batch_ingest_latency_seconds_bucket",
        "crm_alert_event_latency_seconds_bucket",
        "crm_store_retries_total",
        "crm_store_errors_total",
        "crm_model_churn_auc",
        "crm_customers_in_memory",
    ):
        assert name in queried("\n".join(exprs)), name


def test_panels_use_the_provisioned_datasource_and_compose_mounts_what_exists():
    datasource = yaml.safe_load((ROOT / "config/grafana/provisioning/datasources/prometheus.yml").read_text())["datasources"][0]
    dashboard = json.loads(DASHBOARD.read_text())
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == datasource["uid"], panel["title"]
    prometheus = yaml.safe_load((ROOT / "config/prometheus.yml").read_text())
    assert any(Path(f).name == ALERTS.name for f in prometheus["rule_files"])
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    for service in ("prometheus", "grafana"):
        for volume in compose[service]["volumes"]:
            source = volume.split(":")[0]
            assert (ROOT / source).exists(), f"{service} mounts {source}, which is not in the repo"
    assert datasource["url"].startswith("http://prometheus:")
