"""A fuzz run on the real engine: hostile records on Kafka beside valid ones, checked in Redis and on the topics.

Oversized messages, deep nesting, invalid UTF-8, NaN/Infinity, times far in
the past or future, absurd amounts, huge texts, wrong types and random bytes
go to the input topics of a running engine process, in two equal waves. The
engine must keep running, put every hostile record on the dead-letter topic
with a reason and its exact position, apply every valid event exactly once
(checked against the same events replayed in-process), and not grow its
memory with the second wave of the same hostile load.
"""

from __future__ import annotations

import random
import time
from datetime import timedelta
from pathlib import Path

import orjson
import redis
from bytewax.testing import run_main

from crm_stream.config import settings as config
from crm_stream.flows.dataflow import build_flow
from crm_stream.operators.io.files import CollectingOutputs, FileReader
from crm_stream.operators.io.kafka import ensure_topics, produce_records, read_topic
from crm_stream.operators.io.stores import MemoryStore
from tests.integration.engine_process import Engine, applied_events, engine_env, profiles_in_redis, wait_until_settled

MAX_BYTES = 20_000  # the engine's message limit in this test: oversized records are cheap to make
T0 = 1_767_225_600_000  # 2026-01-01


def _valid(rng: random.Random, n: int, wave: int) -> list[tuple[str, dict]]:
    out = []
    for i in range(n):
        customer = f"c-{rng.randrange(40)}"
        ts = T0 + (wave * n + i) * 60_000
        if i % 5 == 0:
            out.append(
                (
                    "purchases",
                    {
                        "event_id": f"w{wave}-p{i}",
                        "type": "purchase",
                        "customer_id": customer,
                        "ts": ts,
                        "order_id": f"o-{wave}-{i}",
                        "amount": 10.0 + i % 7,
                        "currency": "EUR",
                    },
                )
            )
        else:
            out.append(
                (
                    "clickstream",
                    {
                        "event_id": f"w{wave}-v{i}",
                        "type": "product_view",
                        "customer_id": customer,
                        "ts": ts,
                        "product_id": f"p{i % 9}",
                        "category": "books",
                    },
                )
            )
    return out


def _hostile(rng: random.Random, wave: int) -> list[bytes]:
    def ev(**fields: object) -> bytes:
        base = {
            "event_id": f"bad-{wave}-{rng.random()}",
            "type": "purchase",
            "customer_id": "c-evil",
            "ts": T0,
            "order_id": "o-evil",
            "amount": 1.0,
            "currency": "USD",
        }
        return orjson.dumps({**base, **fields})

    deep = (
        b'{"event_id":"deep","type":"page_view","customer_id":"c-1","ts":1767225600000,"url":' + b"[" * 5000 + b"]" * 5000 + b"}"
    )
    records = [
        b"x" * (MAX_BYTES + 1),  # oversized
        b'{"event_id": "big", "type": "page_view", "url": "' + b"u" * 50_000 + b'"}',
        deep,  # nesting beyond the parser's limit
        b'{"event_id": "\xff\xfe", "type": "page_view"}',  # invalid UTF-8
        b"\xc3\x28\xa0\xa1" * 50,
        b'{"event_id": "n", "type": "purchase", "customer_id": "c", "ts": 1767225600000, "order_id": "o", "amount": NaN, "currency": "USD"}',
        b'{"event_id": "i", "type": "purchase", "customer_id": "c", "ts": 1767225600000, "order_id": "o", "amount": Infinity, "currency": "USD"}',
        ev(amount=1e308 * 10),  # orjson writes null for inf: a null amount
        ev(amount=5e15),  # absurd
        ev(amount=-3),
        ev(ts=-5),  # before 1970
        ev(ts="9999-12-31T23:59:59Z"),  # far future
        ev(ts=T0 * 1000),  # microseconds, not milliseconds
        ev(ts="yesterday"),
        ev(type="page_view", url="u" * 300_000),  # a huge text (also oversized)
        ev(type="page_view", url="u" * 5_000),  # a text over its field's limit
        ev(type="no_such_type"),
        ev(customer_id=None),
        ev(items=[{"product_id": "p", "category": "c", "price": "free", "quantity": 1}]),
        b"[1, 2, 3]",
        b"",
        bytes(rng.randrange(256) for _ in range(200)),  # random bytes
    ]
    return records


def _expected(valid: list[tuple[str, dict]], tmp_path: Path) -> dict[str, tuple]:
    path = tmp_path / "valid.jsonl"
    path.write_bytes(b"".join(orjson.dumps(e) + b"\n" for _, e in valid))
    store = MemoryStore()
    run_main(
        build_flow(
            config.load(None, env={}),
            reader=FileReader(path),
            outputs_factory=lambda w: CollectingOutputs(),
            store_provider=lambda: store,
        ),
        epoch_interval=timedelta(seconds=10),
    )
    return {k.rsplit(":", 1)[1]: _numbers(v) for k, v in store.scan("crm:profile:")}


def _numbers(p: dict) -> tuple:
    return p["frequency"], round(p["monetary"], 2), p["events"], p["type_counts"]


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_hostile_records_on_kafka_are_dead_lettered_and_valid_ones_applied_once(kafka_settings, redis_url, tmp_path):
    rng = random.Random(13)
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    ensure_topics(kafka_settings, partitions=2)
    topics = kafka_settings.topics
    env = engine_env(kafka_settings, redis_url, tmp_path / "recovery", CRM_STREAM__KAFKA__MAX_MESSAGE_BYTES=str(MAX_BYTES))
    engine = Engine(env, tmp_path / "engine.log")
    engine.start()
    valid_all: list[tuple[str, dict]] = []
    hostile_count, rss = 0, []
    try:
        for wave in range(2):
            valid = _valid(rng, 300, wave)
            hostile = _hostile(rng, wave) * 5
            valid_all += valid
            records = [(getattr(topics, role), e["customer_id"], orjson.dumps(e)) for role, e in valid]
            for i, raw in enumerate(hostile):  # spread over every input topic, between valid records
                records.insert(rng.randrange(len(records) + 1), (topics.inputs()[i % 4], None, raw))
            produce_records(kafka_settings, records)
            hostile_count += len(hostile)
            applied = wait_until_settled(client, engine, len(valid_all), timeout_s=120)
            assert applied == len(valid_all), f"{applied} of {len(valid_all)} applied: {engine.log_tail()}"
            time.sleep(0.5)
            engine.assert_running()
            rss.append(_rss_kib(engine.proc.pid))  # type: ignore[union-attr]
        dead = [orjson.loads(v) for _, v in read_topic(kafka_settings, topics.deadletter, timeout_s=10)]
    finally:
        engine.kill()
    assert len(dead) == hostile_count
    for record in dead:
        assert record["reason"] and "internal error" not in record["reason"]
        assert record["topic"] in topics.inputs() and isinstance(record["partition"], int) and isinstance(record["offset"], int)
        assert f"{record['topic']}[{record['partition']}]@{record['offset']}" in record["reason"]
        assert isinstance(record["raw"], str) and len(record["raw"]) <= 2 * MAX_BYTES  # oversized raw is truncated
    positions = {(r["topic"], r["partition"], r["offset"]) for r in dead}
    assert len(positions) == len(dead)  # each reject once, at its own position
    assert {c: _numbers(p) for c, p in profiles_in_redis(client).items()} == _expected(valid_all, tmp_path)
    assert applied_events(client) == len(valid_all)
    # The second wave of the same hostile load must not grow memory by more than a sliver (no unbounded buffers).
    assert rss[1] - rss[0] < 40_000, f"engine RSS grew {rss[1] - rss[0]} KiB between two equal waves"
    client.close()
