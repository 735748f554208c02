"""The Kafka reader cuts a batch by size or by time (``engine.batch_max_wait_ms``), with an injected clock.

No broker: ``Consumer`` is replaced by a fake whose local queue the test fills, and the clock is a list the test
moves, so nothing here depends on how fast the machine is.
"""

from __future__ import annotations

from typing import Any

import pytest

from crm_stream.config import settings as config
from crm_stream.config.settings import ConfigError, KafkaSettings
from crm_stream.operators.io import kafka
from crm_stream.operators.io.kafka import KafkaPartitionReader, KafkaReader, TimedBatch


class FakeClock:
    """Seconds; the tests move it in steps that binary floating point holds exactly (no 0.1 + 0.1 surprises)."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class FakeMessage:
    def __init__(self, offset: int, topic: str = "crm.clickstream", partition: int = 0) -> None:
        self._offset = offset
        self._topic = topic
        self._partition = partition

    def offset(self) -> int:
        return self._offset

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def value(self) -> bytes:
        return b'{"n":%d}' % self._offset

    def error(self) -> None:
        return None


class FakeConsumer:
    """librdkafka's local queue: ``consume(n, 0)`` returns up to n of what arrived (any partition), never waits;
    a paused partition's records stay in the broker until it is resumed."""

    made: list[FakeConsumer] = []

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.assigned: set[tuple[str, int]] = set()
        self.paused: set[tuple[str, int]] = set()
        self.broker: dict[tuple[str, int], list[FakeMessage]] = {}
        self.next_offset: dict[tuple[str, int], int] = {}
        self.closed = False
        FakeConsumer.made.append(self)

    def arrive(self, count: int, topic: str = "crm.clickstream", partition: int = 0) -> None:
        key = (topic, partition)
        start = self.next_offset.get(key, 0)
        self.broker.setdefault(key, []).extend(FakeMessage(start + i, topic, partition) for i in range(count))
        self.next_offset[key] = start + count

    def consume(self, num_messages: int, timeout: float) -> list[FakeMessage]:
        assert timeout == 0, "the reader must never block: a worker reads many partitions in turn"
        out: list[FakeMessage] = []
        for key in sorted(self.assigned - self.paused):
            queue = self.broker.get(key, [])
            taken, self.broker[key] = queue[: num_messages - len(out)], queue[num_messages - len(out) :]
            out.extend(taken)
        return out

    def list_topics(self, topic: str, timeout: float) -> None:
        return None

    def incremental_assign(self, partitions: list[Any]) -> None:
        self.assigned.update((tp.topic, tp.partition) for tp in partitions)

    def incremental_unassign(self, partitions: list[Any]) -> None:
        self.assigned.difference_update((tp.topic, tp.partition) for tp in partitions)

    def pause(self, partitions: list[Any]) -> None:
        self.paused.update((tp.topic, tp.partition) for tp in partitions)

    def resume(self, partitions: list[Any]) -> None:
        self.paused.difference_update((tp.topic, tp.partition) for tp in partitions)

    def close(self) -> None:
        self.closed = True


@pytest.fixture()
def fake_consumer(monkeypatch: pytest.MonkeyPatch) -> type[FakeConsumer]:
    FakeConsumer.made = []
    monkeypatch.setattr(kafka, "Consumer", FakeConsumer)
    return FakeConsumer


def open_reader(clock: FakeClock, batch_size: int = 100, max_wait_ms: float = 250, **kafka_fields: Any) -> KafkaPartitionReader:
    settings = KafkaSettings(bootstrap_servers="127.0.0.1:1", **kafka_fields)
    return KafkaReader(settings, ["crm.clickstream"], batch_size, max_wait_ms, clock).open("crm.clickstream#0", 0)


def test_one_consumer_reads_every_partition_and_keeps_each_ones_records_for_it(fake_consumer: type[FakeConsumer]) -> None:
    clock = FakeClock()
    reader = KafkaReader(KafkaSettings(bootstrap_servers="127.0.0.1:1"), ["crm.clickstream"], 100, 250, clock)
    first, second = reader.open("crm.clickstream#0", 0), reader.open("crm.clickstream#1", 0)
    [consumer] = fake_consumer.made  # one consumer, both partitions assigned to it
    assert consumer.assigned == {("crm.clickstream", 0), ("crm.clickstream", 1)}

    consumer.arrive(100, partition=0)
    consumer.arrive(100, partition=1)
    assert [(r.partition, r.offset) for r in first.read_batch()] == [(0, i) for i in range(100)]
    # Partition 1's records came in the same fetch: kept for its own reader, in order.
    assert [(r.partition, r.offset) for r in second.read_batch()] == [(1, i) for i in range(100)]

    first.close()
    assert consumer.assigned == {("crm.clickstream", 1)} and not consumer.closed
    second.close()
    assert consumer.closed  # with the last partition


def test_a_partition_whose_reader_is_behind_stops_fetching_until_it_catches_up(fake_consumer: type[FakeConsumer]) -> None:
    clock = FakeClock()
    reader = KafkaReader(KafkaSettings(bootstrap_servers="127.0.0.1:1"), ["crm.clickstream"], 100, 250, clock)
    busy, idle = reader.open("crm.clickstream#0", 0), reader.open("crm.clickstream#1", 0)
    [consumer] = fake_consumer.made

    consumer.arrive(1000, partition=0)
    assert idle.read_batch() == []  # an idle partition's reads fetch for everyone...
    assert ("crm.clickstream", 0) in consumer.paused  # ...but partition 0 holds two batches now: paused
    taken = []
    while batch := busy.read_batch():
        taken.extend(r.offset for r in batch)
    assert taken == list(range(1000)) and ("crm.clickstream", 0) not in consumer.paused


def test_a_partial_batch_waits_for_the_time_cut_then_goes_whole(fake_consumer: type[FakeConsumer]) -> None:
    clock = FakeClock()
    reader = open_reader(clock, batch_size=100, max_wait_ms=250)
    [consumer] = fake_consumer.made

    consumer.arrive(30)
    assert reader.read_batch() == []  # 30 of 100, first record 0 ms old
    assert reader.position() == 0  # held records are not read yet: a restart here re-reads them
    clock.now += 0.125
    consumer.arrive(20)
    assert reader.read_batch() == []  # 50 records, the first 125 ms old
    clock.now += 0.125
    batch = reader.read_batch()  # the first record has waited 250 ms: cut by time
    assert [r.offset for r in batch] == list(range(50))
    assert reader.position() == 50


def test_a_full_batch_goes_at_once_and_the_rest_starts_a_new_wait(fake_consumer: type[FakeConsumer]) -> None:
    clock = FakeClock()
    reader = open_reader(clock, batch_size=100, max_wait_ms=250)
    [consumer] = fake_consumer.made

    consumer.arrive(250)  # a backlog: cut by size, no waiting
    assert [r.offset for r in reader.read_batch()] == list(range(100))
    assert [r.offset for r in reader.read_batch()] == list(range(100, 200))
    assert reader.read_batch() == []  # the 50 left wait for more or for the time cut, from now
    clock.now += 0.125
    assert reader.read_batch() == []
    clock.now += 0.125
    assert [r.offset for r in reader.read_batch()] == list(range(200, 250))
    assert reader.position() == 250
    assert reader.read_batch() == []


def test_the_wait_counts_from_the_first_record_of_each_batch(fake_consumer: type[FakeConsumer]) -> None:
    clock = FakeClock()
    reader = open_reader(clock, batch_size=100, max_wait_ms=250)
    [consumer] = fake_consumer.made

    clock.now += 5.0  # idle time before a record arrives does not count
    consumer.arrive(1)
    assert reader.read_batch() == []
    clock.now += 0.125
    assert reader.read_batch() == []
    clock.now += 0.125
    assert [r.offset for r in reader.read_batch()] == [0]


def test_the_broker_holds_a_fetch_no_longer_than_the_batch_wait(fake_consumer: type[FakeConsumer]) -> None:
    clock = FakeClock()
    open_reader(clock, max_wait_ms=20)
    assert fake_consumer.made[-1].config["fetch.wait.max.ms"] == 20
    # An operator on a broker that answers a fetch as soon as data arrives may raise it through kafka.extra.
    open_reader(clock, max_wait_ms=20, extra={"fetch.wait.max.ms": 500})
    assert fake_consumer.made[-1].config["fetch.wait.max.ms"] == 500


def test_timed_batch_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="size = 0"):
        TimedBatch(0, 0.02)
    with pytest.raises(ValueError, match="max_wait_s = -1"):
        TimedBatch(10, -1)
    with pytest.raises(ValueError, match="batch_max_wait_ms = 0 must be greater than 0"):
        KafkaReader(KafkaSettings(), ["t"], 10, 0)


def test_setting_is_validated_and_reaches_the_reader() -> None:
    assert config.load(None, env={"CRM_STREAM__ENGINE__BATCH_MAX_WAIT_MS": "50"}).engine.batch_max_wait_ms == 50
    with pytest.raises(ConfigError, match="engine.batch_max_wait_ms = 0 must be greater than 0"):
        config.load(None, env={"CRM_STREAM__ENGINE__BATCH_MAX_WAIT_MS": "0"})
