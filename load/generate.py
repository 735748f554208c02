"""Produce contract events to Kafka and/or a file at a target rate: load for the engine, bounded in count and time.

    python -m load.generate --rate 10000 --seconds 60 --customers 1000000 --mix clickstream-heavy \\
        --bursts 4,10,2 --bootstrap localhost:9092
    python -m load.generate --events 100000 --rate 0 --out events.jsonl --to file    # as fast as possible, to a file

Events come from ``load.generator.EventGenerator`` (pre-built templates, every
event passes the engine's decoder), so the generator itself manages
hundreds of thousands of events/s and the rate is the one asked for. Pacing
is by wall clock in small slices: at each tick it produces what is due since
the start, so a slow tick is caught up, never silently dropped. ``--bursts
FACTOR,EVERY_S,LENGTH_S`` multiplies the rate by FACTOR for LENGTH_S seconds
out of every EVERY_S (flash sales, a campaign email landing). It stops at
``--events`` or ``--seconds``, whichever comes first, and prints what it did.

Mixes (weights per event type; ``load.generator.TYPE_WEIGHTS`` is the default):

- ``clickstream-heavy``: ~85% clickstream, 8% purchases/refunds, 5% support, 2% control (a shop)
- ``support-heavy``: a help desk's day: ~30% support, so anger and ticket rules work hard
- ``purchase-heavy``: ~40% purchases and refunds (a sale), for the RFM and model paths

``--customers`` with ``--distribution zipf`` gives few very active customers
and a long tail; ``uniform`` over many ids is the hardest case for the
engine's cache (every event a different customer).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from load.generator import TYPE_WEIGHTS, EventGenerator

MIXES: dict[str, dict[str, float]] = {
    "clickstream-heavy": dict(TYPE_WEIGHTS),
    "support-heavy": {
        **TYPE_WEIGHTS,
        "page_view": 20.0,
        "product_view": 25.0,
        "search": 6.0,
        "support_message": 18.0,
        "ticket_opened": 6.0,
        "ticket_closed": 5.0,
        "survey": 2.0,
    },
    "purchase-heavy": {**TYPE_WEIGHTS, "page_view": 20.0, "product_view": 25.0, "purchase": 35.0, "refund": 5.0},
}
TICK_S = 0.005  # pacing slice: small enough for smooth load at 10-100 k/s, large enough to batch


@dataclass(frozen=True)
class Bursts:
    """Rate x ``factor`` for ``length_s`` out of every ``every_s`` seconds (the burst opens each period)."""

    factor: float
    every_s: float
    length_s: float

    @classmethod
    def parse(cls, text: str) -> Bursts:
        """``"4,10,2"``: 4x the rate for 2 s out of every 10 s.

        >>> Bursts.parse("4,10,2").multiplier(1.5), Bursts.parse("4,10,2").multiplier(5.0)
        (4.0, 1.0)
        """
        try:
            factor, every, length = (float(x) for x in text.split(","))
        except ValueError:
            raise ValueError(f"--bursts {text!r} must be FACTOR,EVERY_S,LENGTH_S, e.g. 4,10,2") from None
        if factor <= 0 or every <= 0 or not 0 < length <= every:
            raise ValueError(f"--bursts {text!r}: need FACTOR > 0 and 0 < LENGTH_S <= EVERY_S")
        return cls(factor, every, length)

    def multiplier(self, elapsed_s: float) -> float:
        return self.factor if elapsed_s % self.every_s < self.length_s else 1.0


def due_events(elapsed_s: float, rate: float, bursts: Bursts | None) -> float:
    """How many events should have been sent ``elapsed_s`` seconds in (the integral of the rate, bursts included).

    >>> due_events(10.0, 100, None), due_events(10.0, 100, Bursts(3, 5, 1))
    (1000.0, 1400.0)
    """
    if bursts is None:
        return elapsed_s * rate
    periods, into = divmod(elapsed_s, bursts.every_s)
    per_period = rate * (bursts.every_s + (bursts.factor - 1) * bursts.length_s)
    return periods * per_period + rate * (into + (bursts.factor - 1) * min(into, bursts.length_s))


def run(
    gen: EventGenerator,
    send: Callable[[str, str, bytes], None],
    *,
    rate: float,
    max_events: int | None,
    max_seconds: float | None,
    bursts: Bursts | None = None,
    poll: Callable[[], None] = lambda: None,
    clock: Callable[[], float] = time.perf_counter,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Send events until ``max_events`` or ``max_seconds``; ``rate`` 0 means as fast as possible. Returns the figures.

    >>> sent = []
    >>> run(EventGenerator(100, seed=1), lambda *r: sent.append(r), rate=0, max_events=2500, max_seconds=None)["events"]
    2500
    """
    if max_events is None and max_seconds is None:
        raise ValueError("bound the load: give max_events, max_seconds or both")
    limit = max_events if max_events is not None else float("inf")
    sent, started = 0, clock()
    behind_max = 0
    while sent < limit:
        elapsed = clock() - started
        if max_seconds is not None and elapsed >= max_seconds:
            break
        due = int(min(limit, due_events(elapsed, rate, bursts) if rate else sent + 10_000)) - sent
        if due > 0:
            behind_max = max(behind_max, due)
            for record in gen.batch(due):
                send(*record)
            sent += due
        poll()
        if rate:
            sleep(TICK_S)
    elapsed = clock() - started
    return {
        "events": sent,
        "seconds": round(elapsed, 3),
        "achieved_rate": round(sent / elapsed) if elapsed > 0 else None,
        "target_rate": rate,
        "largest_catch_up_batch": behind_max,
        "distinct_customers": gen.distinct_customers,
        "type_counts": gen.type_counts(),
    }


def _kafka_sender(args: argparse.Namespace) -> tuple[Callable[[str, str, bytes], None], Callable[[], None], Callable[[], int]]:
    from confluent_kafka import Producer

    from crm_stream.config import settings as config
    from crm_stream.operators.io.kafka import client_config, ensure_topics

    settings = config.load(args.config)
    kafka = settings.kafka
    if args.bootstrap:
        from dataclasses import replace

        kafka = replace(kafka, bootstrap_servers=args.bootstrap)
    ensure_topics(kafka, partitions=args.partitions)
    topic_of = {role: getattr(kafka.topics, role) for role in ("clickstream", "purchases", "support", "control")}
    # A tracker-like producer: small linger, lz4; keyed by customer as the contract says.
    producer = Producer(
        {**client_config(kafka), "linger.ms": 5, "compression.type": "lz4", "queue.buffering.max.messages": 1_000_000}
    )

    def send(role: str, key: str, value: bytes) -> None:
        while True:
            try:
                producer.produce(topic_of[role], value, key)
                return
            except BufferError:
                producer.poll(0.01)

    return send, lambda: producer.poll(0), lambda: producer.flush(60)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m load.generate", description=__doc__.split("\n\n")[0])
    p.add_argument("--rate", type=float, default=10_000, help="events/s (0: as fast as possible; default 10,000)")
    p.add_argument("--seconds", type=float, help="stop after this long (default 60 unless --events is given)")
    p.add_argument("--events", type=int, help="stop after this many events")
    p.add_argument("--customers", type=int, default=1_000_000, help="distinct customer ids to draw from")
    p.add_argument("--distribution", choices=("uniform", "zipf"), default="uniform", help="how events pick customers")
    p.add_argument("--mix", choices=sorted(MIXES), default="clickstream-heavy")
    p.add_argument("--bursts", type=Bursts.parse, metavar="FACTOR,EVERY_S,LENGTH_S", help="e.g. 4,10,2: 4x for 2 s every 10 s")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--to", choices=("kafka", "file", "both"), help="default: kafka, or file when only --out is given")
    p.add_argument("--out", help="JSON-lines file of the events (for replay, or to produce later)")
    p.add_argument("--config", help="TOML settings for the Kafka client and topic names (default: config/default.toml + env)")
    p.add_argument("--bootstrap", help="Kafka bootstrap servers (overrides kafka.bootstrap_servers)")
    p.add_argument("--partitions", type=int, default=4, help="partitions of topics that have to be created (default 4)")
    args = p.parse_args(argv)
    to = args.to or ("file" if args.out and not args.bootstrap else "kafka")
    if to in ("file", "both") and not args.out:
        p.error("--to file needs --out FILE")
    if args.seconds is None and args.events is None:
        args.seconds = 60.0
    gen = EventGenerator(args.customers, seed=args.seed, distribution=args.distribution, weights=MIXES[args.mix])
    sinks: list[Callable[[str, str, bytes], None]] = []
    poll: Callable[[], None] = lambda: None
    finish: Callable[[], int] = lambda: 0
    fh: IO[bytes] | None = None
    if to in ("kafka", "both"):
        send, poll, finish = _kafka_sender(args)
        sinks.append(send)
    if to in ("file", "both"):
        fh = open(Path(args.out), "wb")
        write = fh.write
        sinks.append(lambda role, key, value: write(value + b"\n"))
    send_all = sinks[0] if len(sinks) == 1 else (lambda *record: [s(*record) for s in sinks] and None)
    try:
        result = run(
            gen, send_all, rate=args.rate, max_events=args.events, max_seconds=args.seconds, bursts=args.bursts, poll=poll
        )
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        undelivered = finish()
        if fh is not None:
            fh.close()
    mix = ", ".join(
        f"{k} {v / max(result['events'], 1):.1%}" for k, v in sorted(result["type_counts"].items(), key=lambda kv: -kv[1])
    )
    print(
        f"sent {result['events']:,} events in {result['seconds']:.1f}s ({result['achieved_rate'] or 0:,} ev/s, target "
        f"{'max' if not args.rate else format(args.rate, ',.0f')}{' with bursts' if args.bursts else ''}) to {to}; "
        f"{result['distinct_customers']:,} distinct customers; {undelivered} undelivered\nmix: {mix}"
    )
    return 1 if undelivered else 0


if __name__ == "__main__":
    sys.exit(main())
