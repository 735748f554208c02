"""What the outage and shutdown tests share: the simulated shop, its expected outcome, and ways to look at a running engine."""

from __future__ import annotations

import time
import urllib.request
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import redis
from bytewax.testing import run_main
from prometheus_client.parser import text_string_to_metric_families

from crm_stream.config import settings as config
from crm_stream.config.settings import KafkaSettings
from crm_stream.flows.dataflow import build_flow
from crm_stream.operators.events.simulator import Shop
from crm_stream.operators.io.files import CollectingOutputs, FileReader
from crm_stream.operators.io.interface import MARKETING, SERVICE
from crm_stream.operators.io.kafka import read_topic
from crm_stream.operators.io.stores import MemoryStore
from tests.integration.conftest import RedisServer

SIM = config.SimulatorSettings(customers=300, days=150, seed=5, bad_rate=0.005)
# As in test_crash_recovery: a visitor buffer large enough that topic interleaving cannot change what is kept.
ENV = {"CRM_STREAM__ENGINE__ANONYMOUS_MAX_EVENTS": "100000"}
# Alerts raised by an event from the customer's own state: live and replay raise exactly the same ids. Timer
# rules are compared on their own in test_engine_kafka_redis (with the caps lifted): here the frequency caps
# couple them to triggers of rules that read shop-wide state (churn model, segment lines), which may differ.
PER_CUSTOMER = ("angry_customer-",)


@dataclass
class Expected:
    counts: dict[str, int]
    applied: int
    profiles: dict[str, dict[str, Any]]
    alert_ids: set[str]


def expected_outcome(tmp_path: Path) -> Expected:
    """The shop replayed in-process from a file: what the live engine must end up with."""
    path = tmp_path / "events.jsonl"
    counts = Shop(SIM).write_files(path)
    store, shards, outputs = MemoryStore(), {}, CollectingOutputs()
    flow = build_flow(
        config.load(None, env=ENV),
        reader=FileReader(path),
        outputs_factory=lambda w: outputs,
        store_provider=lambda: store,
        shard_registry=shards,
    )
    run_main(flow, epoch_interval=timedelta(seconds=10))
    profiles = {k.rsplit(":", 1)[1]: v for k, v in store.scan("crm:profile:")}
    alerts = {orjson.loads(v)["alert_id"] for d in (SERVICE, MARKETING) for v in outputs.records.get(d, [])}
    return Expected(counts, sum(s.applied for s in shards.values()), profiles, alerts)


def shop_records(kafka: KafkaSettings) -> list[tuple[str, str | None, bytes]]:
    return [(getattr(kafka.topics, role), key, value) for role, key, value in Shop(SIM).records()]


def numbers(profile: dict[str, Any]) -> tuple:
    """What every event changes, counted: equal to the replay's only if each event was applied exactly once."""
    return (
        profile["frequency"],
        round(profile["monetary"], 2),
        profile["events"],
        profile["type_counts"],
        profile["refunds"],
        profile["tickets_opened"],
    )


def output_records(kafka: KafkaSettings, *topics: str) -> list[dict[str, Any]]:
    return [orjson.loads(v) for topic in topics for _, v in read_topic(kafka, topic, timeout_s=10) if v]


def alert_ids(kafka: KafkaSettings) -> set[str]:
    return {a["alert_id"] for a in output_records(kafka, kafka.topics.service_alerts, kafka.topics.marketing_triggers)}


def per_customer(ids: set[str]) -> set[str]:
    return {a for a in ids if a.startswith(PER_CUSTOMER)}


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The engine's /metrics as {(sample name, sorted labels): value}."""
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in text_string_to_metric_families(body) for s in f.samples}


def total(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str) -> float:
    return sum(v for (n, _), v in samples.items() if n == name)


def wait_for(predicate: Any, timeout_s: float, what: str, poll_s: float = 0.2) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(poll_s)
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")


class DurableRedis(RedisServer):
    """``redis-server`` with an append-only file fsynced on every write: stopped and started on the same port, it keeps all data."""

    name = "redis-aof"

    def command(self) -> list[str]:
        return [
            self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes",
            "--appendfsync", "always", "--daemonize", "no", "--dir", str(self.log_path.parent),
        ]  # fmt: skip

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url)
