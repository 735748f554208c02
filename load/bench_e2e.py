"""End-to-end benchmark: Kafka -> engine (1..N processes) -> alerts on Kafka, with Redis as the store, beside baselines.

    python -m load.bench_e2e                          # 500,000 events, 1 and 2 processes (~6 min on 2 cores)
    python -m load.bench_e2e --quick                  # 100,000 events, 12 s latency phases (~2.5 min)
    python -m load.bench_e2e --processes 1,2,4,8      # scaling, on a machine with the cores for it
    python -m load.bench_e2e --store redis-cluster    # profiles in a local 3-node Redis Cluster instead

One run starts its own redis-server and Tansu broker (and Redis Cluster
nodes, when asked) on loopback, and measures, in this order:

1. **produce** N generated events (``load.generator``, the clickstream-heavy
   mix, ``--customers`` ids) to the 4 input topics, ``--partitions`` each.
2. **bare stack**: consume + ``orjson.loads`` of the backlog (the ceiling) and
   **naive loop**: GET + SET of a JSON profile per event (what a team writes
   without this engine), both from ``load.bench_spine``.
3. For each process count P in ``--processes``: a fresh store and recovery
   directory, then ``crm-stream run`` as P processes (a Bytewax cluster:
   ``--process-id i --addresses ...``; the input partitions are spread over
   them). **Throughput**: time until the shards' ``applied`` counts sum to N
   (a backlog drained at full speed, alerts and models on, as configured).
   **Memory**: the processes' peak RSS and Redis ``used_memory`` growth per
   distinct customer. **Latency**: then, still running, a paced load at
   ``--rate`` (default 10,000 events/s) with a probe every 10 ms: an angry
   inbound support message from a new customer, stamped with its produce time
   in an extra field (``bench_produced_at_ms``; the contract carries unknown
   fields), timed from just before ``produce()`` until the
   ``angry_customer`` alert for that customer is read from the service-alerts
   topic by a consumer assigned to all its partitions. That is the latency a
   customer-service tool sees, the engine's output linger (5 ms) and the
   reader's poll included. Each probe's time is split in three (wall clock):
   **broker in** (produced -> consumable by readers laid out like the
   engine's), **engine** (-> the alert's Kafka timestamp, stamped when the
   engine produces it) and **broker out** (-> read). The readers here use the
   engine's fetch wait (``engine.batch_max_wait_ms``). The first
   ``--warmup-seconds`` (2) are left out; the report prints the rate actually
   achieved after them and says NOT VALID when fewer than 1,000 probes were
   timed, less than 95% of the rate was offered, or a probe's alert never came.

Ratios are printed beside each figure: engine / bare, engine / naive, and P
processes / 1 process (scaling; 1.0 per process is linear). On a small
machine the broker, Redis, the benchmark and P engines share the cores, so
read the "cores busy" column: a phase whose processes could not get a core
each is capped by the machine, not by the engine. Results go to
``load/results/e2e-<date>[-quick].json`` (every figure, the command, the machine).
"""

from __future__ import annotations

import argparse
import gc
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import redis
from confluent_kafka import OFFSET_END, Consumer, Producer, TopicPartition

from crm_stream.config.settings import EngineSettings, KafkaSettings
from crm_stream.operators.events.simulator import ANGRY
from crm_stream.operators.io.kafka import _CONSUMER_DEFAULTS, ensure_topics
from load import bench_spine as spine
from load.generator import EventGenerator
from load.outputs import results_dir, write_results
from load.proc import CpuShare, cpu_seconds, memory_kib

ROOT = Path(__file__).resolve().parents[1]
RESULTS = results_dir()  # not the source tree: --out load/results/... keeps a result with the project
TARGET_PER_PROCESS = 30_000  # issue 7: events/s per worker process, alerts and models on, mostly clickstream
TARGET_P99_MS = 250.0  # issue 7: p99 event -> alert at 10,000 events/s
PROBE_FIELD = "bench_produced_at_ms"
PROBE_TEXTS = [t for lang in ANGRY.values() for t in lang if t != ANGRY["zh"][2]]  # all score >= 0.9 (the threshold is 0.6)
SHARDS = 16


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class Store:
    """The engine's store as the benchmark sees it: one redis-server, or the nodes of a Redis Cluster."""

    def __init__(self, url: str, cluster: Any | None = None) -> None:
        self.url = url
        self.cluster = cluster
        if cluster is None:
            self.client: Any = redis.Redis.from_url(url)
        else:
            from redis.cluster import RedisCluster as ClusterClient

            self.client = ClusterClient.from_url(url)

    def mget(self, keys: list[str]) -> list[bytes | None]:
        return self.client.mget_nonatomic(keys) if self.cluster else self.client.mget(keys)

    def applied(self) -> int:
        return sum(
            orjson.loads(b).get("applied", 0) for b in self.mget([f"{spine.KEY_PREFIX}:shard:{n}" for n in range(SHARDS)]) if b
        )

    def used_memory(self) -> int:
        if self.cluster is None:
            return int(self.client.info("memory")["used_memory"])
        return sum(int(redis.Redis(port=n.port).info("memory")["used_memory"]) for n in self.cluster.nodes)

    def flush(self) -> None:
        if self.cluster is None:
            self.client.flushdb()
        else:
            self.cluster.flushall()

    @property
    def pids(self) -> dict[str, int]:
        if self.cluster is None:
            return {}
        return self.cluster.pids

    def close(self) -> None:
        self.client.close()


def sum_counters(pages: Iterable[str]) -> dict[str, float]:
    """Prometheus text pages -> each ``*_total`` sample summed over pages and labels.

    >>> sum_counters(['a_total{s="x"} 2.0\\na_total{s="y"} 1.0\\n# HELP b', 'a_total{s="x"} 4.0\\nc 9'])
    {'a_total': 7.0}
    """
    totals: dict[str, float] = {}
    for page in pages:
        for line in page.splitlines():
            name, _, rest = line.partition("{") if "{" in line else line.partition(" ")
            if line.startswith("#") or not name.endswith("_total"):
                continue
            totals[name] = totals.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
    return totals


def crossing_figures(counters: dict[str, float]) -> dict[str, float | None]:
    """Per 1,000 events in: the events, and the dataflow items, that reached a stateful step in another process.

    >>> crossing_figures({"crm_events_in_total": 2000.0, "crm_crossing_events_total": 1500.0, "crm_crossing_items_total": 30.0})
    {'events_in': 2000.0, 'events_per_1000': 750.0, 'items_per_1000': 15.0}
    """
    events = counters.get("crm_events_in_total", 0.0)
    per = (lambda n: round(n * 1000 / events, 1)) if events else (lambda n: None)
    return {
        "events_in": events,
        "events_per_1000": per(counters.get("crm_crossing_events_total", 0.0)),
        "items_per_1000": per(counters.get("crm_crossing_items_total", 0.0)),
    }


class EngineCluster:
    """P ``crm-stream run`` processes forming one Bytewax cluster (P = 1: a plain single process)."""

    def __init__(self, processes: int, env: dict[str, str], log_dir: Path) -> None:
        from tests.integration.conftest import free_port
        from tests.integration.engine_process import CLI

        self.log_dir = log_dir
        addresses = ",".join(f"127.0.0.1:{free_port()}" for _ in range(processes))
        self.metrics_ports = [free_port() for _ in range(processes)]  # each process's /metrics: the crossing counts
        self.procs: list[subprocess.Popen[bytes]] = []
        for i in range(processes):
            cluster = ["--process-id", str(i), "--addresses", addresses] if processes > 1 else []
            own = {**env, "CRM_STREAM__METRICS__PORT": str(self.metrics_ports[i]), "CRM_STREAM__METRICS__HOST": "127.0.0.1"}
            with open(log_dir / f"engine-{processes}p-{i}.log", "ab") as out:
                self.procs.append(
                    subprocess.Popen(
                        CLI + ["--log-level", "INFO", "run", *cluster], env=own, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT
                    )
                )

    def counters(self) -> dict[str, float]:
        """The processes' counters, summed over processes and labels (``crm_events_in_total`` -> value)."""
        return sum_counters(
            urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode() for port in self.metrics_ports
        )

    @property
    def pids(self) -> dict[str, int]:
        return {f"engine{i}": p.pid for i, p in enumerate(self.procs)}

    def check(self) -> None:
        for i, proc in enumerate(self.procs):
            if proc.poll() is not None:
                tail = (self.log_dir / f"engine-{len(self.procs)}p-{i}.log").read_text(errors="replace")[-2000:]
                raise spine.BenchError(f"engine process {i} of {len(self.procs)} exited with {proc.returncode}: {tail}")

    def cpu_seconds(self) -> float:
        return sum(cpu_seconds(p.pid) for p in self.procs)

    def peak_rss_kib(self) -> int:
        return sum(memory_kib(p.pid).get("VmHWM", 0) for p in self.procs)

    def rss_kib(self) -> int:
        return sum(memory_kib(p.pid).get("VmRSS", 0) for p in self.procs)

    def kill(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
        for proc in self.procs:
            proc.wait(timeout=30)


def throughput_phase(
    engines: EngineCluster, store: Store, expected: int, timeout_s: float, others: dict[str, int]
) -> dict[str, Any]:
    """Time the P processes until every produced event is applied; the rate is taken from the first applied event."""
    started = time.perf_counter()
    first_t: float | None = None
    first_applied = rss_at_first = 0
    share: CpuShare | None = None
    cpu_first = 0.0
    applied, timed_out = 0, False
    while True:
        engines.check()
        applied = store.applied()
        now = time.perf_counter()
        if first_t is None and applied > 0:
            first_t, first_applied, rss_at_first = now, applied, engines.rss_kib()
            share = CpuShare({**engines.pids, "bench": os.getpid(), **others})
            cpu_first = engines.cpu_seconds()
        if applied >= expected:
            break
        if now - started > timeout_s:
            timed_out = True
            break
        time.sleep(0.1)
    end = time.perf_counter()
    span = end - (first_t or end)
    return {
        "expected": expected,
        "applied": applied,
        "timed_out": timed_out,
        "startup_s": round((first_t or end) - started, 2),
        "seconds": round(span, 2),
        "events_per_s": (applied - first_applied) / span if span > 0 else 0.0,
        "events_per_s_including_startup": applied / (end - started),
        "engine_cpu_cores": round((engines.cpu_seconds() - cpu_first) / span, 2) if span > 0 else None,
        "cpu_cores": share.stop() if share else {},
        "peak_rss_kib": engines.peak_rss_kib(),
        "rss_kib_at_first_applied": rss_at_first,
    }


def alert_latency_phase(
    kafka: KafkaSettings,
    store: Store,
    engines: EngineCluster,
    gen: EventGenerator,
    applied_before: int,
    rate: float,
    seconds: float,
    others: dict[str, int],
    fetch_wait_ms: int,
    warmup_s: float = 2.0,
    probe_every_s: float = 0.010,
    drain_s: float = 20.0,
) -> dict[str, Any]:
    """Paced load with angry-message probes; latency = produce -> the probe's alert consumed from the service-alerts topic.

    Each probe's latency is split in three, all on this machine's wall clock: **broker in** (produced -> consumable
    by a reader laid out like the engine's: one assign()ed consumer for the support partitions, the engine's
    consumer settings and fetch wait), **engine** (consumable -> the alert's Kafka timestamp, which librdkafka stamps when the
    engine calls ``produce()``), **broker out** (that -> read here). Probes sent in the first ``warmup_s`` are left
    out of the percentiles (the engine's first paced batches, the readers' first fetches).
    """
    topics = kafka.topics
    topic_of = {role: getattr(topics, role) for role in ("clickstream", "purchases", "support", "control")}
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
    # customer -> wall-clock ms: produced, consumable (broker in), alert stamped by the engine, alert read
    produced_ms: dict[str, float] = {}
    consumable_ms: dict[str, float] = {}
    done: list[tuple[float, float | None, float, float]] = []  # (produced, consumable, alert created, alert read)
    lock = threading.Lock()
    stop = threading.Event()
    # The readers here ask the broker to hold a fetch no longer than the engine's readers do (Tansu holds a fetch
    # for its whole wait: with librdkafka's default, 500 ms, each read would add ~130 ms at p50).
    reader_config = {
        **_CONSUMER_DEFAULTS,
        "bootstrap.servers": kafka.bootstrap_servers,
        "group.id": f"bench-alerts-{run_id}",
        "fetch.wait.max.ms": fetch_wait_ms,
    }
    metadata = Consumer({"bootstrap.servers": kafka.bootstrap_servers, "group.id": f"bench-meta-{run_id}"})
    listed = metadata.list_topics(timeout=10).topics
    alert_partitions = list(listed[topics.service_alerts].partitions)
    support_partitions = list(listed[topics.support].partitions)
    metadata.close()
    reader = Consumer(reader_config)
    reader.assign([TopicPartition(topics.service_alerts, p, OFFSET_END) for p in alert_partitions])
    # One consumer for every support partition, as the engine reads all of its partitions with one.
    probe_readers = [Consumer(reader_config)]
    probe_readers[0].assign([TopicPartition(topics.support, p, OFFSET_END) for p in support_partitions])
    alerts_read = [0]

    def read_alerts() -> None:
        while not stop.is_set():
            messages = reader.consume(1000, 0.005)
            wall_ms = time.time() * 1000
            for m in messages:
                if m.error() is not None:
                    continue
                alerts_read[0] += 1
                alert = orjson.loads(m.value())
                customer = alert.get("customer_id", "")
                if alert.get("kind") == "angry_customer" and customer.startswith("probe-"):
                    with lock:
                        sent = produced_ms.pop(customer, None)
                        seen = consumable_ms.pop(customer, None)
                    if sent is not None:
                        done.append((sent, seen, float(m.timestamp()[1]), wall_ms))

    def read_probes() -> None:  # broker in: when each probe is consumable by a reader like the engine's
        while not stop.is_set():
            got = 0
            for consumer in probe_readers:
                messages = consumer.consume(1000, 0)
                got += len(messages)
                wall_ms = time.time() * 1000
                for m in messages:
                    key = m.key()
                    if m.error() is None and key and key.startswith(b"probe-"):
                        with lock:
                            consumable_ms[key.decode()] = wall_ms
            if not got:
                time.sleep(0.002)

    threads = [
        threading.Thread(target=read_alerts, name="alert-reader", daemon=True),
        threading.Thread(target=read_probes, name="probe-reader", daemon=True),
    ]
    for thread in threads:
        thread.start()
    time.sleep(1.0)  # let the readers resolve OFFSET_END before the first probe
    cpu_before = engines.cpu_seconds()
    share = CpuShare({**engines.pids, "bench": os.getpid(), **others})
    sent = probes = 0
    started = time.perf_counter()
    measured_from_ms = time.time() * 1000 + warmup_s * 1000
    sent_at_warmup_end: int | None = None
    next_probe = started
    while True:
        now = time.perf_counter()
        elapsed = now - started
        if elapsed >= seconds:
            break
        if sent_at_warmup_end is None and elapsed >= warmup_s:
            sent_at_warmup_end = sent
        due = int(elapsed * rate) - sent
        if due > 0:
            for role, key, value in gen.batch(due):
                spine._produce(producer, topic_of[role], value, key)
            sent += due
        if now >= next_probe:
            customer = f"probe-{run_id}-{probes}"
            stamp = time.time() * 1000
            role, key, value = gen.support_message_for(
                customer, PROBE_TEXTS[probes % len(PROBE_TEXTS)], extra={PROBE_FIELD: round(stamp)}
            )
            with lock:
                produced_ms[customer] = stamp
            spine._produce(producer, topic_of[role], value, key)
            probes += 1
            next_probe += probe_every_s
        producer.poll(0)
        time.sleep(0.001)
    paced_s = time.perf_counter() - started
    cpu_cores = share.stop()
    engine_cores = (engines.cpu_seconds() - cpu_before) / paced_s
    producer.flush(30)
    expected = applied_before + sent + probes
    deadline = time.perf_counter() + drain_s
    while time.perf_counter() < deadline:
        with lock:
            left = len(produced_ms)
        if not left and store.applied() >= expected:
            break
        time.sleep(0.05)
    stop.set()
    for thread in threads:
        thread.join(5)
    reader.close()
    for consumer in probe_readers:
        consumer.close()
    applied = store.applied()
    with lock:
        missing = len(produced_ms)
    measured = [d for d in done if d[0] >= measured_from_ms]
    total = sorted(read - sent for sent, _, _, read in measured)
    split = [d for d in measured if d[1] is not None]
    broker_in = sorted(seen - sent for sent, seen, _, _ in split)  # type: ignore[operator]
    engine = sorted(created - seen for _, seen, created, _ in split)  # type: ignore[operator]
    broker_out = sorted(read - created for _, _, created, read in measured)
    steady_s = max(paced_s - warmup_s, 1e-9)
    achieved = (sent - (sent_at_warmup_end or 0)) / steady_s
    return {
        "rate_target": rate,
        "seconds": round(paced_s, 2),
        "warmup_s": warmup_s,
        "events": sent,
        "achieved_rate": round(achieved),
        "achieved_rate_including_warmup": round(sent / paced_s),
        "probes": probes,
        "alerts_seen": len(done),
        "samples": len(total),
        "probes_missing": missing,
        "service_alerts_read": alerts_read[0],
        "reader_fetch_wait_ms": fetch_wait_ms,
        "latency_ms": _percentiles(total),
        "split_ms": {
            "samples": len(split),
            "broker_in": _percentiles(broker_in),
            "engine": _percentiles(engine),
            "broker_out": _percentiles(broker_out),
        },
        "valid": {
            "enough_samples": len(total) >= 1000,
            "rate_reached": achieved >= 0.95 * rate,
            "all_alerts_seen": missing == 0,
        },
        "kept_up": applied >= expected,
        "applied_after": applied,
        "expected_after": expected,
        "engine_cpu_cores": round(engine_cores, 2),
        "cpu_cores": cpu_cores,
    }


def _percentiles(ms: list[float]) -> dict[str, float | None]:
    """p50 / p95 / p99 / max / mean of sorted milliseconds (nearest rank)."""
    return {
        "p50": spine._pct(ms, 50),
        "p95": spine._pct(ms, 95),
        "p99": spine._pct(ms, 99),
        "max": round(ms[-1], 1) if ms else None,
        "mean": round(statistics.fmean(ms), 1) if ms else None,
    }


def engine_batch_max_wait_ms(engine_env: list[str]) -> int:
    """The engine's ``engine.batch_max_wait_ms`` in this run (its default unless ``--engine-env`` sets it)."""
    for item in engine_env:
        name, _, value = item.partition("=")
        if name == "CRM_STREAM__ENGINE__BATCH_MAX_WAIT_MS":
            return int(value)
    return EngineSettings.batch_max_wait_ms


def run_processes(
    processes: int,
    kafka: KafkaSettings,
    store: Store,
    work: Path,
    args: argparse.Namespace,
    events: int,
    customers: int,
    gen: EventGenerator,
    others: dict[str, int],
) -> dict[str, Any]:
    from crm_stream.config import settings as config
    from crm_stream.flows.runtime import _recovery
    from tests.integration.engine_process import engine_env

    store.flush()
    redis_before = store.used_memory()
    recovery = work / f"recovery-{processes}p"
    _recovery(config.load(None, env={"CRM_STREAM__RECOVERY__DIR": str(recovery)}))  # created once, before P processes race to
    # Production's epoch; a group of its own, so no run resumes from another's committed positions.
    overrides = {
        "CRM_STREAM__ENGINE__EPOCH_INTERVAL_MS": "500",
        "CRM_STREAM__STORE__KIND": args.store,
        "CRM_STREAM__KAFKA__GROUP_ID": f"{kafka.group_id}.{processes}p",
    }
    overrides.update(item.split("=", 1) for item in args.engine_env)
    env = engine_env(kafka, store.url, recovery, **overrides)
    log(f"{processes} process(es): draining {events:,} events")
    engines = EngineCluster(processes, env, work)
    result: dict[str, Any] = {"processes": processes}
    try:
        result["throughput"] = tp = throughput_phase(engines, store, events, args.engine_timeout, {**others, **store.pids})
        result["crossing"] = cross = crossing_figures(engines.counters())
        log(
            f"{processes} process(es): records crossing processes per 1,000 events: {cross['events_per_1000']} events "
            f"in {cross['items_per_1000']} dataflow items"
        )
        redis_after = store.used_memory()
        result["memory"] = {
            "customers": customers,
            "engine_peak_rss_mib": round(tp["peak_rss_kib"] / 1024, 1),
            "engine_bytes_per_customer": round(tp["peak_rss_kib"] * 1024 / customers),
            "engine_bytes_per_customer_over_startup": round(
                (tp["peak_rss_kib"] - tp["rss_kib_at_first_applied"]) * 1024 / customers
            ),
            "redis_used_mib": round((redis_after - redis_before) / 2**20, 1),
            "redis_bytes_per_customer": round((redis_after - redis_before) / customers),
        }
        log(f"{processes} process(es): {tp['events_per_s']:,.0f} ev/s" + (" (TIMED OUT)" if tp["timed_out"] else ""))
        t = kafka.topics
        result["outputs_after_throughput"] = spine.topic_counts(kafka, [t.service_alerts, t.marketing_triggers, t.deadletter])
        if args.latency_seconds > 0 and not tp["timed_out"]:
            log(f"{processes} process(es): {args.rate:,.0f} ev/s for {args.latency_seconds:.0f}s with alert probes")
            result["latency"] = lat = alert_latency_phase(
                kafka,
                store,
                engines,
                gen,
                tp["applied"],
                args.rate,
                args.latency_seconds,
                {**others, **store.pids},
                fetch_wait_ms=args.reader_fetch_wait_ms or engine_batch_max_wait_ms(args.engine_env),
                warmup_s=args.warmup_seconds,
            )
            log(f"{processes} process(es): event -> alert p50 {lat['latency_ms']['p50']} ms, p99 {lat['latency_ms']['p99']} ms")
    finally:
        engines.kill()
    return result


# ----------------------------------------------------------------------------- report


def render(r: dict[str, Any]) -> str:
    m, gen = r["machine"], r.get("generator", {})
    bare = (r.get("bare_stack") or {}).get("events_per_s")
    naive = (r.get("naive_redis") or {}).get("events_per_s")
    runs = r.get("runs", [])
    one = next((x["throughput"]["events_per_s"] for x in runs if x["processes"] == 1 and "throughput" in x), None)
    lines = [
        "",
        f"crm-stream end-to-end benchmark  {r['started_at']}",
        f"machine: {m['nproc']} cores ({m['cpu_model']}), {m['mem_total_gib']} GiB; Python {r['versions']['python']}, "
        f"bytewax {r['versions']['bytewax']}, {r['versions']['redis_server']}; store: {r['config']['store']}",
        f"command: {r['command']}",
        f"engine code: sha256 {r['code']['sha256'][:12]}, newest change {r['code']['newest_change']}",
        f"events: {r['config']['events']:,} (clickstream-heavy) to 4 topics x {r['config']['partitions']} partitions; "
        f"{gen.get('distinct_customers', 0):,} distinct customers of {r['config']['customers']:,}",
        "",
        f"{'throughput (backlog, alerts + models on)':<42}{'events/s':>10}{'vs bare':>9}{'vs naive':>10}{'vs 1 proc':>11}"
        f"{'per proc':>10}   cores: engine / other tenants / of",
    ]

    def ratio(x: float | None, base: float | None) -> str:
        return f"{x / base:>8.2f}x" if x and base else f"{'-':>9}"

    for name, rate, phase in (
        ("bare stack (consume + orjson.loads)", bare, r.get("bare_stack")),
        ("naive per-event Redis loop", naive, r.get("naive_redis")),
    ):
        if not rate:
            continue  # --no-baselines
        c = (phase or {}).get("cpu_cores") or {}
        lines.append(
            f"{name:<42}{rate or 0:>10,.0f}{ratio(rate, bare)}{ratio(rate, naive):>10}{'':>11}{'':>10}"
            + (f"   - / {c.get('other_processes_cores', 0):.2f} / {c.get('cores', '?')}" if c else "")
        )
    for x in runs:
        tp = x.get("throughput")
        if not tp:
            continue
        p, rate = x["processes"], tp["events_per_s"]
        c = tp.get("cpu_cores") or {}
        lines.append(
            f"{f'engine, {p} process' + ('es' if p > 1 else ''):<42}{rate:>10,.0f}{ratio(rate, bare)}{ratio(rate, naive):>10}"
            f"{ratio(rate, one):>11}{rate / p:>10,.0f}   {tp.get('engine_cpu_cores') or 0:.2f} / "
            f"{c.get('other_processes_cores', 0):.2f} / {c.get('cores', '?')}" + ("  TIMED OUT" if tp["timed_out"] else "")
        )
    cross_rows = [x for x in runs if x.get("crossing")]
    if cross_rows:
        lines += ["", "records crossing processes per 1,000 events (reaching the identity or profile step in another process):"]
        for x in cross_rows:
            c = x["crossing"]
            lines.append(
                f"  {x['processes']} process(es): {c['events_per_1000']} events, in {c['items_per_1000']} dataflow items "
                f"({c['events_in']:,.0f} events in)"
            )
    lat_rows = [x for x in runs if x.get("latency")]
    if lat_rows:
        first = lat_rows[0]["latency"]
        lines += [
            "",
            f"latency, event produced -> angry_customer alert read from the service-alerts topic, offered "
            f"{r['config']['rate']:,.0f} ev/s, a probe every 10 ms, the first {first.get('warmup_s', 0):g} s left out; "
            f"readers' fetch wait {first.get('reader_fetch_wait_ms', '?')} ms:",
            f"{'':<16}{'achieved ev/s':>14}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'max ms':>9}{'samples':>9}"
            f"{'alerts/probes':>15}{'kept up':>9}{'engine cores':>14}",
        ]

        def cells(L: dict[str, Any]) -> str:
            return "".join(f"{(L[k] if L.get(k) is not None else float('nan')):>9.1f}" for k in ("p50", "p95", "p99", "max"))

        for x in lat_rows:
            lat = x["latency"]
            lines.append(
                f"{str(x['processes']) + ' process' + ('es' if x['processes'] > 1 else ''):<16}"
                f"{lat['achieved_rate']:>14,}"
                + cells(lat["latency_ms"])
                + f"{lat.get('samples', lat['alerts_seen']):>9}"
                + f"{str(lat['alerts_seen']) + '/' + str(lat['probes']):>15}{'yes' if lat['kept_up'] else 'NO':>9}"
                f"{lat['engine_cpu_cores']:>14.2f}"
            )
            split = lat.get("split_ms")
            if split:
                for name, label in (
                    ("broker_in", "broker in: produced -> consumable by a reader like the engine's"),
                    ("engine", "engine: consumable -> alert produced (its Kafka timestamp)"),
                    ("broker_out", "broker out: alert produced -> read"),
                ):
                    lines.append(f"  {'':<14}{'':>14}" + cells(split[name]) + f"   {label}")
            bad = [k.replace("_", " ") for k, ok in (lat.get("valid") or {}).items() if not ok]
            if bad:
                lines.append(f"  NOT VALID: {', '.join(bad)} (see the results file)")
    mem_rows = [x for x in runs if x.get("memory")]
    if mem_rows:
        lines += ["", "memory per customer (peak RSS of all processes / distinct customers; Redis used_memory growth):"]
        for x in mem_rows:
            mm = x["memory"]
            lines.append(
                f"  {x['processes']} process(es): engine {mm['engine_bytes_per_customer']:,} B "
                f"({mm['engine_bytes_per_customer_over_startup']:,} over start-up; peak {mm['engine_peak_rss_mib']:,.0f} MiB), "
                f"Redis {mm['redis_bytes_per_customer']:,} B"
            )
    if one:
        best = max((x["throughput"]["events_per_s"] / x["processes"] for x in runs if "throughput" in x), default=0)
        p99s = [x["latency"]["latency_ms"]["p99"] for x in lat_rows if x["latency"]["latency_ms"]["p99"] is not None]
        valid = all(all((x["latency"].get("valid") or {"unchecked": False}).values()) for x in lat_rows)
        achieved = ", ".join(f"{x['latency']['achieved_rate']:,}" for x in lat_rows)
        lines += [
            "",
            f"targets: >= {TARGET_PER_PROCESS:,} ev/s per process: {'MET' if one >= TARGET_PER_PROCESS else 'NOT MET'} "
            f"(1 process {one:,.0f} = {one / TARGET_PER_PROCESS:.0%}; best per process {best:,.0f}); "
            f"p99 event->alert < {TARGET_P99_MS:.0f} ms at {r['config']['rate']:,.0f} ev/s: "
            + (
                ("MET" if max(p99s) < TARGET_P99_MS and valid else "NOT MET")
                + f" (p99 {', '.join(f'{v:,.0f}' for v in p99s)} ms"
                + f" at {achieved} ev/s achieved"
                + ("" if valid else "; NOT VALID, see above")
                + ")"
                if p99s
                else "not measured"
            ),
        ]
    if r.get("errors"):
        lines += ["", "errors:"] + [f"  {e}" for e in r["errors"]]
    lines.append(f"\nresults: {r.get('results_file', '-')}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m load.bench_e2e", description=__doc__.split("\n\n")[0])
    p.add_argument("--events", type=int, help="events for the throughput phases (default 500,000; --quick 100,000)")
    p.add_argument("--customers", type=int, default=1_000_000, help="customer ids to draw from (default 1,000,000)")
    p.add_argument("--quick", action="store_true", help="100,000 events, 12 s latency phases, short naive loop")
    p.add_argument("--processes", default="1,2", help="engine process counts to measure, e.g. 1,2,4 (default 1,2)")
    p.add_argument(
        "--partitions", type=int, default=4, help="partitions per input topic (default 4; >= the largest process count)"
    )
    p.add_argument(
        "--store", choices=("redis", "redis-cluster"), default="redis", help="redis: one redis-server; redis-cluster: 3 nodes"
    )
    p.add_argument("--rate", type=float, default=10_000, help="events/s of the paced latency phases (default 10,000)")
    p.add_argument(
        "--latency-seconds", type=float, help="length of each latency phase, warm-up included (default 15; --quick 12; 0: skip)"
    )
    p.add_argument(
        "--reader-fetch-wait-ms",
        type=int,
        help="fetch.wait.max.ms of the latency phase's readers (default: the engine's engine.batch_max_wait_ms)",
    )
    p.add_argument(
        "--warmup-seconds", type=float, default=2.0, help="probes of the latency phase's first seconds left out (default 2)"
    )
    p.add_argument("--engine-timeout", type=float, default=600.0, help="limit for each throughput phase (default 600 s)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--no-baselines", action="store_true", help="skip the bare-stack and naive-loop phases")
    p.add_argument(
        "--engine-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra engine environment, e.g. CRM_STREAM__MODELS__TRAIN_FRACTION=0.1 (repeatable)",
    )
    p.add_argument(
        "--out", help="results file (default ~/.cache/crm-stream/e2e-<date>[-quick].json; --out load/results/... to keep one)"
    )
    args = p.parse_args(argv)
    args.events = args.events or (100_000 if args.quick else 500_000)
    args.latency_seconds = args.latency_seconds if args.latency_seconds is not None else (12.0 if args.quick else 15.0)
    try:
        args.process_counts = [int(x) for x in args.processes.split(",")]
    except ValueError:
        p.error(f"--processes {args.processes!r} must be comma-separated integers, e.g. 1,2,4")
    if min(args.process_counts) < 1 or max(args.process_counts) > 64:
        p.error("--processes: each count must be between 1 and 64")
    if args.partitions < max(args.process_counts):
        p.error(f"--partitions {args.partitions} < {max(args.process_counts)} processes: some processes would read nothing")
    if args.latency_seconds and args.latency_seconds <= args.warmup_seconds:
        p.error(f"--latency-seconds {args.latency_seconds} must be longer than --warmup-seconds {args.warmup_seconds}")
    if not 1 <= args.events <= 5_000_000:
        p.error("--events must be between 1 and 5,000,000")
    spine.check_engine_env(p, args.engine_env)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from crm_stream.config import settings as config
    from load.servers import running_servers
    from tests.integration.conftest import make_kafka_settings, redis_binary

    started_at = datetime.now(UTC)
    out_path = Path(args.out) if args.out else RESULTS / f"e2e-{started_at:%Y-%m-%d}{'-quick' if args.quick else ''}.json"
    results: dict[str, Any] = {
        **spine.run_header("load.bench_e2e", argv, started_at),
        "config": {
            "events": args.events,
            "customers": args.customers,
            "processes": args.process_counts,
            "partitions": args.partitions,
            "store": args.store,
            "rate": args.rate,
            "latency_seconds": args.latency_seconds,
            "warmup_seconds": args.warmup_seconds,
            "reader_fetch_wait_ms": args.reader_fetch_wait_ms,
            "seed": args.seed,
            "engine_env": args.engine_env,
            "mix": "clickstream-heavy (load.generator.TYPE_WEIGHTS)",
        },
        "runs": [],
        "errors": [],
    }
    settings = config.load(None, env={})
    work = Path(tempfile.mkdtemp(prefix="crm-bench-e2e-"))
    log(f"{results['command']}: work dir {work}")
    spine.check_generator(args.customers, args.seed, "uniform", settings)
    gen = EventGenerator(args.customers, seed=args.seed)
    records, results["generator"] = spine.generate(gen, args.events, work / "events.jsonl")
    (work / "events.jsonl").unlink()
    probes = 0
    cluster = None
    try:
        with running_servers(str(work)) as (redis_server, broker):
            others = {"redis": redis_server.process.pid, "tansu": broker.process.pid}
            kafka = make_kafka_settings(broker.bootstrap)
            spine.PARTITIONS = args.partitions  # the baselines read every input partition
            ensure_topics(kafka, partitions=args.partitions)
            results["produce"] = spine.produce(kafka, records)
            del records
            gc.collect()
            log(f"produced {args.events:,} at {results['produce']['events_per_s']:,.0f}/s")
            if not args.no_baselines:
                results["bare_stack"] = spine.bare_stack(kafka, args.events, 120, others)
                log(f"bare stack {results['bare_stack']['events_per_s']:,.0f}/s")
                results["naive_redis"] = spine.naive_loop(
                    kafka, redis_server.url, 10_000 if args.quick else 30_000, 8.0 if args.quick else 20.0, others
                )
                log(f"naive loop {results['naive_redis']['events_per_s']:,.0f}/s")
            if args.store == "redis-cluster":
                from tests.integration.redis_cluster import RedisCluster

                cluster = RedisCluster(redis_binary(), log_dir=str(work))
                cluster.start()
                store = Store(cluster.url, cluster)
            else:
                store = Store(redis_server.url)
            in_topics = args.events  # each run starts from the beginning: the backlog plus earlier runs' paced load
            for processes in args.process_counts:
                try:
                    run = run_processes(
                        processes, kafka, store, work, args, in_topics, gen.distinct_customers + probes, gen, others
                    )
                    results["runs"].append(run)
                    lat = run.get("latency") or {}
                    in_topics += lat.get("events", 0) + lat.get("probes", 0)
                    probes += lat.get("probes", 0)
                except spine.BenchError as exc:
                    results["errors"].append(f"{processes} process(es): {exc}")
                    log(f"error: {exc}")
            store.close()
    except spine.BenchError as exc:
        results["errors"].append(str(exc))
        log(f"error: {exc}")
    finally:
        if cluster is not None:
            cluster.stop()
    write_results(results, out_path)
    print(render(results))
    return 1 if results["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
