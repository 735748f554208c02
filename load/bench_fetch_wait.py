"""How long the broker holds a record before a reader laid out like the engine's can read it, per fetch wait.

    python -m load.bench_fetch_wait                          # fetch waits 500,100,50,20 ms at 10,000 events/s
    python -m load.bench_fetch_wait --waits 50 --layout single --rate 2000

Why: the engine's consumers ask the broker to hold a fetch at most ``engine.batch_max_wait_ms``
(``fetch.wait.max.ms``). Kafka answers a fetch as soon as data arrives, so there the wait only bounds idle
polling; Tansu holds every fetch for its whole wait, so the wait is also a floor under latency. Too short, and
the fetch requests themselves load the broker: the engine reads each input partition with its own consumer
(``operators/io/kafka.py``), so a process sends one fetch per partition per wait.

For each wait, on a fresh Tansu broker (its memory log grows run to run): the 4 input topics x 4 partitions,
readers like the engine's (``--layout per-partition``: one assign()ed consumer per partition, the engine's
consumer settings, a 20 ms back-off when all are empty, as the dataflow does) or one consumer assigned every
partition (``--layout single``), and a paced load of generated events at ``--rate`` with a probe every 10 ms.
It prints, per wait, the probes' produce -> consumable percentiles (the first quarter of the probes left out
as warm-up), the achieved rate, and the CPU the broker and the rest of the machine used.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
import uuid
from typing import Any

from confluent_kafka import OFFSET_END, Consumer, Producer, TopicPartition

from load import bench_spine as spine
from load.generator import EventGenerator
from load.proc import CpuShare, machine


def one_wait(wait_ms: int, layout: str, rate: float, seconds: float, customers: int) -> dict[str, Any]:
    from crm_stream.operators.io.kafka import _CONSUMER_DEFAULTS, ensure_topics
    from load.servers import running_servers
    from tests.integration.conftest import make_kafka_settings

    with running_servers() as (redis_server, broker):
        kafka = make_kafka_settings(broker.bootstrap)
        ensure_topics(kafka, partitions=4)
        config = {
            **_CONSUMER_DEFAULTS,
            "bootstrap.servers": broker.bootstrap,
            "group.id": f"bench-wait-{uuid.uuid4().hex[:6]}",
            "fetch.wait.max.ms": wait_ms,
        }
        wanted = [(t, p) for t in kafka.topics.inputs() for p in range(4)]
        consumers: list[Consumer] = []
        if layout == "single":
            consumers.append(Consumer(config))
            consumers[0].list_topics(timeout=10)
            consumers[0].assign([TopicPartition(t, p, OFFSET_END) for t, p in wanted])
        else:
            for t, p in wanted:
                consumer = Consumer(config)
                consumer.list_topics(t, timeout=10)
                consumer.assign([TopicPartition(t, p, OFFSET_END)])
                consumers.append(consumer)
        time.sleep(1.5)  # every consumer resolves OFFSET_END before the first probe
        producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 5, "acks": "all", "compression.type": "lz4"})
        topic_of = {role: getattr(kafka.topics, role) for role in ("clickstream", "purchases", "support", "control")}
        gen = EventGenerator(customers, seed=7)
        sent_ms: dict[bytes, float] = {}
        held: list[float] = []
        stop = threading.Event()

        def read() -> None:
            while not stop.is_set():
                got = 0
                for consumer in consumers:
                    messages = consumer.consume(1000, 0)
                    got += len(messages)
                    now = time.time() * 1000
                    for m in messages:
                        key = m.key()
                        if key and key.startswith(b"probe-"):
                            produced = sent_ms.pop(key, None)
                            if produced is not None:
                                held.append(now - produced)
                if not got:
                    time.sleep(0.02)

        reader = threading.Thread(target=read, name="reader", daemon=True)
        reader.start()
        share = CpuShare({"tansu": broker.process.pid, "bench": os.getpid()})
        sent = probes = 0
        started = time.perf_counter()
        next_probe = started
        while (elapsed := time.perf_counter() - started) < seconds:
            due = int(elapsed * rate) - sent
            if due > 0:
                for role, key, value in gen.batch(due):
                    spine._produce(producer, topic_of[role], value, key)
                sent += due
            if time.perf_counter() >= next_probe:
                key = f"probe-{probes}".encode()
                sent_ms[key] = time.time() * 1000
                spine._produce(producer, kafka.topics.support, b"{}", key.decode())
                probes += 1
                next_probe += 0.010
            producer.poll(0)
            time.sleep(0.001)
        paced_s = time.perf_counter() - started
        cores = share.stop()
        producer.flush(10)
        deadline = time.time() + 10
        while sent_ms and time.time() < deadline:
            time.sleep(0.05)
        stop.set()
        reader.join(5)
        for consumer in consumers:
            consumer.close()
    measured = sorted(held[len(held) // 4 :])
    return {
        "fetch_wait_ms": wait_ms,
        "layout": layout,
        "achieved_rate": round(sent / paced_s),
        "probes": probes,
        "samples": len(measured),
        "missing": len(sent_ms),
        "produce_to_consumable_ms": {q: spine._pct(measured, q) for q in (50, 95, 99)},
        "cpu_cores": cores,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m load.bench_fetch_wait", description=__doc__.split("\n\n")[0])
    p.add_argument("--waits", default="500,100,50,20", help="fetch.wait.max.ms values, comma-separated")
    p.add_argument("--layout", choices=("per-partition", "single"), default="per-partition")
    p.add_argument("--rate", type=float, default=10_000, help="events/s (default 10,000)")
    p.add_argument("--seconds", type=float, default=8.0, help="paced seconds per wait (default 8)")
    p.add_argument("--customers", type=int, default=1_000_000)
    args = p.parse_args(argv)
    m = machine()
    print(
        f"broker hold per fetch wait: Tansu on loopback, 16 input partitions, layout {args.layout}, "
        f"{args.rate:,.0f} ev/s for {args.seconds:g} s each; {m['nproc']} cores ({m['cpu_model']}), "
        f"load average at start {os.getloadavg()[0]:.1f}"
    )
    print(
        f"{'fetch wait ms':>14}{'achieved ev/s':>15}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'samples':>9}   cores: tansu / other"
    )
    for wait in (int(x) for x in args.waits.split(",")):
        r = one_wait(wait, args.layout, args.rate, args.seconds, args.customers)
        q, c = r["produce_to_consumable_ms"], r["cpu_cores"]
        print(
            f"{wait:>14}{r['achieved_rate']:>15,}"
            + "".join(f"{(q[k] if q[k] is not None else float('nan')):>9.1f}" for k in (50, 95, 99))
            + f"{r['samples']:>9}   {c.get('tansu_cores', 0):.2f} / {c.get('other_processes_cores', 0):.2f}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
