"""KafkaReader / KafkaOutputs / helpers against a real Kafka-protocol broker (Tansu)."""

from __future__ import annotations

import dataclasses
import re
import threading
import time
from collections import defaultdict

import pytest
from confluent_kafka import Consumer, TopicPartition

from crm_stream.config.settings import KafkaSettings
from crm_stream.operators.io.interface import DEADLETTER, MARKETING, SERVICE, Raw
from crm_stream.operators.io.kafka import (
    DeliveryFailed,
    KafkaOutputs,
    KafkaPartitionReader,
    KafkaReader,
    TopicMissing,
    ensure_topics,
    parse_partition_name,
    produce_records,
    read_topic,
)
from tests.integration.conftest import TansuBroker, make_kafka_settings

PARTITIONS = 4


def read_at_least(reader: KafkaPartitionReader, count: int, timeout_s: float = 10.0) -> list[Raw]:
    """Batches until ``count`` records or ``timeout_s``; then one more short read to catch extras."""
    out: list[Raw] = []
    deadline = time.monotonic() + timeout_s
    while len(out) < count and time.monotonic() < deadline:
        out.extend(reader.read_batch())
    out.extend(reader.read_batch())
    return out


def produce_keyed(settings: KafkaSettings, count: int, start: int = 0) -> dict[bytes, str]:
    """``count`` records on the clickstream topic, keyed over 97 customers; returns value -> key."""
    records = [(settings.topics.clickstream, f"c{i % 97}", b'{"n":%d}' % i) for i in range(start, start + count)]
    assert produce_records(settings, records) == count
    return {value: key for _, key, value in records}


def test_ensure_topics_creates_every_topic_once(kafka_settings: KafkaSettings) -> None:
    all_topics = {getattr(kafka_settings.topics, f.name) for f in dataclasses.fields(kafka_settings.topics)}

    assert set(ensure_topics(kafka_settings, partitions=PARTITIONS)) == all_topics
    assert ensure_topics(kafka_settings, partitions=PARTITIONS) == []

    names = KafkaReader(kafka_settings, kafka_settings.topics.inputs()).partitions()
    assert len(names) == len(kafka_settings.topics.inputs()) * PARTITIONS
    assert names[:PARTITIONS] == [f"{kafka_settings.topics.clickstream}#{p}" for p in range(PARTITIONS)]


def test_missing_input_topic_is_a_clear_error(kafka_settings: KafkaSettings) -> None:
    with pytest.raises(TopicMissing, match=re.escape(kafka_settings.topics.support)):
        KafkaReader(kafka_settings, [kafka_settings.topics.support]).partitions()
    # Listing partitions must not have auto-created it (Tansu creates topics named in some metadata requests).
    assert kafka_settings.topics.support in ensure_topics(kafka_settings)


def test_reader_reads_exactly_what_was_produced(kafka_settings: KafkaSettings) -> None:
    ensure_topics(kafka_settings, partitions=PARTITIONS)
    key_of = produce_keyed(kafka_settings, 5000)
    reader = KafkaReader(kafka_settings, [kafka_settings.topics.clickstream], batch_size=700)

    parts = {name: reader.open(name, None) for name in reader.partitions()}
    got: dict[str, list[Raw]] = {name: [] for name in parts}
    try:
        deadline = time.monotonic() + 15
        while sum(map(len, got.values())) < 5000 and time.monotonic() < deadline:
            for name, part in parts.items():
                got[name].extend(part.read_batch())
        for name, part in parts.items():  # anything beyond the 5000 would be a bug
            got[name].extend(part.read_batch())
    finally:
        for part in parts.values():
            part.close()

    partition_of_key: dict[str, set[int]] = defaultdict(set)
    for name, records in got.items():
        topic, number = parse_partition_name(name)
        assert all(r.topic == topic and r.partition == number for r in records)
        assert [r.offset for r in records] == list(range(len(records))), f"{name}: offsets not contiguous from 0"
        assert parts[name].position() == (len(records) or None)
        numbers = [int(r.value[5:-1]) for r in records]
        assert numbers == sorted(numbers), f"{name}: per-partition order differs from produce order"
        for r in records:
            partition_of_key[key_of[r.value]].add(number)
    seen = [r for records in got.values() for r in records]
    assert sorted(r.value for r in seen) == sorted(key_of)
    assert all(len(parts) == 1 for parts in partition_of_key.values()), "a key was spread over several partitions"


def test_resume_from_a_position_returns_exactly_the_rest(kafka_settings: KafkaSettings) -> None:
    ensure_topics(kafka_settings, partitions=1)
    produce_keyed(kafka_settings, 3000)
    reader = KafkaReader(kafka_settings, [kafka_settings.topics.clickstream], batch_size=1000)
    [name] = reader.partitions()

    first = reader.open(name, None)
    head = first.read_batch() or read_at_least(first, 1)
    position = first.position()
    first.close()
    assert position == head[-1].offset + 1 and head[0].offset == 0

    # 1234 is inside a compressed record batch: the client must skip the batch's head.
    for start in (position, 1234):
        rest = reader.open(name, start)
        try:
            records = read_at_least(rest, 3000 - start)
        finally:
            rest.close()
        assert [r.offset for r in records] == list(range(start, 3000))
        assert [int(r.value[5:-1]) for r in records] == list(range(start, 3000))
        assert rest.position() == 3000


def test_committed_offset_is_where_a_fresh_reader_starts(kafka_settings: KafkaSettings) -> None:
    ensure_topics(kafka_settings, partitions=1)
    produce_keyed(kafka_settings, 50)
    reader = KafkaReader(kafka_settings, [kafka_settings.topics.clickstream])
    [name] = reader.partitions()

    part = reader.open(name, None)
    read_at_least(part, 50)
    part.commit(40)
    part.read_batch()  # serves the asynchronous commit's callback
    part.close()
    assert committed_offset(kafka_settings, kafka_settings.topics.clickstream) == 40, "the broker did not store the commit"

    again = reader.open(name, None)
    try:
        records = read_at_least(again, 10)
    finally:
        again.close()
    assert [r.offset for r in records] == list(range(40, 50))


def committed_offset(settings: KafkaSettings, topic: str, timeout_s: float = 5.0) -> int:
    """The group's committed offset for ``topic[0]``, waiting (bounded) for an asynchronous commit to land."""
    consumer = Consumer({"bootstrap.servers": settings.bootstrap_servers, "group.id": settings.group_id})
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            offset = consumer.committed([TopicPartition(topic, 0)], timeout=2)[0].offset
            if offset >= 0 or time.monotonic() > deadline:
                return offset
            time.sleep(0.05)
    finally:
        consumer.close()


def test_outputs_deliver_each_destination_to_its_topic(kafka_settings: KafkaSettings) -> None:
    ensure_topics(kafka_settings, partitions=2)
    outputs = KafkaOutputs(kafka_settings)
    expected = {
        SERVICE: kafka_settings.topics.service_alerts,
        MARKETING: kafka_settings.topics.marketing_triggers,
        DEADLETTER: kafka_settings.topics.deadletter,
    }
    for destination in expected:
        for i in range(20):
            outputs.send(destination, f"c{i}" if destination != DEADLETTER else None, f'{{"{destination}":{i}}}'.encode())
    outputs.flush()
    with pytest.raises(ValueError, match="unknown output destination"):
        outputs.send("nowhere", None, b"{}")
    outputs.close()

    for destination, topic in expected.items():
        got = read_topic(kafka_settings, topic, timeout_s=10)
        assert sorted(v for _, v in got) == sorted(f'{{"{destination}":{i}}}'.encode() for i in range(20))
        keys = {k for k, _ in got}
        assert keys == ({None} if destination == DEADLETTER else {f"c{i}" for i in range(20)})


def test_a_record_too_large_is_a_clear_permanent_error(kafka_bootstrap: str) -> None:
    settings = dataclasses.replace(make_kafka_settings(kafka_bootstrap), max_message_bytes=10_000)
    ensure_topics(settings, partitions=1)
    outputs = KafkaOutputs(settings)
    with pytest.raises(DeliveryFailed, match="max_message_bytes"):
        outputs.send(SERVICE, "c1", b"x" * 20_000)
        outputs.flush(timeout_s=10)


def test_reader_survives_a_broker_restart(private_broker: TansuBroker) -> None:
    settings = make_kafka_settings(private_broker.bootstrap)
    topic = settings.topics.clickstream
    ensure_topics(settings, partitions=1)
    produce_records(settings, [(topic, "c1", b"before-%d" % i) for i in range(10)])
    reader = KafkaReader(settings, [topic])
    part = reader.open(f"{topic}#0", None)
    try:
        assert [r.value for r in read_at_least(part, 10)] == [b"before-%d" % i for i in range(10)]

        private_broker.stop()
        for _ in range(5):
            assert part.read_batch() == []  # empty, never an exception
        private_broker.start()

        # The memory engine forgot everything: the topic comes back empty, offsets restart at 0
        # and the reader waits at its position (10). Records 10.. are the ones it must return.
        ensure_topics(settings, partitions=1)
        produce_records(settings, [(topic, "c1", b"after-%d" % i) for i in range(15)])
        records = read_at_least(part, 5, timeout_s=15)
    finally:
        part.close()
    assert [(r.offset, r.value) for r in records] == [(i, b"after-%d" % i) for i in range(10, 15)]
    assert part.position() == 15


def test_outputs_flush_waits_out_a_broker_restart(private_broker: TansuBroker) -> None:
    settings = make_kafka_settings(private_broker.bootstrap)
    topic = settings.topics.service_alerts
    ensure_topics(settings, partitions=1)
    outputs = KafkaOutputs(settings, delivery_timeout_s=2.0)
    outputs.send(SERVICE, "c1", b"before")
    outputs.flush(timeout_s=10)

    private_broker.stop()
    for i in range(10):
        outputs.send(SERVICE, "c1", b"during-%d" % i)

    def come_back() -> None:
        time.sleep(1.0)
        private_broker.start()
        ensure_topics(settings, partitions=1)

    restarter = threading.Thread(target=come_back)
    restarter.start()
    try:
        outputs.flush(timeout_s=30)  # blocks through the outage, then delivers
    finally:
        restarter.join()
    outputs.close()

    values = [v for _, v in read_topic(settings, topic, timeout_s=10)]
    assert set(values) >= {b"during-%d" % i for i in range(10)}  # "before" died with the memory engine
