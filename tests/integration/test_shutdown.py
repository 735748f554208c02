"""SIGTERM mid-stream: the engine drains, writes, snapshots its models, commits offsets and exits 0; a restart goes on exactly there."""

from __future__ import annotations

import re
import signal
import time

import redis
from confluent_kafka import Consumer, TopicPartition

from crm_stream.models.hub import ModelHub
from crm_stream.operators.io.kafka import ensure_topics, produce_records
from tests.integration.engine_process import Engine, applied_events, engine_env, profiles_in_redis, wait_until_settled
from tests.integration.scenario import (
    ENV,
    alert_ids,
    expected_outcome,
    numbers,
    output_records,
    per_customer,
    shop_records,
    wait_for,
)


def _committed(kafka, topics: tuple[str, ...], partitions: int) -> dict[tuple[str, int], int]:
    consumer = Consumer({"bootstrap.servers": kafka.bootstrap_servers, "group.id": kafka.group_id, "enable.auto.commit": False})
    try:
        found = consumer.committed([TopicPartition(t, p) for t in topics for p in range(partitions)], timeout=10)
        return {(tp.topic, tp.partition): tp.offset for tp in found}
    finally:
        consumer.close()


def test_sigterm_drains_then_a_restart_continues_without_duplicates(kafka_settings, redis_url, tmp_path):
    expected = expected_outcome(tmp_path)
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    ensure_topics(kafka_settings, partitions=3)
    topics = kafka_settings.topics
    produce_records(kafka_settings, shop_records(kafka_settings))
    # No periodic model snapshot: the one in Redis after the stop can only be the shutdown's.
    env = engine_env(kafka_settings, redis_url, tmp_path / "recovery", CRM_STREAM__MODELS__SNAPSHOT_EVERY_S="100000", **ENV)
    engine = Engine(env, tmp_path / "engine.log")
    engine.start()
    wait_for(lambda: engine.assert_running() or applied_events(client) >= expected.applied // 3, 90, "a third of the events")

    engine.kill(signal.SIGTERM)  # waits for the exit
    assert engine.proc.returncode == 0, engine.log_tail()
    log = engine.log_path.read_text(errors="replace")
    drained = re.search(r"SIGTERM: drained; .* model version (\d+), (\d+) partition position\(s\) committed", log)
    assert drained, engine.log_tail()
    at_stop = applied_events(client)
    assert 0 < at_stop < expected.applied, f"not stopped mid-stream ({at_stop} of {expected.applied})"

    # The model snapshot is the one the process held when it stopped.
    snapshot = client.get("crm:model:customer")
    assert snapshot is not None and ModelHub.peek(snapshot)[1] == int(drained.group(1)) > 0
    # Every input partition's read position is committed, and covers every event already in a profile.
    assert int(drained.group(2)) == len(topics.inputs()) * 3
    committed = _committed(kafka_settings, topics.inputs(), 3)
    assert all(offset > 0 for offset in committed.values()), committed
    applied_positions: dict[str, int] = {}
    for profile in profiles_in_redis(client).values():
        for source, offset in profile["offsets"].items():
            applied_positions[source] = max(applied_positions.get(source, -1), offset)
    for source, offset in applied_positions.items():
        topic, partition = source.split("|")[0].rsplit("#", 1)  # "topic#p", or "topic#p|visitor" for a visitor's carried events
        assert committed[(topic, int(partition))] > offset, (source, offset, committed)

    engine.start()  # same recovery directory: resumes at the final positions
    try:
        settled = wait_until_settled(client, engine, expected.applied, timeout_s=90)
        time.sleep(1.0)  # anything still arriving would be a double count
        assert applied_events(client) == settled == expected.applied, engine.log_tail()
        got = profiles_in_redis(client)
        # Timers due at the end of the stream fire once the last partitions have been idle engine.idle_partition_s.
        wait_for(
            lambda: per_customer(alert_ids(kafka_settings)) >= per_customer(expected.alert_ids), 60, "the timers' alerts", 1.0
        )
    finally:
        engine.kill(signal.SIGTERM)
    assert engine.proc.returncode == 0, engine.log_tail()
    assert {c: numbers(p) for c, p in got.items()} == {c: numbers(p) for c, p in expected.profiles.items()}

    # Nothing was read twice, so nothing went out twice: each reject and each alert exactly once.
    dead = output_records(kafka_settings, topics.deadletter)
    assert len(dead) == len({(d["topic"], d["partition"], d["offset"]) for d in dead}) == expected.counts["malformed"]
    alerts = [a["alert_id"] for a in output_records(kafka_settings, topics.service_alerts, topics.marketing_triggers)]
    assert len(alerts) == len(set(alerts)), "an alert was emitted twice across a graceful restart"
    assert per_customer(set(alerts)) == per_customer(expected.alert_ids)
