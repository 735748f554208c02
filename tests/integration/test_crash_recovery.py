"""kill -9 in the middle of a Kafka + Redis stream, restart: every event counted once, every reject delivered."""

from __future__ import annotations

import signal
import time
from datetime import timedelta

import orjson
import redis
from bytewax.testing import run_main

from crm_stream.config import settings as config
from crm_stream.flows.dataflow import build_flow
from crm_stream.operators.events.simulator import Shop
from crm_stream.operators.io.files import CollectingOutputs, FileReader
from crm_stream.operators.io.kafka import ensure_topics, produce_records, read_topic
from crm_stream.operators.io.stores import MemoryStore
from tests.integration.engine_process import Engine, applied_events, engine_env, profiles_in_redis, wait_until_settled

SIM = config.SimulatorSettings(customers=300, days=150, seed=5, bad_rate=0.005)
# The visitor buffer is bounded; raise the bound so that reading topics in a different interleaving
# than the file (identify before or after the visitor's clicks) cannot change what is kept.
ENV = {"CRM_STREAM__ENGINE__ANONYMOUS_MAX_EVENTS": "100000"}


def _expected(tmp_path):
    path = tmp_path / "events.jsonl"
    counts = Shop(SIM).write_files(path)
    store, shards = MemoryStore(), {}
    flow = build_flow(
        config.load(None, env=ENV),
        reader=FileReader(path),
        outputs_factory=lambda w: CollectingOutputs(),
        store_provider=lambda: store,
        shard_registry=shards,
    )
    run_main(flow, epoch_interval=timedelta(seconds=10))
    profiles = {k.rsplit(":", 1)[1]: v for k, v in store.scan("crm:profile:")}
    return counts, sum(s.applied for s in shards.values()), profiles


def _numbers(p: dict) -> tuple:
    return (p["frequency"], round(p["monetary"], 2), p["events"], p["type_counts"], p["refunds"], p["tickets_opened"])


def test_kill_9_mid_stream_then_restart_loses_nothing_and_counts_nothing_twice(kafka_settings, redis_url, tmp_path):
    counts, expected_applied, expected_profiles = _expected(tmp_path)
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    ensure_topics(kafka_settings, partitions=3)
    topics = kafka_settings.topics
    produce_records(kafka_settings, ((getattr(topics, role), key, v) for role, key, v in Shop(SIM).records()))

    env = engine_env(kafka_settings, redis_url, tmp_path / "recovery", **ENV)
    engine = Engine(env, tmp_path / "engine.log")
    engine.start()
    deadline = time.monotonic() + 60
    while applied_events(client) < expected_applied // 4 and time.monotonic() < deadline:
        engine.assert_running()
        time.sleep(0.02)
    engine.kill(signal.SIGKILL)
    at_kill = applied_events(client)
    assert 0 < at_kill < expected_applied, f"not killed mid-stream ({at_kill} of {expected_applied}): {engine.log_tail()}"

    engine.start()  # same recovery directory, same Redis
    try:
        settled = wait_until_settled(client, engine, expected_applied, timeout_s=90)
        time.sleep(1.0)  # anything still arriving would be a double count
        assert applied_events(client) == settled == expected_applied, engine.log_tail()
        got = profiles_in_redis(client)
    finally:
        engine.kill(signal.SIGTERM)
    assert {c: _numbers(p) for c, p in got.items()} == {c: _numbers(p) for c, p in expected_profiles.items()}

    dead = [orjson.loads(v) for _, v in read_topic(kafka_settings, topics.deadletter, timeout_s=10)]
    positions = {(d["topic"], d["partition"], d["offset"]) for d in dead}
    assert len(positions) == counts["malformed"]  # at least once: every reject is there (repeats share a position)
