"""The engine's logic alone, no Kafka, no Redis, no Bytewax: where each event's CPU time goes.

    python -m load.bench_hotpath [--events 200000] [--customers 1000000] [--train-fraction 0.1] [--profile]

Runs the same objects the dataflow runs (Router -> IdentityShard ->
ProfileShard per shard, effects encoded as for Redis) over events from the load
generator, in batches, on one core, and prints microseconds per event for each
stage beside the bare ``orjson.loads`` of the same bytes. This is the ceiling
one worker process can reach before any I/O: if the logic costs 40 us an event,
no source or sink makes the process faster than 25 k/s. ``--profile`` prints
the top functions (cProfile) instead of the clean timing.
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import gc
import pstats
import time
from typing import Any

import orjson

from crm_stream.config import settings as config
from crm_stream.operators.events.router import DEAD, Router
from crm_stream.operators.events.schema import Decoder
from crm_stream.operators.io.keys import KeySpace
from crm_stream.operators.io.stores import MemoryStore
from crm_stream.operators.profile.segments import ThresholdBoard
from crm_stream.operators.rules.return_spike import ReturnWatch
from crm_stream.operators.stages.identity import IdentityShard
from crm_stream.operators.stages.learning import SharedModels
from crm_stream.operators.stages.shard import ProfileShard
from load.generator import EventGenerator


class EncodingStore(MemoryStore):
    """A memory store that encodes like Redis does (JSON blobs), so encoding costs what it costs in production."""

    def encode(self, value: Any) -> Any:
        return value if isinstance(value, bytes) else orjson.dumps(value)

    def decode(self, stored: Any) -> Any:
        return orjson.loads(stored)

    def write(self, puts: dict[str, Any], deletes: Any = ()) -> None:
        # Profile blobs leave the engine for Redis, another process; keeping a million of them here would
        # charge this one for their memory (page faults counted as encoding). Every shard holds all its
        # customers in this run, so none is ever read back.
        super().write({k: v for k, v in puts.items() if ":profile:" not in k}, deletes)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=200_000)
    p.add_argument("--customers", type=int, default=1_000_000)
    p.add_argument("--batch", type=int, default=1000)
    p.add_argument("--train-fraction", type=float, default=0.1)
    p.add_argument("--no-models", action="store_true")
    p.add_argument("--profile", action="store_true", help="cProfile the run and print the top functions")
    args = p.parse_args(argv)

    settings = config.load(None, env={})
    settings = settings.replace(
        models=dataclasses.replace(settings.models, train_fraction=args.train_fraction, enabled=not args.no_models)
    )
    gen = EventGenerator(args.customers, seed=7)
    records = gen.batch(args.events)
    topics = sorted({topic for topic, _, _ in records})
    raws = [(topic, topics.index(topic), i, value) for i, (topic, _, value) in enumerate(records)]
    batches = [raws[i : i + args.batch] for i in range(0, len(raws), args.batch)]

    store = EncodingStore()
    keys = KeySpace("crm")
    e = settings.engine
    router = Router(Decoder(settings.currency_rates, e.base_currency, settings.kafka.max_message_bytes), e.shards)
    identities = [IdentityShard(store, keys, e.shards, e.anonymous_max_events) for _ in range(e.shards)]
    board, returns = ThresholdBoard(settings.segments), ReturnWatch()
    models = SharedModels(store, keys, settings.models, e.churn_horizon_days)
    shards = [ProfileShard(n, settings, store, keys, board=board, returns=returns, models=models) for n in range(e.shards)]

    gc.disable()
    t = {"bare orjson.loads": 0.0, "decode + route": 0.0, "identity": 0.0, "profiles + rules + models": 0.0, "store write": 0.0}
    profiler = cProfile.Profile() if args.profile else None
    started = time.perf_counter()
    if profiler:
        profiler.enable()
    for batch in batches:
        t0 = time.perf_counter()
        for _, _, _, value in batch:
            orjson.loads(value)
        t1 = time.perf_counter()
        routed = router.route(batch)
        t2 = time.perf_counter()
        to_profiles: dict[int, list[dict[str, Any]]] = {}
        clocks: dict[str, int] = {}
        puts: dict[str, Any] = {}
        for key, item in routed:
            if key == DEAD:
                continue
            shard, events, clocks = item.shard, item.events, item.clocks
            per_shard, effects = identities[shard].process(events, shard)
            for target, evs in per_shard.items():
                to_profiles.setdefault(target, []).extend(evs)
            puts.update((k, v) for op, k, v in effects if op == "put")
        t3 = time.perf_counter()
        for shard in shards:
            for op, k, v in shard.process(to_profiles.get(shard.shard, []), clocks):
                if op == "put":
                    puts[k] = v
        t4 = time.perf_counter()
        store.write(puts)
        t5 = time.perf_counter()
        for name, dt in zip(t, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4)):
            t[name] += dt
        if len(batches) > 20 and batch is batches[len(batches) // 2]:
            gc.collect()
            gc.freeze()
    if profiler:
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(35)
        return 0
    total = time.perf_counter() - started
    n = len(raws)
    logic = sum(v for k, v in t.items() if k != "bare orjson.loads")
    print(
        f"{n:,} events, {gen.distinct_customers:,} distinct customers, batch {args.batch}, models "
        f"{'off' if args.no_models else f'train {args.train_fraction:g}'}; {total:.1f}s"
    )
    for name, seconds in t.items():
        print(f"  {name:<28} {seconds / n * 1e6:7.2f} us/event")
    print(
        f"  {'logic in all':<28} {logic / n * 1e6:7.2f} us/event = ceiling {n / logic:,.0f} events/s on one core "
        f"({logic / t['bare orjson.loads']:.0f}x the bare decode)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
