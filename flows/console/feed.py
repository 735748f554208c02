"""Where the agents' console gets its alerts, and where its feedback goes (no web framework here).

The console reads alerts from an ``AlertRing``: per destination (service
alerts, marketing triggers) the newest ``console.recent_alerts``, deduplicated
on ``alert_id`` (delivery is at least once), each with an arrival number for
paging and for the live stream, and the destination it went to. Two feeds
fill it:

- ``KafkaAlertFeed`` (``crm-stream console``): a thread that follows
  ``kafka.topics.service_alerts``, starting ``console.backlog_alerts`` records
  before the end of each partition. Like the engine's reader it ``assign()``s
  partitions (no group join, which costs seconds on some brokers) and commits
  nothing: every console process sees every alert. Marketing triggers have
  their own tools (marketing automation) and are not followed here.
- ``TeeOutputs`` (``crm-stream run --console``): wraps the running engine's
  outputs and copies each service alert and marketing trigger into the ring
  once it is flushed: the demo has no marketing automation to look at, so its
  console shows the triggers in a section of their own.

Feedback is a contract ``alert_feedback`` event (``feedback_event``), sent by
``KafkaControl`` to ``kafka.topics.control`` in production, or by
``ControlInbox`` straight into the embedded dataflow's input (an extra
``console`` partition of its reader).
"""

from __future__ import annotations

import collections
import hashlib
import heapq
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from crm_stream.config.settings import KafkaSettings
from crm_stream.errors import UnavailableError
from crm_stream.operators.events.timeutil import parse_ts, to_rfc3339
from crm_stream.operators.io import jsonutil
from crm_stream.operators.io.interface import MARKETING, SERVICE, Outputs, PartitionReader, Raw, Reader

log = logging.getLogger(__name__)

PRIORITIES = ("urgent", "high", "medium", "low")
DESTINATIONS = (SERVICE, MARKETING)
Entry = dict[str, Any]
"""An alert as the console shows it: the contract fields plus ``seq`` (arrival number, newest highest) and
``destination`` (``service`` or ``marketing``)."""


class AlertRing:
    """The newest alerts, thread-safe; listeners hear each new one (the web layer pushes it to browsers).

    Each destination keeps its own newest ``capacity``, so a flood of marketing triggers never pushes the
    service alerts an agent must answer out of the console.
    """

    def __init__(self, capacity: int = 1000) -> None:
        self.capacity = capacity
        self._kept: dict[str, collections.OrderedDict[str, Entry]] = {d: collections.OrderedDict() for d in DESTINATIONS}
        self._where: dict[str, str] = {}  # alert_id -> its destination
        self._seq = 0
        self._lock = threading.Lock()
        self._listeners: list[Callable[[Entry], None]] = []
        self._forget_listeners: list[Callable[[str], None]] = []
        self.newest_ts = 0
        """Newest alert event time seen (epoch ms): the embedded demo's "now" for feedback events."""

    def add(self, alert: dict[str, Any], destination: str = SERVICE) -> Entry | None:
        """Keep ``alert``; None (and nothing heard) if it has no ``alert_id`` or is already kept."""
        alert_id = alert.get("alert_id")
        if not isinstance(alert_id, str) or not isinstance(alert.get("customer_id"), str):
            return None
        if destination not in self._kept:
            raise ValueError(f"destination {destination!r} must be one of {DESTINATIONS}")
        with self._lock:
            if alert_id in self._where:
                return None
            self._seq += 1
            entry = {**alert, "seq": self._seq, "destination": destination}
            kept = self._kept[destination]
            kept[alert_id] = entry
            self._where[alert_id] = destination
            while len(kept) > self.capacity:
                del self._where[kept.popitem(last=False)[0]]
            try:
                self.newest_ts = max(self.newest_ts, parse_ts(alert.get("ts")))
            except Exception:  # a malformed ts must not stop the feed; the alert still shows
                pass
        for listener in list(self._listeners):
            listener(entry)
        return entry

    def get(self, alert_id: str) -> Entry | None:
        with self._lock:
            destination = self._where.get(alert_id)
            return None if destination is None else self._kept[destination].get(alert_id)

    def forget(self, customer_id: str) -> int:
        """Erasure (a tombstone on the alert topic): drop the customer's alerts, so no agent sees or labels them again."""
        gone = 0
        with self._lock:
            for kept in self._kept.values():
                ids = [a for a, e in kept.items() if e.get("customer_id") == customer_id]
                for alert_id in ids:
                    del kept[alert_id]
                    del self._where[alert_id]
                gone += len(ids)
        for listener in list(self._forget_listeners):  # open pages drop them too
            listener(customer_id)
        return gone

    def on_forget(self, listener: Callable[[str], None]) -> None:
        """Hear every erased customer id (the web layer tells open pages to drop their alerts)."""
        self._forget_listeners.append(listener)

    def page(
        self,
        *,
        before: int | None = None,
        limit: int = 50,
        priority: str | None = None,
        kind: str | None = None,
        customer_id: str | None = None,
        destination: str | None = None,
    ) -> tuple[list[Entry], int | None]:
        """Newest first, optionally only those with ``seq < before`` (and of one ``destination``; None: all);
        returns (entries, ``before`` for the next page)."""
        out: list[Entry] = []
        with self._lock:
            rings = [self._kept[destination]] if destination is not None else list(self._kept.values())
            newest_first = heapq.merge(*(reversed(r.values()) for r in rings), key=lambda e: -e["seq"])
            for entry in newest_first:
                if before is not None and entry["seq"] >= before:
                    continue
                if (
                    priority
                    and entry.get("priority") != priority
                    or kind
                    and entry.get("kind") != kind
                    or customer_id
                    and entry.get("customer_id") != customer_id
                ):
                    continue
                if len(out) == limit:
                    return out, out[-1]["seq"]
                out.append(entry)
        return out, None

    def kinds(self, destination: str | None = None) -> list[str]:
        with self._lock:
            rings = [self._kept[destination]] if destination is not None else list(self._kept.values())
            return sorted({str(e.get("kind")) for r in rings for e in r.values()})

    def listen(self, listener: Callable[[Entry], None]) -> Callable[[], None]:
        """Hear every new entry; returns the function that stops it."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None


def feedback_event(alert: dict[str, Any], label: str, agent: str, at_ms: int) -> dict[str, Any]:
    """The contract's ``alert_feedback`` for ``alert``; the id is a hash of what was said, by whom, when (a double
    submit in the same millisecond is one event to the engine's dedup)."""
    if label not in ("correct", "incorrect"):
        raise ValueError(f"label {label!r} must be 'correct' or 'incorrect'")
    digest = hashlib.sha256(f"{alert['alert_id']}|{label}|{agent}|{at_ms}".encode()).hexdigest()[:24]
    return {
        "event_id": f"fb-{digest}",
        "type": "alert_feedback",
        "customer_id": alert["customer_id"],
        "ts": to_rfc3339(at_ms),
        "source": "console",
        "alert_id": alert["alert_id"],
        "label": label,
        "agent_id": agent,
    }


# ----------------------------------------------------------------------------- embedded (in-process)


class TeeOutputs:
    """The engine's outputs, unchanged, plus a copy of each service alert and marketing trigger into the ring
    once flushed (durable)."""

    def __init__(self, inner: Outputs, ring: AlertRing) -> None:
        self.inner = inner
        self.ring = ring
        self._pending: list[tuple[str, str | None, bytes | None]] = []

    def send(self, destination: str, key: str | None, value: bytes | None) -> None:
        self.inner.send(destination, key, value)
        if destination in DESTINATIONS:
            self._pending.append((destination, key, value))

    def flush(self) -> None:
        self.inner.flush()
        pending, self._pending = self._pending, []
        erased: set[str] = set()
        for destination, key, value in pending:  # durable now: show it
            if value is None:  # an erasure's tombstone (one on each alert topic: forget the customer once)
                if key is not None and key not in erased:
                    erased.add(key)
                    self.ring.forget(key)
                continue
            try:
                self.ring.add(jsonutil.loads(value), destination)
            except Exception:
                log.warning("console: an alert the engine sent is not JSON; not shown")

    def close(self) -> None:
        self.inner.close()


class ControlInbox:
    """Feedback for the embedded dataflow: events queued here enter it through ``InboxReader``'s extra partition."""

    TOPIC = "control"  # the role name the simulator uses for control events

    def __init__(self) -> None:
        self._queue: collections.deque[bytes] = collections.deque()
        self.closed = False
        """Set when the dataflow's other input has ended: feedback can no longer reach it."""

    def send(self, event: dict[str, Any]) -> None:
        if self.closed:
            raise FeedbackUnavailable(
                "the demo's dataflow has ended, so feedback can no longer reach it: start `crm-stream run --console` again"
            )
        self._queue.append(jsonutil.dumps(event))

    def drain(self) -> list[bytes]:
        out = []
        while self._queue:
            out.append(self._queue.popleft())
        return out


class FeedbackUnavailable(UnavailableError, RuntimeError):
    """Feedback could not be handed on (broker down, demo ended); the message says what to do."""


class InboxReader:
    """A ``Reader`` with one more partition, ``console``, that carries the inbox's events; the rest is ``inner``'s.

    The console partition ends when every partition of ``inner`` has ended, so a bounded demo still ends.
    """

    PARTITION = "console"

    def __init__(self, inner: Reader, inbox: ControlInbox) -> None:
        self.inner = inner
        self.inbox = inbox
        self._open: dict[str, bool] = {}

    def partitions(self) -> list[str]:
        parts = list(self.inner.partitions())
        self._open = dict.fromkeys(parts, True)
        return parts + [self.PARTITION]

    def open(self, partition: str, position: Any | None) -> PartitionReader:
        if partition == self.PARTITION:
            return _InboxPartition(self, int(position or 0))
        return _TrackedPartition(self, partition, self.inner.open(partition, position))

    def inner_done(self) -> bool:
        return bool(self._open) and not any(self._open.values())


class _TrackedPartition:
    def __init__(self, owner: InboxReader, name: str, part: PartitionReader) -> None:
        self.owner, self.name, self.part = owner, name, part

    def read_batch(self) -> list[Raw]:
        return self.part.read_batch()

    def position(self) -> Any:
        return self.part.position()

    def done(self) -> bool:
        done = self.part.done()
        if done:
            self.owner._open[self.name] = False
        return done

    def close(self) -> None:
        self.part.close()


class _InboxPartition:
    def __init__(self, owner: InboxReader, offset: int) -> None:
        self.owner = owner
        self.offset = offset

    def read_batch(self) -> list[Raw]:
        batch = []
        for value in self.owner.inbox.drain():
            batch.append(Raw(ControlInbox.TOPIC, 1, self.offset, value))  # partition 1: its own event-time clock
            self.offset += 1
        return batch

    def position(self) -> int:
        return self.offset

    def done(self) -> bool:
        if self.owner.inner_done():
            self.owner.inbox.closed = True
            return True
        return False

    def close(self) -> None:
        pass


# ----------------------------------------------------------------------------- production (Kafka)


class KafkaAlertFeed:
    """Follows the service-alert topic into ``ring`` on a daemon thread until ``close()``."""

    def __init__(self, kafka: KafkaSettings, ring: AlertRing, *, backlog: int = 200, poll_s: float = 0.1) -> None:
        self.kafka = kafka
        self.ring = ring
        self.backlog = backlog
        self.poll_s = poll_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.assigned = threading.Event()
        """Set once the partitions are assigned: alerts produced from then on will be shown."""

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="console-alert-feed", daemon=True)
        self._thread.start()

    def _partitions(self, consumer: Any) -> list[int]:
        from confluent_kafka import KafkaException

        topic = self.kafka.topics.service_alerts
        warned = False
        while not self._stop.is_set():
            try:
                meta = consumer.list_topics(topic, timeout=5.0).topics.get(topic)
                if meta is not None and meta.error is None and meta.partitions:
                    return sorted(meta.partitions)
                problem = f"topic {topic!r} does not exist yet"
            except KafkaException as exc:
                problem = str(exc.args[0])
            if not warned:
                log.warning(
                    "console: waiting for the service-alert topic on %s (%s): start the engine or create the topic; retrying",
                    self.kafka.bootstrap_servers,
                    problem,
                )
                warned = True
            self._stop.wait(2.0)
        return []

    def _run(self) -> None:
        from confluent_kafka import OFFSET_END, Consumer, TopicPartition

        from crm_stream.operators.io.kafka import _config

        topic = self.kafka.topics.service_alerts
        consumer = Consumer(
            _config(
                self.kafka,
                {"fetch.wait.max.ms": 100, "enable.auto.commit": False, "auto.offset.reset": "latest"},
                **{"group.id": f"{self.kafka.group_id}.console", "enable.partition.eof": False},
            )
        )
        try:
            partitions = self._partitions(consumer)
            starts = []
            for p in partitions:
                low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=5.0)
                starts.append(TopicPartition(topic, p, max(low, high - self.backlog) if self.backlog else OFFSET_END))
            consumer.assign(starts)
            self.assigned.set()
            log.info("console: following %s (%d partitions) on %s", topic, len(partitions), self.kafka.bootstrap_servers)
            while not self._stop.is_set():
                for message in consumer.consume(500, self.poll_s):
                    if message.error() is not None:
                        continue  # transient (broker restarting, ...): librdkafka retries by itself
                    value, key = message.value(), message.key()
                    if value is None:  # an erasure's tombstone (key: the customer id)
                        if key:
                            self.ring.forget(key.decode("utf-8", "replace"))
                        continue
                    try:
                        self.ring.add(jsonutil.loads(value))
                    except Exception:
                        log.warning(
                            "console: %s[%d]@%d is not a JSON alert; skipped", topic, message.partition(), message.offset()
                        )
        except Exception:
            log.exception("console: the alert feed from %s stopped; restart the console", self.kafka.bootstrap_servers)
        finally:
            consumer.close()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)


class KafkaControl:
    """Sends feedback events to ``kafka.topics.control`` (key: the customer id, as the contract says)."""

    def __init__(self, kafka: KafkaSettings, timeout_s: float = 10.0) -> None:
        from confluent_kafka import Producer

        from crm_stream.operators.io.kafka import _config

        self.kafka = kafka
        self.timeout_s = timeout_s
        self._producer = Producer(_config(kafka, {"enable.idempotence": True, "acks": "all", "linger.ms": 0}))
        self._lock = threading.Lock()

    def send(self, event: dict[str, Any]) -> None:
        failures: list[Any] = []
        with self._lock:
            self._producer.produce(
                self.kafka.topics.control,
                jsonutil.dumps(event),
                event["customer_id"],
                on_delivery=lambda err, msg: failures.append(err) if err else None,
            )
            remaining = self._producer.flush(self.timeout_s)
        if failures or remaining:
            raise FeedbackUnavailable(
                f"Kafka at {self.kafka.bootstrap_servers} did not take the feedback on "
                f"{self.kafka.topics.control!r} ({failures[0] if failures else 'timed out'}): try again"
            )

    def close(self) -> None:
        self._producer.flush(5.0)


def wall_clock_ms() -> int:
    return int(time.time() * 1000)
