"""Outages of the servers themselves, mid-stream: Redis stopped for 30 s, the Kafka broker restarted.

Real processes throughout: the engine is ``crm-stream run``, Redis and Tansu are
stopped and started on the same ports. Each test asserts on the data: every
event's effect in the Redis profiles exactly once, every reject and every
event-driven alert on the output topics.
"""

from __future__ import annotations

import signal
import threading
import time

import orjson

from crm_stream.operators.io.kafka import ensure_topics, produce_records
from tests.integration.conftest import free_port, make_kafka_settings, redis_binary
from tests.integration.engine_process import Engine, applied_events, engine_env, profiles_in_redis, wait_until_settled
from tests.integration.scenario import (
    ENV,
    DurableRedis,
    alert_ids,
    expected_outcome,
    numbers,
    output_records,
    per_customer,
    scrape,
    shop_records,
    total,
    wait_for,
)

REDIS_DOWN_S = 30.0
# Backoff capped at 1 s (store.retry_max_seconds): the engine notices Redis is back within a second.
OUTAGE_ENV = {**ENV, "CRM_STREAM__STORE__RETRY_MAX_SECONDS": "1"}


def _settle_and_check(engine, client, kafka, expected) -> None:
    settled = wait_until_settled(client, engine, expected.applied, timeout_s=120)
    time.sleep(1.0)  # anything still arriving would be a double count
    assert applied_events(client) == settled == expected.applied, engine.log_tail()
    got = profiles_in_redis(client)
    assert {c: numbers(p) for c, p in got.items()} == {c: numbers(p) for c, p in expected.profiles.items()}


def test_redis_stopped_30s_mid_stream_then_back_loses_nothing_and_counts_nothing_twice(kafka_settings, tmp_path):
    expected = expected_outcome(tmp_path)
    server = DurableRedis(redis_binary(), log_dir=str(tmp_path))
    server.start()
    client = server.client()
    ensure_topics(kafka_settings, partitions=3)
    records = shop_records(kafka_settings)
    head = len(records) * 2 // 5
    produce_records(kafka_settings, records[:head])
    port = free_port()
    env = engine_env(kafka_settings, server.url, tmp_path / "recovery", CRM_STREAM__METRICS__PORT=str(port), **OUTAGE_ENV)
    engine = Engine(env, tmp_path / "engine.log")
    engine.start()
    producer: threading.Thread | None = None
    try:
        wait_for(lambda: engine.assert_running() or applied_events(client) >= expected.applied // 5, 90, "a fifth of the events")
        before = total(scrape(port), "crm_store_retries_total")
        server.stop()  # SIGINT: redis-server fsyncs its append-only file and exits
        down_at = time.monotonic()

        def keep_producing() -> None:  # the rest of the shop arrives on Kafka while Redis is down
            tail = records[head:]
            step = max(1, len(tail) // 10)
            for i in range(0, len(tail), step):
                produce_records(kafka_settings, tail[i : i + step])
                time.sleep(REDIS_DOWN_S / 12)

        producer = threading.Thread(target=keep_producing, daemon=True)
        producer.start()
        wait_for(lambda: total(scrape(port), "crm_store_retries_total") > before, 20, "the retry counter to move")
        while time.monotonic() - down_at < REDIS_DOWN_S:
            engine.assert_running()
            time.sleep(0.5)
        during = scrape(port)
        server.start()  # same port, same data directory
        producer.join(timeout=60)
        _settle_and_check(engine, client, kafka_settings, expected)
        after = scrape(port)
    finally:
        engine.kill(signal.SIGTERM)
        server.stop()
    log = engine.log_path.read_text(errors="replace")
    assert "failed" in log and "retrying in" in log and "nothing is dropped" in log, engine.log_tail()
    assert total(during, "crm_store_errors_total") >= total(during, "crm_store_retries_total") > before
    assert total(after, "crm_store_retries_total") >= total(during, "crm_store_retries_total")
    dead = output_records(kafka_settings, kafka_settings.topics.deadletter)
    assert len({(d["topic"], d["partition"], d["offset"]) for d in dead}) == expected.counts["malformed"]
    assert per_customer(alert_ids(kafka_settings)) == per_customer(expected.alert_ids)


def test_broker_restarted_mid_stream_keeps_its_log_and_the_engine_catches_up_with_nothing_lost(
    durable_broker, redis_url, tmp_path
):
    """Tansu as shipped (0.6.0) stores only in memory or S3 (its SQLite and PostgreSQL engines are not compiled in):
    ``durable_broker`` keeps its log in a local S3 server (moto), so the broker is stopped and started with its data,
    as a real cluster's broker would be. The engine runs through the outage (no broker for ~3 s: reads nothing, its
    outputs wait), reconnects to the same log, and finishes the stream; what it wrote before the stop is still on the
    output topics after it."""
    import redis

    expected = expected_outcome(tmp_path)
    kafka = make_kafka_settings(durable_broker.bootstrap)
    topics = kafka.topics
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    ensure_topics(kafka, partitions=3)
    records = shop_records(kafka)
    half = len(records) // 2
    produce_records(kafka, records[:half])
    engine = Engine(engine_env(kafka, redis_url, tmp_path / "recovery", **OUTAGE_ENV), tmp_path / "engine.log")
    engine.start()
    try:
        wait_for(lambda: engine.assert_running() or applied_events(client) >= expected.applied // 5, 90, "a fifth of the events")
        outputs = (topics.service_alerts, topics.marketing_triggers, topics.deadletter)
        before = {topic: output_records(kafka, topic) for topic in outputs}
        assert sum(map(len, before.values())) > 0
        durable_broker.stop()
        time.sleep(3.0)  # the engine runs with no broker
        engine.assert_running()
        durable_broker.start()  # same port, same storage: nothing produced again
        for topic in outputs:  # the log survived the restart (the engine may have added to it since)
            kept = {orjson.dumps(r) for r in output_records(kafka, topic)}
            assert {orjson.dumps(r) for r in before[topic]} <= kept, topic
        produce_records(kafka, records[half:])
        _settle_and_check(engine, client, kafka, expected)
        wait_for(lambda: per_customer(alert_ids(kafka)) >= per_customer(expected.alert_ids), 30, "the alerts", 1.0)
    finally:
        engine.kill(signal.SIGTERM)
    outputs = output_records(kafka, topics.service_alerts, topics.marketing_triggers, topics.deadletter)
    dead = {(r["topic"], r["partition"], r["offset"]) for r in outputs if "reason" in r}
    assert len(dead) == expected.counts["malformed"]
    assert per_customer({r["alert_id"] for r in outputs if "alert_id" in r}) == per_customer(expected.alert_ids)
    log = engine.log_path.read_text(errors="replace")
    assert "Connection refused" in log or "retrying" in log, engine.log_tail()
