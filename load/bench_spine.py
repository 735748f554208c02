"""The spine benchmark: how fast one engine process turns Kafka events into Redis profiles, against its limits.

    python -m load.bench_spine                 # 2,000,000 events over 1,000,000 customers (~5-10 min)
    python -m load.bench_spine --quick         # 300,000 events (~2 min)
    python -m load.bench_spine --profile 20    # also sample the engine with py-spy for 20 s

Everything runs in one go, against a redis-server and a Tansu broker that it
starts on 127.0.0.1 on free ports and stops at the end; nothing else is
touched. Bounded: a fixed number of events, and every phase has a time limit.

What it measures, in this order:

1. **generator**: ``load.generator`` events/s (it must not be the bottleneck),
   after checking that the first 1000 events decode cleanly.
2. **produce**: N events to the 4 input topics (4 partitions each) with
   ``operators.io.interface.kafka.produce_records``; the engine then reads a backlog.
3. **bare stack**: a confluent-kafka consumer per partition (assign, as
   ``KafkaReader`` does) + ``orjson.loads`` of every value: the ceiling any
   Python engine on this stack has. Timed from the first record.
4. **naive per-event Redis**: what one writes without this engine: per event,
   GET the customer's JSON profile, bump a few counters, SET it back (two
   round trips). Bounded to a prefix of the events (default 30 k or 20 s).
5. **engine Kafka + Redis**: ``crm-stream run`` (Kafka source, Redis store,
   Kafka sink, recovery on, one worker process) as a child process, timed
   until the sum of ``applied`` in the ``crm:shard:{n}`` blobs reaches N
   (every generated event is valid, unique and carries a customer id, so all
   N are applied). Reported from the first moment ``applied`` > 0 (the rate)
   and from the process start (start-up included). Peak RSS (VmHWM) and
   Redis ``used_memory`` are divided by the distinct customers touched.
6. **latency**: then, with the engine still running, a paced load (default
   10,000 events/s for 15 s) plus a probe every 10 ms: a purchase for a
   new customer id, timed from just before ``produce()`` until a poller
   (MGET every 5 ms) sees ``crm:profile:<id>``. An upper bound: it includes
   the producer's 5 ms linger and up to one poll interval. The broker's
   share is measured alongside: when each probe becomes consumable by a
   reader laid out like the engine's. "Stalls" are stretches of >= 0.3 s in
   which ``applied`` did not move, with the engine's CPU use during each:
   near 100% means it was busy (GC, a big batch), low means it waited
   (for Kafka, Redis, or a CPU taken by another process).
7. **engine embedded**: ``crm-stream replay`` (``flows.runtime.replay``) of
   the same N events from a JSON-lines file, no Kafka, no Redis; the
   dataflow's rate, and the total with writing the profile file.

How to read it: absolute rates on a shared 2-core VM drift run to run (and
Tansu, Redis and the engine share those 2 cores during phase 5), so read the
ratios: engine / bare stack says how much of the stack's ceiling the engine
keeps; engine / naive says what batching buys over the obvious design. CPU
columns say who was busy: ~100% for the engine means it is CPU-bound in
Python. The last column splits the machine's busy cores into this run's
processes and everything else: when "other tenants" is well above zero,
another workload took CPU from that phase and its figure is low (a warning
is printed). ``--engine-env CRM_STREAM__...=...`` runs the same benchmark
with a setting changed, for A/B experiments. The JSON file (``load/results/spine-<date>[-quick].json``) has every
figure, the exact command and the machine; a py-spy profile, when asked
for, lands next to it as ``*-pyspy.txt.tmp`` (not committed).
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import math
import os
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import redis
from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, Producer, TopicPartition

from crm_stream.config.settings import KafkaSettings
from crm_stream.operators.events.schema import DeadLetter, Decoder, Origin
from crm_stream.operators.io.kafka import _CONSUMER_DEFAULTS, ensure_topics, produce_records
from load.generator import EventGenerator
from load.outputs import results_dir, write_results
from load.proc import CpuShare, cpu_seconds, machine, memory_kib, thread_cpu_seconds

ROOT = Path(__file__).resolve().parents[1]
RESULTS = results_dir()  # not the source tree: --out load/results/... keeps a result with the project
TARGET_EVENTS_PER_S = 50_000  # the target: one worker process, a million distinct customers
PARTITIONS = 4
KEY_PREFIX = "crm"


class BenchError(RuntimeError):
    """A phase could not produce a figure (a server or the engine failed); the message says which and why."""


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- phases


def check_generator(customers: int, seed: int, distribution: str, settings: Any) -> None:
    """Abort unless the generator's first 1000 events all pass the engine's decoder."""
    decoder = Decoder(settings.currency_rates, settings.engine.base_currency, settings.kafka.max_message_bytes)
    sample = EventGenerator(customers, seed=seed, distribution=distribution).batch(1000)
    for i, (role, _key, value) in enumerate(sample):
        event = decoder.decode(value, Origin(role, 0, i))
        if isinstance(event, DeadLetter):
            raise BenchError(f"generator self-check: event {i} would be dead-lettered: {event.reason}; fix load/generator.py")


def generate(gen: EventGenerator, n: int, events_path: Path) -> tuple[list[tuple[str, str, bytes]], dict[str, Any]]:
    """All N records in memory (timed alone), then written as JSON lines for the replay phase."""
    records: list[tuple[str, str, bytes]] = []
    gc.disable()  # millions of tuples: the cyclic GC would re-walk them all, timing the collector instead of the generator
    try:
        started = time.perf_counter()
        while len(records) < n:
            records.extend(gen.batch(min(50_000, n - len(records))))
        elapsed = time.perf_counter() - started
    finally:
        gc.enable()
    with open(events_path, "wb") as fh:
        for start in range(0, n, 100_000):
            fh.write(b"\n".join(value for _, _, value in records[start : start + 100_000]) + b"\n")
    sizes = [len(v) for _, _, v in records[:: max(1, n // 100_000)]]
    return records, {
        "events": n,
        "seconds": elapsed,
        "events_per_s": n / elapsed,
        "mean_event_bytes": round(statistics.fmean(sizes), 1),
        "distinct_customers": gen.distinct_customers,
        "type_mix": {k: round(v / n, 4) for k, v in sorted(gen.type_counts().items(), key=lambda kv: -kv[1])},
    }


def produce(kafka: KafkaSettings, records: list[tuple[str, str, bytes]]) -> dict[str, Any]:
    topics = kafka.topics
    topic_of = {role: getattr(topics, role) for role in ("clickstream", "purchases", "support", "control")}
    started = time.perf_counter()
    count = produce_records(kafka, ((topic_of[role], key, value) for role, key, value in records), timeout_s=300.0)
    elapsed = time.perf_counter() - started
    per_topic = Counter(role for role, _, _ in records)
    return {"events": count, "seconds": elapsed, "events_per_s": count / elapsed, "per_topic": dict(per_topic)}


def _partition_consumers(kafka: KafkaSettings, group: str, start: int = OFFSET_BEGINNING) -> list[Consumer]:
    """One consumer per input partition, assigned at ``start`` (default: the beginning): KafkaReader's layout and tuning."""
    consumers = []
    for topic in kafka.topics.inputs():
        for partition in range(PARTITIONS):
            consumer = Consumer({**_CONSUMER_DEFAULTS, "bootstrap.servers": kafka.bootstrap_servers, "group.id": group})
            consumer.list_topics(topic, timeout=10.0)
            consumer.assign([TopicPartition(topic, partition, start)])
            consumers.append(consumer)
    return consumers


def bare_stack(kafka: KafkaSettings, expected: int, timeout_s: float, others: dict[str, int]) -> dict[str, Any]:
    """Consume every input partition and orjson.loads each value: the ceiling."""
    consumers = _partition_consumers(kafka, f"bench-bare-{uuid.uuid4().hex[:8]}")
    loads = orjson.loads
    count, first, started = 0, None, time.perf_counter()
    cpu_before = time.process_time()
    share = CpuShare({"bench": os.getpid(), **others})
    try:
        while count < expected:
            got = 0
            for consumer in consumers:
                messages = consumer.consume(1000, 0)
                for m in messages:
                    if m.error() is None:
                        loads(m.value())
                        got += 1
            if got and first is None:
                first = time.perf_counter()
            count += got
            if not got:
                if time.perf_counter() - started > timeout_s:
                    raise BenchError(f"bare stack: only {count} of {expected} records arrived within {timeout_s:.0f}s")
                time.sleep(0.001)
        elapsed = time.perf_counter() - (first or started)
    finally:
        for consumer in consumers:
            consumer.close()
    return {
        "events": count,
        "seconds": elapsed,
        "events_per_s": count / elapsed,
        "cpu_s": time.process_time() - cpu_before,
        "cpu_cores": share.stop(),
    }


def naive_loop(
    kafka: KafkaSettings, redis_url: str, max_events: int, max_seconds: float, others: dict[str, int]
) -> dict[str, Any]:
    """Per event: GET the profile blob, update counters, SET it back. Redis db 1, flushed afterwards."""
    client = redis.Redis.from_url(redis_url.rsplit("/", 1)[0] + "/1")
    consumers = _partition_consumers(kafka, f"bench-naive-{uuid.uuid4().hex[:8]}")
    loads, dumps = orjson.loads, orjson.dumps
    count, first, started = 0, None, time.perf_counter()
    share = CpuShare({"bench": os.getpid(), **others})
    try:
        while count < max_events:
            now = time.perf_counter()
            if (first is not None and now - first >= max_seconds) or now - started > max_seconds + 30:
                break
            got = False
            for consumer in consumers:
                for m in consumer.consume(100, 0):
                    if m.error() is not None:
                        continue
                    if first is None:
                        first = time.perf_counter()
                    got = True
                    event = loads(m.value())
                    key = f"naive:profile:{event['customer_id']}"
                    blob = client.get(key)
                    profile = (
                        loads(blob) if blob else {"events": 0, "types": {}, "frequency": 0, "monetary": 0.0, "interests": {}}
                    )
                    profile["events"] += 1
                    profile["last_ts"] = event["ts"]
                    profile["types"][event["type"]] = profile["types"].get(event["type"], 0) + 1
                    if event["type"] == "purchase":
                        profile["frequency"] += 1
                        profile["monetary"] += event["amount"]
                    if "category" in event:
                        profile["interests"][event["category"]] = profile["interests"].get(event["category"], 0) + 1
                    client.set(key, dumps(profile))
                    count += 1
                    if count >= max_events:
                        break
                if count >= max_events:
                    break
            if not got:
                time.sleep(0.001)
        elapsed = time.perf_counter() - (first or started)
    finally:
        for consumer in consumers:
            consumer.close()
        client.flushdb()
        client.close()
    if not count:
        raise BenchError("naive loop: no records arrived")
    return {
        "events": count,
        "seconds": elapsed,
        "events_per_s": count / elapsed,
        "round_trips_per_event": 2,
        "cpu_cores": share.stop(),
    }


def topic_counts(kafka: KafkaSettings, topics: list[str]) -> dict[str, int]:
    """Records on each topic so far (sum of the partitions' high watermarks; the topics start empty)."""
    consumer = Consumer({"bootstrap.servers": kafka.bootstrap_servers, "group.id": f"bench-count-{uuid.uuid4().hex[:8]}"})
    try:
        metadata = consumer.list_topics(timeout=10.0).topics
        counts = {}
        for topic in topics:
            partitions = metadata[topic].partitions if topic in metadata else {}
            counts[topic] = sum(consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10.0)[1] for p in partitions)
        return counts
    finally:
        consumer.close()


def applied_total(client: redis.Redis, shards: int = 16) -> int:
    blobs = client.mget([f"{KEY_PREFIX}:shard:{n}" for n in range(shards)])
    return sum(orjson.loads(b).get("applied", 0) for b in blobs if b)


class PySpy:
    """py-spy record of one process, raw (collapsed) stacks; stopped early with SIGINT, which still writes the file."""

    def __init__(self, pid: int, seconds: int, out: Path, *, idle: bool = False) -> None:
        binary = Path(sys.executable).with_name("py-spy")
        self.out = out
        # --idle keeps samples of threads that wait (socket reads, flushes): wall time, not only CPU time.
        self.process = subprocess.Popen(
            [
                str(binary),
                "record",
                "--pid",
                str(pid),
                "-d",
                str(seconds),
                "-r",
                "100",
                "-f",
                "raw",
                "--nonblocking",
                "-o",
                str(out),
            ]
            + (["--idle"] if idle else []),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.started = time.perf_counter()

    def stop(self) -> dict[str, Any]:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:
            _, err = self.process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            _, err = self.process.communicate()
        if not self.out.exists():
            return {"error": f"py-spy wrote no profile: {err.decode(errors='replace')[-500:]}"}
        return summarise_profile(self.out) | {"seconds": round(time.perf_counter() - self.started, 1), "raw": str(self.out)}


def summarise_profile(path: Path, top: int = 20) -> dict[str, Any]:
    """Self time (leaf frame) and inclusive time per function, from py-spy's raw collapsed stacks."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_frame(f) for f in stack.split(";") if f and not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    as_share = lambda counter: [(name, round(100 * c / max(total, 1), 1)) for name, c in counter.most_common(top)]
    return {"samples": total, "self_pct": as_share(own), "inclusive_pct": as_share(inclusive)}


def _frame(text: str) -> str:
    """``func (path/to/file.py:123)`` -> ``func (file.py)``: lines would split one function's time."""
    name, _, where = text.partition(" (")
    where = where.rstrip(")").rsplit(":", 1)[0]
    parts = Path(where).parts
    return f"{name} ({'/'.join(parts[-2:]) if parts else where})"


def engine_phase(
    env: dict[str, str],
    log_path: Path,
    client: redis.Redis,
    expected: int,
    timeout_s: float,
    others: dict[str, int],
    profile_s: int,
    profile_out: Path,
) -> tuple[Any, dict[str, Any]]:
    """Start the engine and time it until ``applied`` reaches ``expected``; returns the still-running engine."""
    from tests.integration.engine_process import Engine

    engine = Engine(env, log_path)
    started = time.perf_counter()
    engine.start()
    pid = engine.proc.pid
    first_t: float | None = None
    first_applied = 0
    rss_at_first = 0
    cpu_first: dict[str, float] = {}
    share: CpuShare | None = None
    threads_first: dict[str, float] = {}
    spy: PySpy | None = None
    timeline: list[tuple[float, int, int]] = []
    applied, timed_out = 0, False
    while True:
        if engine.proc.poll() is not None:
            raise BenchError(
                f"the engine exited with {engine.proc.returncode} after {time.perf_counter() - started:.1f}s: {engine.log_tail()}"
            )
        applied = applied_total(client)
        now = time.perf_counter()
        if first_t is None and applied > 0:
            first_t, first_applied = now, applied
            rss_at_first = memory_kib(pid).get("VmRSS", 0)
            cpu_first = {"engine": cpu_seconds(pid), **{name: cpu_seconds(p) for name, p in others.items()}}
            share = CpuShare({"engine": pid, "bench": os.getpid(), **others})
            threads_first = thread_cpu_seconds(pid)
        if spy is None and profile_s and first_t is not None and now - first_t >= 2.0:
            spy = PySpy(pid, profile_s, profile_out)
        if not timeline or now - timeline[-1][0] - started >= 1.0 or applied >= expected:
            timeline.append((now - started, applied, memory_kib(pid).get("VmRSS", 0)))
        if applied >= expected:
            break
        if now - started > timeout_s:
            timed_out = True
            break
        time.sleep(0.1)
    end = time.perf_counter()
    cpu_end = {"engine": cpu_seconds(pid), **{name: cpu_seconds(p) for name, p in others.items()}}
    threads_end = thread_cpu_seconds(pid)
    span = max(end - (first_t or end), 1e-9)
    # Which engine threads burn the CPU: the Python/Bytewax worker (the main thread) or librdkafka's own.
    threads = {name: round(100 * (seconds - threads_first.get(name, 0.0)) / span, 1) for name, seconds in threads_end.items()}
    memory = memory_kib(pid)
    result: dict[str, Any] = {
        "expected": expected,
        "applied": applied,
        "timed_out": timed_out,
        "startup_s": round((first_t or end) - started, 2),
        "seconds_after_first_applied": round(end - (first_t or end), 2),
        "seconds_including_startup": round(end - started, 2),
        "events_per_s": (applied - first_applied) / (end - first_t) if first_t and end > first_t else 0.0,
        "events_per_s_including_startup": applied / (end - started),
        "peak_rss_kib": memory.get("VmHWM", 0),
        "rss_kib_end": memory.get("VmRSS", 0),
        "rss_kib_at_first_applied": rss_at_first,
        "cpu_pct_of_one_core": {
            name: round(100 * (cpu_end[name] - cpu_first.get(name, 0.0)) / max(end - (first_t or end), 1e-9), 1)
            for name in cpu_end
        },
        "cpu_cores": share.stop() if share else {},
        "engine_threads_pct_of_one_core": dict(sorted(threads.items(), key=lambda kv: -kv[1])),
        "timeline_s_applied_rss_kib": [(round(t, 1), a, r) for t, a, r in timeline],
    }
    if spy is not None:
        result["profile"] = spy.stop()
    return engine, result


def latency_phase(
    kafka: KafkaSettings,
    client: redis.Redis,
    gen: EventGenerator,
    engine_pid: int,
    applied_before: int,
    rate: float,
    seconds: float,
    others: dict[str, int],
    profile_out: Path | None = None,
    probe_every_s: float = 0.010,
    poll_every_s: float = 0.005,
    drain_s: float = 20.0,
) -> dict[str, Any]:
    """Paced load into the running engine, with timed probes: produce -> profile visible in Redis."""
    topics = kafka.topics
    topic_of = {role: getattr(topics, role) for role in ("clickstream", "purchases", "support", "control")}
    # A typical low-latency tracker/producer: small linger, lz4, acks from all replicas.
    producer = Producer(
        {
            "bootstrap.servers": kafka.bootstrap_servers,
            "linger.ms": 5,
            "acks": "all",
            "compression.type": "lz4",
            "enable.idempotence": False,
        }
    )
    run_id = uuid.uuid4().hex[:6]
    pending: dict[str, float] = {}
    latencies: list[float] = []
    lock = threading.Lock()
    stop = threading.Event()
    poller_errors: list[str] = []
    # Every ~100 ms: (seconds, applied, engine CPU seconds): stalls show as flat stretches, and whether the
    # engine was busy (GC, compute) or idle (waiting on Kafka or Redis) during them.
    timeline: list[tuple[float, int, float]] = []

    def poll_profiles() -> None:
        reader = redis.Redis.from_url(_url_of(client))
        next_sample = 0.0
        try:
            while not stop.is_set():
                now = time.perf_counter()
                if now >= next_sample:
                    timeline.append((now, applied_total(reader), cpu_seconds(engine_pid)))
                    next_sample = now + 0.1
                with lock:
                    keys = list(pending)
                if keys:
                    values = reader.mget(keys)
                    seen = time.perf_counter()
                    with lock:
                        for key, value in zip(keys, values):
                            if value is not None:
                                latencies.append(seen - pending.pop(key))
                time.sleep(poll_every_s)
        except redis.RedisError as exc:
            poller_errors.append(str(exc))
        finally:
            reader.close()

    # The broker's share of the latency: when each probe can be consumed from Kafka, read the way the engine reads
    # (one assign()ed consumer per partition, KafkaReader's settings, 20 ms back-off when all are empty).
    in_kafka: list[float] = []
    consumers = _partition_consumers(kafka, f"bench-latency-{run_id}", OFFSET_END)
    time.sleep(1.0)  # let every consumer resolve OFFSET_END before the first probe

    def consume_probes() -> None:
        while not stop.is_set():
            got = 0
            for consumer in consumers:
                messages = consumer.consume(1000, 0)
                got += len(messages)
                now = time.perf_counter()
                for m in messages:
                    key = m.key()
                    if key and key.startswith(b"probe-"):
                        produced = probe_sent.get(key.decode())
                        if produced is not None:
                            in_kafka.append(now - produced)
            if not got:
                time.sleep(0.02)

    probe_sent: dict[str, float] = {}
    poller = threading.Thread(target=poll_profiles, name="probe-poller", daemon=True)
    poller.start()
    kafka_reader = threading.Thread(target=consume_probes, name="probe-kafka", daemon=True)
    kafka_reader.start()
    cpu_before = {"engine": cpu_seconds(engine_pid), **{name: cpu_seconds(p) for name, p in others.items()}}
    share = CpuShare({"engine": engine_pid, "bench": os.getpid(), **others})
    spy = PySpy(engine_pid, int(seconds) + 5, profile_out, idle=True) if profile_out else None
    sent = probes = 0
    started = time.perf_counter()
    next_probe = started
    while True:
        now = time.perf_counter()
        elapsed = now - started
        if elapsed >= seconds:
            break
        due = int(elapsed * rate) - sent
        if due > 0:
            for role, key, value in gen.batch(due):
                _produce(producer, topic_of[role], value, key)
            sent += due
        if now >= next_probe:
            customer = f"probe-{run_id}-{probes}"
            role, key, value = gen.purchase_for(customer)
            with lock:
                pending[f"{KEY_PREFIX}:profile:{customer}"] = probe_sent[customer] = time.perf_counter()
            _produce(producer, topic_of[role], value, key)
            probes += 1
            next_probe += probe_every_s
        producer.poll(0)
        time.sleep(0.001)
    paced_s = time.perf_counter() - started
    cpu_cores = share.stop()
    profile = spy.stop() if spy else None
    cpu_after = {"engine": cpu_seconds(engine_pid), **{name: cpu_seconds(p) for name, p in others.items()}}
    producer.flush(30)
    expected = applied_before + sent + probes
    deadline = time.perf_counter() + drain_s
    while time.perf_counter() < deadline:
        with lock:
            left = len(pending)
        if not left and applied_total(client) >= expected:
            break
        time.sleep(0.05)
    stop.set()
    poller.join(5)
    kafka_reader.join(5)
    for consumer in consumers:
        consumer.close()
    kms = sorted(1000 * x for x in in_kafka)
    applied = applied_total(client)
    with lock:
        missing = len(pending)
    ms = sorted(1000 * x for x in latencies)
    stalls = _stalls(timeline)
    return {
        "rate_target": rate,
        "seconds": round(paced_s, 2),
        "events": sent,
        "achieved_rate": round(sent / paced_s),
        "probes": probes,
        "probes_seen": len(ms),
        "probes_missing": missing,
        "latency_ms": {
            "p50": _pct(ms, 50),
            "p95": _pct(ms, 95),
            "p99": _pct(ms, 99),
            "max": round(ms[-1], 1) if ms else None,
            "mean": round(statistics.fmean(ms), 1) if ms else None,
        },
        "produce_to_consumable_ms": {
            "p50": _pct(kms, 50),
            "p95": _pct(kms, 95),
            "p99": _pct(kms, 99),
            "max": round(kms[-1], 1) if kms else None,
            "probes_seen": len(kms),
        },
        "kept_up": applied >= expected,
        "applied_after": applied,
        "expected_after": expected,
        "cpu_pct_of_one_core": {name: round(100 * (cpu_after[name] - cpu_before[name]) / paced_s, 1) for name in cpu_after},
        "cpu_cores": cpu_cores,
        "stalls": stalls,
        **({"profile_wall_time": profile} if profile else {}),
        "timeline_s_applied_engine_cpu_s": [(round(t - started, 2), a, round(c, 2)) for t, a, c in timeline],
        "poller_errors": poller_errors[:3],
    }


def _stalls(timeline: list[tuple[float, int, float]], min_s: float = 0.3) -> dict[str, Any]:
    """Stretches of at least ``min_s`` in which ``applied`` did not move, with the engine's CPU use during each."""
    found: list[tuple[float, float, float]] = []  # (start, length, engine cores busy)
    i = 0
    while i < len(timeline) - 1:
        j = i
        while j + 1 < len(timeline) and timeline[j + 1][1] == timeline[i][1]:
            j += 1
        if j + 1 < len(timeline):
            j += 1  # the first sample that moved closes the stretch
        length = timeline[j][0] - timeline[i][0]
        if length >= min_s and timeline[j][1] != timeline[i][1]:
            found.append((timeline[i][0] - timeline[0][0], length, (timeline[j][2] - timeline[i][2]) / length))
        i = max(j, i + 1)
    longest = sorted(found, key=lambda f: -f[1])[:5]
    return {
        "count_over_0_3s": len(found),
        "total_s": round(sum(f[1] for f in found), 2),
        "longest": [{"at_s": round(a, 2), "seconds": round(b, 2), "engine_cores_busy": round(c, 2)} for a, b, c in longest],
    }


def _url_of(client: redis.Redis) -> str:
    kw = client.connection_pool.connection_kwargs
    return f"redis://{kw.get('host', '127.0.0.1')}:{kw.get('port', 6379)}/{kw.get('db', 0)}"


def _produce(producer: Producer, topic: str, value: bytes, key: str) -> None:
    while True:
        try:
            producer.produce(topic, value, key)
            return
        except BufferError:
            producer.poll(0.01)


def _pct(sorted_values: list[float], q: float) -> float | None:
    """Nearest-rank percentile."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return round(sorted_values[rank - 1], 1)


def redis_memory(client: redis.Redis) -> dict[str, Any]:
    info = client.info("memory")
    return {"used_memory": info["used_memory"], "used_memory_rss": info.get("used_memory_rss"), "keys": client.dbsize()}


def profile_blob_sizes(client: redis.Redis, sample: int = 2000) -> dict[str, Any]:
    keys: list[bytes] = []
    for key in client.scan_iter(match=f"{KEY_PREFIX}:profile:c*", count=1000):
        keys.append(key)
        if len(keys) >= sample:
            break
    if not keys:
        return {}
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.strlen(key)
        pipe.memory_usage(key)
    values = pipe.execute()
    lengths, usage = values[0::2], [v for v in values[1::2] if v]
    return {
        "sampled": len(keys),
        "mean_blob_bytes": round(statistics.fmean(lengths)),
        "mean_memory_usage_bytes": round(statistics.fmean(usage)) if usage else None,
    }


def replay_phase(events_path: Path, out_dir: Path, expected: int, timeout_s: float) -> dict[str, Any]:
    command = [sys.executable, "-m", "load.replay_timed", str(events_path), str(out_dir)]
    started = time.perf_counter()
    child = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    share = CpuShare({"bench": os.getpid()})
    try:
        stdout, stderr = child.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        child.kill()
        child.communicate()
        raise BenchError(f"replay of {expected} events did not finish within {timeout_s:.0f}s (raise --replay-timeout)") from None
    wall = time.perf_counter() - started
    if child.returncode != 0:
        raise BenchError(f"replay failed ({child.returncode}): {stderr.decode(errors='replace')[-2000:]}")
    result = orjson.loads(stdout.splitlines()[-1])
    result["cpu_cores"] = share.stop(known={"replay": result["cpu_s"]})
    if result["events"] != expected or result["dead"]:
        raise BenchError(f"replay decoded {result['events']} events and rejected {result['dead']}; expected {expected} and 0")
    result["events_per_s"] = result["events"] / result["dataflow_s"]
    result["events_per_s_with_profile_file"] = result["events"] / result["total_s"]
    result["wall_s_process"] = round(wall, 2)
    return result


# ----------------------------------------------------------------------------- report


def _rate(x: float | None) -> str:
    return f"{x:>12,.0f}" if x else f"{'-':>12}"


def _ratio(x: float | None, base: float | None) -> str:
    if not x or not base:
        return f"{'-':>10}"
    r = x / base
    return f"{r:>9.2f}x" if r >= 0.1 else f"{r:>9.4f}x"


def render(results: dict[str, Any]) -> str:
    r = results
    m = r["machine"]
    gen, bare, naive, eng, rep = (
        r.get("generator"),
        r.get("bare_stack"),
        r.get("naive_redis"),
        r.get("engine_kafka_redis"),
        r.get("engine_embedded"),
    )
    lines = [
        "",
        f"crm-stream spine benchmark  {r['started_at']}",
        f"machine: {m['nproc']} cores ({m['cpu_model']}), {m['mem_total_gib']} GiB; Python {r['versions']['python']}, "
        f"bytewax {r['versions']['bytewax']}, confluent-kafka {r['versions']['confluent_kafka']}, {r['versions']['redis_server']}",
        f"command: {r['command']}",
        f"engine code: sha256 {r['code']['sha256'][:12]} over {r['code']['files']} files, newest change {r['code']['newest_change']}",
        f"events: {r['config']['events']:,} to 4 topics x {PARTITIONS} partitions; customers: {r['config']['customers']:,} "
        f"({r['config']['distribution']}), {gen['distinct_customers']:,} distinct in the run; mean event {gen['mean_event_bytes']:.0f} B",
        "",
        f"{'throughput':<44}{'events/s':>12}{'vs bare':>11}{'vs naive':>11}   cores busy: ours / other tenants",
    ]
    bare_rate = bare and bare["events_per_s"]
    naive_rate = naive and naive["events_per_s"]
    rows = [
        ("bare stack (consume + orjson.loads)", bare_rate, bare),
        (f"naive per-event Redis loop ({naive['events']:,} ev)" if naive else "naive per-event Redis loop", naive_rate, naive),
        ("engine Kafka+Redis, 1 process", eng and eng["events_per_s"], eng),
        ("  same, start-up included", eng and eng["events_per_s_including_startup"], None),
        ("engine embedded (replay dataflow)", rep and rep["events_per_s"], rep),
        ("  same, with writing the profile file", rep and rep["events_per_s_with_profile_file"], None),
    ]
    for name, rate, phase in rows:
        cores = (phase or {}).get("cpu_cores") or {}
        busy = (
            f"   {cores['machine_busy_cores'] - cores['other_processes_cores']:.2f} / {cores['other_processes_cores']:.2f}"
            if cores
            else ""
        )
        lines.append(f"{name:<44}{_rate(rate)}{_ratio(rate, bare_rate)}{_ratio(rate, naive_rate)}{busy}")
    lines += [
        f"{'(generator ' + format(gen['events_per_s'], ',.0f') + ' ev/s; produce to Tansu ' + format(r['produce']['events_per_s'], ',.0f') + ' ev/s)':<44}",
    ]
    if eng:
        target = eng["events_per_s"]
        verdict = "MET" if target >= TARGET_EVENTS_PER_S and not eng["timed_out"] else "NOT MET"
        lines += [
            "",
            f"target >= {TARGET_EVENTS_PER_S:,} ev/s on one worker process: {verdict} ({target:,.0f} ev/s = {target / TARGET_EVENTS_PER_S:.0%})"
            + ("  [TIMED OUT before all events were applied]" if eng["timed_out"] else ""),
            f"engine start-up {eng['startup_s']:.1f}s; then {eng['applied']:,} applied in {eng['seconds_after_first_applied']:.1f}s; "
            "CPU (% of one core): " + ", ".join(f"{k} {v:.0f}%" for k, v in eng["cpu_pct_of_one_core"].items()),
            "engine threads (% of one core): "
            + ", ".join(f"{k} {v:.0f}%" for k, v in eng.get("engine_threads_pct_of_one_core", {}).items() if v >= 1),
            "engine outputs: "
            + ", ".join(f"{k.split('.')[-2] if k.count('.') > 1 else k} {v:,}" for k, v in eng.get("outputs", {}).items()),
        ]
    lat = r.get("latency")
    if lat:
        L, K = lat["latency_ms"], lat["produce_to_consumable_ms"]
        lines += [
            "",
            f"latency, produce -> profile visible in Redis, at {lat['achieved_rate']:,} ev/s for {lat['seconds']:.0f}s "
            f"({lat['probes_seen']} probes, {lat['probes_missing']} missing; kept up: {'yes' if lat['kept_up'] else 'NO'}):",
            f"  p50 {L['p50']} ms   p95 {L['p95']} ms   p99 {L['p99']} ms   max {L['max']} ms",
            f"  of which Kafka (produce -> consumable by a reader like the engine's): p50 {K['p50']} ms   p95 {K['p95']} ms   "
            f"p99 {K['p99']} ms   max {K['max']} ms",
            f"  stalls (applied flat >= 0.3 s): {lat['stalls']['count_over_0_3s']}, {lat['stalls']['total_s']} s in all; longest: "
            + ", ".join(
                f"{x['seconds']} s at {x['at_s']} s (engine {x['engine_cores_busy']:.0%} busy)"
                for x in lat["stalls"]["longest"][:3]
            ),
            "  CPU (% of one core): " + ", ".join(f"{k} {v:.0f}%" for k, v in lat["cpu_pct_of_one_core"].items()),
        ]
    mem = r.get("memory")
    if mem:
        lines += [
            "",
            f"memory for {mem['customers']:,} customers: engine peak RSS {mem['engine_peak_rss_mib']:,.0f} MiB = "
            f"{mem['engine_bytes_per_customer']:,.0f} B/customer ({mem['engine_bytes_per_customer_over_baseline']:,.0f} over its start-up RSS); "
            f"Redis used_memory +{mem['redis_used_mib']:,.0f} MiB = {mem['redis_bytes_per_customer']:,.0f} B/customer"
            + (f" (profile blob mean {mem['profile_blob']['mean_blob_bytes']} B)" if mem.get("profile_blob") else ""),
        ]
        if rep:
            lines.append(
                f"replay peak RSS {rep['peak_rss_kib'] / 1024:,.0f} MiB = {rep['peak_rss_kib'] * 1024 / mem['customers']:,.0f} B/customer (in-memory store)"
            )
    for title, prof in (
        ("throughput phase, CPU samples", (eng or {}).get("profile")),
        ("latency phase, wall-time samples (waiting included)", (lat or {}).get("profile_wall_time")),
    ):
        if prof and "self_pct" in prof:
            lines += ["", f"py-spy, engine, {title}: {prof['samples']} samples over {prof['seconds']}s; top self time"]
            lines += [f"  {pct:5.1f}%  {name}" for name, pct in prof["self_pct"][:15]]
            lines += ["top inclusive time"]
            lines += [f"  {pct:5.1f}%  {name}" for name, pct in prof["inclusive_pct"][:15]]
    others = max(
        (
            ((r.get(k) or {}).get("cpu_cores") or {}).get("other_processes_cores", 0.0)
            for k in ("bare_stack", "naive_redis", "engine_kafka_redis", "latency", "engine_embedded")
        ),
        default=0.0,
    )
    if others >= 0.25:
        lines += [
            "",
            f"WARNING: other processes used up to {others:.2f} of the {m['nproc']} cores during a phase (see the last column): "
            "that phase's figures are low; compare ratios within a phase or re-run on a quiet machine",
        ]
    if r.get("errors"):
        lines += ["", "errors:"] + [f"  {e}" for e in r["errors"]]
    lines.append(f"\nresults: {r.get('results_file', '-')}")
    return "\n".join(lines)


def check_engine_env(p: argparse.ArgumentParser, items: list[str]) -> None:
    """``--engine-env`` items must be settings overrides (config/settings.py), nothing else."""
    bad = [item for item in items if "=" not in item or not item.startswith("CRM_STREAM__")]
    if bad:
        p.error(f"--engine-env {bad[0]!r} must look like CRM_STREAM__SECTION__KEY=VALUE")


def run_header(module: str, argv: list[str] | None, started_at: datetime) -> dict[str, Any]:
    """What every results file starts with: when, the exact command, the machine, versions and the engine code."""
    command = " ".join([f"python -m {module}", shlex.join(sys.argv[1:] if argv is None else argv)]).strip()
    return {
        "started_at": started_at.isoformat(timespec="seconds"),
        "command": command,
        "machine": machine(),
        "versions": versions(),
        "code": code_fingerprint(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def code_fingerprint() -> dict[str, Any]:
    """Which engine was measured: a hash of its source (the tree changes between commits, and between runs)."""
    digest = hashlib.sha256()
    files = sorted(
        p for d in ("operators", "flows", "models", "config") for p in (ROOT / d).rglob("*") if p.suffix in (".py", ".toml")
    )
    for path in files:
        digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes() + b"\0")
    newest = max((p.stat().st_mtime for p in files), default=0.0)
    return {
        "sha256": digest.hexdigest(),
        "files": len(files),
        "newest_change": datetime.fromtimestamp(newest, UTC).isoformat(timespec="seconds"),
    }


def versions() -> dict[str, str]:
    from importlib.metadata import version

    import bytewax  # noqa: F401
    import confluent_kafka

    try:
        server = subprocess.run(["redis-server", "--version"], capture_output=True, text=True, timeout=10).stdout.split()
        redis_server = next((w for w in server if w.startswith("v=")), "v=?").replace("v=", "redis-server ")
    except (OSError, subprocess.SubprocessError):
        redis_server = "redis-server ?"
    return {
        "python": sys.version.split()[0],
        "bytewax": version("bytewax"),
        "confluent_kafka": version("confluent-kafka"),
        "librdkafka": confluent_kafka.libversion()[0],
        "redis_py": version("redis"),
        "orjson": version("orjson"),
        "redis_server": redis_server,
    }


# ----------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m load.bench_spine", description=__doc__.split("\n\n")[0])
    p.add_argument("--events", type=int, help="events to produce and process (default 2,000,000; --quick 300,000)")
    p.add_argument("--customers", type=int, default=1_000_000, help="distinct customer ids to draw from (default 1,000,000)")
    p.add_argument("--quick", action="store_true", help="300,000 events, shorter naive and latency phases")
    p.add_argument("--distribution", choices=("uniform", "zipf"), default="uniform", help="how events pick customers")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--naive-events", type=int, help="cap of the naive loop (default 30,000; --quick 10,000)")
    p.add_argument("--naive-seconds", type=float, help="time cap of the naive loop (default 20; --quick 8)")
    p.add_argument("--rate", type=float, default=10_000, help="events/s of the paced latency phase (default 10,000)")
    p.add_argument("--latency-seconds", type=float, help="length of the paced phase (default 15; --quick 8)")
    p.add_argument("--engine-timeout", type=float, help="limit for the engine to apply every event (default 420 s; --quick 150)")
    p.add_argument("--replay-timeout", type=float, help="limit for the replay (default 420 s; --quick 150)")
    p.add_argument(
        "--profile", type=int, default=0, metavar="SECONDS", help="py-spy the engine for this long during the throughput phase"
    )
    p.add_argument(
        "--profile-latency",
        action="store_true",
        help="py-spy the engine (wall time: waiting included) during the paced latency phase",
    )
    p.add_argument("--no-replay", action="store_true", help="skip the embedded replay phase")
    p.add_argument(
        "--engine-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment for the engine, e.g. CRM_STREAM__ENGINE__BATCH_SIZE=5000 (repeatable; for experiments)",
    )
    p.add_argument(
        "--out", help="results file (default ~/.cache/crm-stream/spine-<date>[-quick].json; --out load/results/... to keep one)"
    )
    args = p.parse_args(argv)
    quick = args.quick
    args.events = args.events or (300_000 if quick else 2_000_000)
    args.naive_events = args.naive_events or (10_000 if quick else 30_000)
    args.naive_seconds = args.naive_seconds or (8.0 if quick else 20.0)
    args.latency_seconds = args.latency_seconds or (8.0 if quick else 15.0)
    args.engine_timeout = args.engine_timeout or (150.0 if quick else 420.0)
    args.replay_timeout = args.replay_timeout or (150.0 if quick else 420.0)
    if not 1 <= args.events <= 5_000_000:
        p.error(f"--events {args.events} must be between 1 and 5,000,000 (all events are held in memory while producing)")
    if args.customers <= 0:
        p.error("--customers must be greater than 0")
    check_engine_env(p, args.engine_env)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from crm_stream.config import settings as config
    from load.servers import running_servers
    from tests.integration.conftest import make_kafka_settings
    from tests.integration.engine_process import engine_env

    started_at = datetime.now(UTC)
    suffix = "-quick" if args.quick else ""
    out_path = Path(args.out) if args.out else RESULTS / f"spine-{started_at:%Y-%m-%d}{suffix}.json"
    results: dict[str, Any] = {
        **run_header("load.bench_spine", argv, started_at),
        "config": {
            "events": args.events,
            "customers": args.customers,
            "distribution": args.distribution,
            "seed": args.seed,
            "naive_events": args.naive_events,
            "naive_seconds": args.naive_seconds,
            "rate": args.rate,
            "latency_seconds": args.latency_seconds,
            "partitions_per_topic": PARTITIONS,
            "engine": "crm-stream run: kafka source, redis store, kafka sink, recovery on, epoch 500 ms, 16 shards, batch 1000",
            "engine_env": args.engine_env,
        },
        "errors": [],
    }
    settings = config.load(None, env={})
    work = Path(tempfile.mkdtemp(prefix="crm-bench-"))
    log(f"{results['command']}: work dir {work}")

    try:
        check_generator(args.customers, args.seed, args.distribution, settings)
    except BenchError as exc:
        log(f"aborted: {exc}")
        return 2
    gen = EventGenerator(args.customers, seed=args.seed, distribution=args.distribution)
    events_path = work / "events.jsonl"
    records, results["generator"] = generate(gen, args.events, events_path)
    log(
        f"generated {args.events:,} events at {results['generator']['events_per_s']:,.0f}/s "
        f"({results['generator']['distinct_customers']:,} distinct customers)"
    )

    engine = None
    try:
        with running_servers(str(work)) as (redis_server, broker):
            others = {"redis": redis_server.process.pid, "tansu": broker.process.pid}
            kafka = make_kafka_settings(broker.bootstrap)
            ensure_topics(kafka, partitions=PARTITIONS)
            results["produce"] = produce(kafka, records)
            del records
            gc.collect()
            log(f"produced at {results['produce']['events_per_s']:,.0f}/s")

            results["bare_stack"] = bare_stack(kafka, args.events, 120, others)
            log(f"bare stack {results['bare_stack']['events_per_s']:,.0f}/s")
            results["naive_redis"] = naive_loop(kafka, redis_server.url, args.naive_events, args.naive_seconds, others)
            log(f"naive loop {results['naive_redis']['events_per_s']:,.0f}/s")

            client = redis.Redis.from_url(redis_server.url)
            client.flushdb()
            redis_before = redis_memory(client)
            overrides = {"CRM_STREAM__ENGINE__EPOCH_INTERVAL_MS": "500"}  # production's, not the tests' 200
            overrides.update(item.split("=", 1) for item in args.engine_env)
            env = engine_env(kafka, redis_server.url, work / "recovery", **overrides)
            profile_out = out_path.with_name(out_path.stem + "-pyspy.txt.tmp")
            log("engine: starting crm-stream run (Kafka + Redis)")
            engine, results["engine_kafka_redis"] = engine_phase(
                env, work / "engine.log", client, args.events, args.engine_timeout, others, args.profile, profile_out
            )
            eng = results["engine_kafka_redis"]
            log(
                f"engine {eng['events_per_s']:,.0f}/s after a {eng['startup_s']:.1f}s start-up"
                + (" (TIMED OUT)" if eng["timed_out"] else "")
            )
            redis_after = redis_memory(client)
            t = kafka.topics
            eng["outputs"] = topic_counts(kafka, [t.service_alerts, t.marketing_triggers, t.deadletter])
            customers = results["generator"]["distinct_customers"]
            results["memory"] = {
                "customers": customers,
                "engine_peak_rss_mib": eng["peak_rss_kib"] / 1024,
                "engine_bytes_per_customer": eng["peak_rss_kib"] * 1024 / customers,
                "engine_bytes_per_customer_over_baseline": (eng["peak_rss_kib"] - eng["rss_kib_at_first_applied"])
                * 1024
                / customers,
                "redis_before": redis_before,
                "redis_after": redis_after,
                "redis_used_mib": (redis_after["used_memory"] - redis_before["used_memory"]) / 2**20,
                "redis_bytes_per_customer": (redis_after["used_memory"] - redis_before["used_memory"]) / customers,
                "profile_blob": profile_blob_sizes(client),
            }
            if eng["timed_out"]:
                results["errors"].append(
                    f"engine applied only {eng['applied']:,} of {args.events:,} events within {args.engine_timeout:.0f}s"
                )
            log(f"latency: {args.rate:,.0f} ev/s for {args.latency_seconds:.0f}s with probes")
            latency_profile = out_path.with_name(out_path.stem + "-latency-pyspy.txt.tmp") if args.profile_latency else None
            results["latency"] = latency_phase(
                kafka, client, gen, engine.proc.pid, eng["applied"], args.rate, args.latency_seconds, others, latency_profile
            )
            results["engine_kafka_redis"]["peak_rss_kib_after_latency"] = memory_kib(engine.proc.pid).get("VmHWM", 0)
            results["latency"]["outputs_after"] = topic_counts(kafka, [t.service_alerts, t.marketing_triggers, t.deadletter])
            engine.kill(signal.SIGKILL)
            engine = None
            client.close()
    except BenchError as exc:
        results["errors"].append(str(exc))
        log(f"error: {exc}")
    finally:
        if engine is not None:
            engine.kill(signal.SIGKILL)

    if not args.no_replay and not results["errors"]:
        log(f"replay of {args.events:,} events (no Kafka, no Redis)")
        try:
            results["engine_embedded"] = replay_phase(events_path, work, args.events, args.replay_timeout)
        except BenchError as exc:
            results["errors"].append(str(exc))
            log(f"error: {exc}")

    write_results(results, out_path)
    print(render(results))
    for leftover in work.glob("*.jsonl"):
        leftover.unlink()
    return 1 if results["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
