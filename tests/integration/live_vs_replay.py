"""Live against replay, per alert kind: the same simulated shop through ``crm-stream replay`` and through the live
engine (Tansu + Redis, several partitions per topic), and how many alert ids the two have in common.

Used by tests/integration/test_engine_kafka_redis.py, and runnable on its own to print the table (it starts its
own redis-server and Tansu)::

    .venv/bin/python -m tests.integration.live_vs_replay            # the 150-day shop of scenario.py, 3 partitions
    .venv/bin/python -m tests.integration.live_vs_replay --runs 2 --partitions 4

Only alerts whose time (``send_at`` for a held trigger, else ``ts``) is a day before the end of both runs are
compared: replay stops at the end of its file with the timers of the last hours still pending (its watermark
trails the last event by the allowed lateness, and a segment check waits for the day's lines), while a live
engine goes on firing them once its idle partitions stop holding the clock back.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import tempfile
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import redis
from bytewax.testing import run_main

from crm_stream.config import settings as config
from crm_stream.config.settings import KafkaSettings
from crm_stream.flows.dataflow import build_flow
from crm_stream.flows.runtime import replay
from crm_stream.operators.events.schema import DeadLetter, Decoder, Origin
from crm_stream.operators.events.simulator import Shop
from crm_stream.operators.events.timeutil import MS_PER_DAY, MS_PER_HOUR, parse_ts
from crm_stream.operators.io.files import CollectingOutputs
from crm_stream.operators.io.interface import MARKETING, SERVICE, Raw
from crm_stream.operators.io.kafka import ensure_topics, produce_records, read_topic
from crm_stream.operators.io.stores import MemoryStore
from tests.integration.engine_process import Engine, engine_env


@dataclass
class Agreement:
    """One kind's alert ids, live and replayed (those the final live watermark passed)."""

    kind: str
    replayed: int
    live: int
    common: int

    @property
    def share(self) -> float:
        """Ids in common over the larger of the two sets (1.0 when both are empty)."""
        larger = max(self.replayed, self.live)
        return self.common / larger if larger else 1.0

    def line(self) -> str:
        return f"{self.kind:<20} replay {self.replayed:>5}  live {self.live:>5}  common {self.common:>5}  {self.share:7.1%}"


def replay_end(events: Path, settings: config.Settings) -> int:
    """The event time the replay's final watermark passed: timers up to there fired (as in ``ProfileShard``)."""
    return (final_event_ms(events, settings) - settings.engine.allowed_lateness_ms) // MS_PER_HOUR * MS_PER_HOUR


def final_event_ms(events: Path, settings: config.Settings) -> int:
    decoder = Decoder(settings.currency_rates, settings.engine.base_currency, settings.kafka.max_message_bytes)
    decoded = (decoder.decode(line, Origin("file", line=n)) for n, line in enumerate(events.read_bytes().splitlines(), 1))
    return max(e["ts"] for e in decoded if not isinstance(e, DeadLetter))


def replayed_alerts(events: Path, env: dict[str, str], out_dir: Path) -> list[dict[str, Any]]:
    settings = config.load(None, env=env)
    replay(settings, events, alerts_out=out_dir / "alerts.jsonl", profiles_out=out_dir / "profiles.jsonl")
    return [orjson.loads(line) for line in (out_dir / "alerts.jsonl").read_bytes().splitlines()]


def fired_through(client: redis.Redis, shards: int) -> list[int]:
    blobs = client.mget([f"crm:shard:{n}" for n in range(shards)])
    return [orjson.loads(b).get("fired_through") or -1 for b in blobs if b]


def output_alerts(kafka: KafkaSettings) -> list[dict[str, Any]]:
    topics = (kafka.topics.service_alerts, kafka.topics.marketing_triggers)
    return [orjson.loads(v) for topic in topics for _, v in read_topic(kafka, topic, timeout_s=10) if v]


def live_alerts(
    sim: config.SimulatorSettings,
    kafka: KafkaSettings,
    redis_url: str,
    client: redis.Redis,
    env: dict[str, str],
    work: Path,
    *,
    partitions: int,
    last_ts: int,
    timeout_s: float = 300.0,
) -> tuple[list[dict[str, Any]], int]:
    """The shop through the live engine; returns its alerts and the event time its final watermark passed."""
    settings = config.load(None, env=env)
    ensure_topics(kafka, partitions=partitions)
    topics = kafka.topics
    produce_records(kafka, ((getattr(topics, role), key, value) for role, key, value in Shop(sim).records()))
    engine = Engine(engine_env(kafka, redis_url, work / "recovery", **env), work / "engine.log")
    engine.start()
    try:
        # Once every partition is caught up and idle, the watermark is the newest event time minus the lateness.
        final_hour = (last_ts - settings.engine.allowed_lateness_ms) // MS_PER_HOUR - 1
        deadline = time.monotonic() + timeout_s
        while min(fired_through(client, settings.engine.shards), default=-1) < final_hour:
            engine.assert_running()
            assert time.monotonic() < deadline, f"timers stopped short of hour {final_hour}: {engine.log_tail()}"
            time.sleep(0.5)
        passed = (min(fired_through(client, settings.engine.shards)) + 1) * MS_PER_HOUR
        # The sink writes outputs before state: the shard records say the timers fired, so their alerts are out.
        # Read until two reads agree (the model snapshot and the last batches may still be in flight).
        alerts, previous = output_alerts(kafka), -1
        while len(alerts) != previous:
            previous = len(alerts)
            time.sleep(1.0)
            alerts = output_alerts(kafka)
        return alerts, passed
    finally:
        engine.kill()


def compare(replayed: list[dict[str, Any]], live: list[dict[str, Any]], until: int) -> dict[str, Agreement]:
    """Per kind, the ids of alerts timed up to ``until`` (ms)."""

    def by_kind(alerts: list[dict[str, Any]]) -> dict[str, set[str]]:
        out: dict[str, set[str]] = collections.defaultdict(set)
        for a in alerts:
            if parse_ts(a.get("send_at") or a["ts"]) <= until:
                out[a["kind"]].add(a["alert_id"])
        return out

    r, live_ids = by_kind(replayed), by_kind(live)
    return {
        kind: Agreement(kind, len(r[kind]), len(live_ids[kind]), len(r[kind] & live_ids[kind]))
        for kind in sorted(set(r) | set(live_ids))
    }


class _Partition:
    def __init__(self, records: list[Raw], batch_size: int) -> None:
        self.records, self.batch_size, self.at = records, batch_size, 0

    def read_batch(self) -> list[Raw]:
        batch = self.records[self.at : self.at + self.batch_size]
        self.at += len(batch)
        return batch

    def position(self) -> int:
        return self.at

    def done(self) -> bool:
        return self.at >= len(self.records)

    def close(self) -> None:
        pass


class InterleavedReader:
    """The shop's records as Kafka would hold them (topic role x ``partitions``, by key), read a batch per partition
    in turn: as in the live engine, a topic with fewer events per hour (purchases) runs ahead in event time."""

    def __init__(self, sim: config.SimulatorSettings, partitions: int = 3, batch_size: int = 500) -> None:
        self.parts: dict[str, list[Raw]] = collections.defaultdict(list)
        for n, (role, key, value) in enumerate(Shop(sim).records()):
            p = zlib.crc32(key.encode()) % partitions if key else n % partitions
            part = self.parts[f"{role}#{p}"]
            part.append(Raw(role, p, len(part), value))
        self.batch_size = batch_size

    def partitions(self) -> list[str]:
        return sorted(self.parts)

    def open(self, partition: str, position: Any | None) -> _Partition:
        return _Partition(self.parts[partition], self.batch_size)


def interleaved_alerts(
    sim: config.SimulatorSettings, env: dict[str, str], partitions: int = 3, batch_size: int = 500
) -> tuple[list[dict[str, Any]], int]:
    """The live engine's dataflow in-process (memory store), fed partition by partition: its alerts, and the event
    time its final watermark passed. No servers: it isolates what the order of reading alone changes."""
    settings = config.load(None, env=env)
    store, shards, outputs = MemoryStore(), {}, CollectingOutputs()
    flow = build_flow(
        settings,
        reader=InterleavedReader(sim, partitions, batch_size),
        outputs_factory=lambda w: outputs,
        store_provider=lambda: store,
        shard_registry=shards,
    )
    run_main(flow, epoch_interval=timedelta(seconds=10))
    alerts = [orjson.loads(v) for d in (SERVICE, MARKETING) for v in outputs.records.get(d, [])]
    passed = (min(s.wheel.fired_through for s in shards.values()) + 1) * MS_PER_HOUR
    return alerts, passed


def dump_alerts(path: Path, alerts: list[dict[str, Any]]) -> None:
    """The live side's alerts, one a line, beside the replay's ``alerts.jsonl`` (``--keep`` leaves both to diff)."""
    path.write_bytes(b"".join(orjson.dumps(a, option=orjson.OPT_SORT_KEYS) + b"\n" for a in alerts))


def run_once(
    sim: config.SimulatorSettings,
    kafka: KafkaSettings,
    redis_url: str,
    client: redis.Redis,
    env: dict[str, str],
    work: Path,
    partitions: int = 3,
) -> dict[str, Agreement]:
    events = work / "events.jsonl"
    Shop(sim).write_files(events)
    settings = config.load(None, env=env)
    replayed = replayed_alerts(events, env, work)
    last_ts = final_event_ms(events, settings)
    live, passed = live_alerts(sim, kafka, redis_url, client, env, work, partitions=partitions, last_ts=last_ts)
    dump_alerts(work / "live_alerts.jsonl", live)
    return compare(replayed, live, min(passed, replay_end(events, settings)) - MS_PER_DAY)


def main() -> None:  # pragma: no cover - a measuring tool
    from tests.integration.conftest import RedisServer, TansuBroker, make_kafka_settings, redis_binary, tansu_binary
    from tests.integration.scenario import ENV, SIM

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--customers", type=int, default=SIM.customers)
    parser.add_argument("--days", type=int, default=SIM.days)
    parser.add_argument("--seed", type=int, default=SIM.seed)
    parser.add_argument("--in-process", action="store_true", help="no servers: the dataflow fed partition by partition")
    parser.add_argument("--uncapped", action="store_true", help="lift the governance caps (rules compared alone)")
    parser.add_argument(
        "--keep", type=Path, help="work in this folder and keep both sides' alerts (run*/alerts.jsonl, live_alerts.jsonl)"
    )
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a CRM_STREAM__ setting for both")
    args = parser.parse_args()
    sim = config.SimulatorSettings(customers=args.customers, days=args.days, seed=args.seed, bad_rate=SIM.bad_rate)
    env = dict(ENV, **dict(kv.split("=", 1) for kv in args.set))
    if args.uncapped:
        env.update(
            CRM_STREAM__GOVERNANCE__DAILY_CAP="1000",
            CRM_STREAM__GOVERNANCE__WEEKLY_CAP="1000",
            CRM_STREAM__GOVERNANCE__LOW_FREQUENCY_WEEKLY_CAP="1000",
        )
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
    if args.in_process:
        with _workdir(args.keep) as tmp:
            events = Path(tmp) / "events.jsonl"
            Shop(sim).write_files(events)
            replayed = replayed_alerts(events, env, Path(tmp))
            live, passed = interleaved_alerts(sim, env, args.partitions)
            dump_alerts(Path(tmp) / "live_alerts.jsonl", live)
            until = min(passed, replay_end(events, config.load(None, env=env))) - MS_PER_DAY
            print(f"in-process, {args.partitions} partitions per topic")
            for agreement in compare(replayed, live, until).values():
                print("  " + agreement.line())
        return
    with _workdir(args.keep) as tmp:
        servers = RedisServer(redis_binary(), log_dir=tmp), TansuBroker(tansu_binary(), log_dir=tmp)
        for server in servers:
            server.start()
        try:
            client = redis.Redis.from_url(servers[0].url)
            for run in range(args.runs):
                client.flushdb()
                work = Path(tmp) / f"run{run}"
                work.mkdir(exist_ok=True)
                started = time.monotonic()
                table = run_once(
                    sim, make_kafka_settings(servers[1].bootstrap), servers[0].url, client, env, work, args.partitions
                )
                print(f"run {run + 1} ({time.monotonic() - started:.0f} s, {args.partitions} partitions per topic)")
                for agreement in table.values():
                    print("  " + agreement.line())
        finally:
            for server in servers:
                server.stop()


@contextlib.contextmanager
def _workdir(keep: Path | None) -> Iterator[str]:
    if keep is not None:
        yield str(keep)
        return
    with tempfile.TemporaryDirectory(prefix="live-vs-replay-") as tmp:
        yield tmp


if __name__ == "__main__":  # pragma: no cover
    main()
