"""Erasure, access and consent on real Redis (and, end to end, a real Kafka-protocol broker and engine process)."""

from __future__ import annotations

import signal
import subprocess
import time
import zlib
from datetime import timedelta

import orjson
import redis
from bytewax.testing import run_main

from crm_stream.config import settings as config
from crm_stream.flows.dataflow import build_flow
from crm_stream.operators.io.files import CollectingOutputs, FileReader
from crm_stream.operators.io.interface import MARKETING
from crm_stream.operators.io.kafka import ensure_topics, produce_records, read_topic
from crm_stream.operators.io.stores import RedisStore
from tests.events import event, lines, purchase, view
from tests.integration.engine_process import CLI, ROOT, Engine, engine_env

WHO = "cust-erase-7f3a"  # distinctive: no other key or value can contain it by chance
VISITOR = "anon-erase-7f3a"
OTHER = "cust-keep-42b1"


def _wait(condition, what: str, engine: Engine | None = None, timeout_s: float = 60.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if engine is not None:
            engine.assert_running()
        value = condition()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}" + (f"; engine log: {engine.log_tail()}" if engine else ""))


def _readable(blob: bytes) -> bytes:
    """A value as stored, and decompressed too when it is compressed (model snapshots may be)."""
    for wbits in (zlib.MAX_WBITS, -zlib.MAX_WBITS, zlib.MAX_WBITS | 16):
        try:
            return blob + zlib.decompress(blob, wbits)
        except zlib.error:
            continue
    return blob


def _mentions(client: redis.Redis, needle: str) -> list[str]:
    """Every key whose name or value (strings, hashes, lists, sets, sorted sets) contains ``needle``."""
    found, raw = [], needle.encode()
    for key in client.scan_iter(match="*", count=1000):
        kind = client.type(key)
        if kind == b"string":
            values = [client.get(key) or b""]
        elif kind == b"hash":
            values = [b for kv in client.hgetall(key).items() for b in kv]
        elif kind == b"list":
            values = client.lrange(key, 0, -1)
        elif kind in (b"set", b"zset"):
            values = list(client.smembers(key)) if kind == b"set" else [m for m, _ in client.zrange(key, 0, -1, withscores=True)]
        else:
            values = []
        if raw in key or any(raw in _readable(v) for v in values):
            found.append(key.decode())
    return found


def _customer_events(cid: str, anonymous_id: str) -> list[tuple[str, dict]]:
    """(topic role, event) for a customer with a profile, a visitor link, timers, pending model predictions."""
    return [
        ("clickstream", event("product_view", None, anonymous_id=anonymous_id, product_id="p1", category="books", day=0.5)),
        ("control", event("identify", cid, anonymous_id=anonymous_id, day=0.6)),
        ("control", event("consent", cid, marketing_email=True, day=0.7)),
        ("purchases", purchase(cid, amount=30.0, day=1)),
        ("clickstream", view(cid, category="garden", day=3)),
        ("purchases", purchase(cid, amount=45.0, day=6)),  # resolves the day-1 prediction: the model learns, a snapshot follows
    ]


def _produce(kafka, items) -> None:
    topics = kafka.topics
    produce_records(
        kafka, ((getattr(topics, role), ev.get("customer_id") or ev.get("anonymous_id"), orjson.dumps(ev)) for role, ev in items)
    )


def _cli(env, *args):
    done = subprocess.run(CLI + list(args), env=env, cwd=ROOT, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return orjson.loads(done.stdout)


def test_erasure_end_to_end_leaves_nothing_and_tombstones_the_outputs(kafka_settings, redis_url, fresh_redis, tmp_path):
    ensure_topics(kafka_settings, partitions=1)
    audit_path = tmp_path / "audit.jsonl"
    env = engine_env(kafka_settings, redis_url, tmp_path / "recovery", CRM_STREAM__MODELS__SNAPSHOT_EVERY_S="0.2")
    # A later view of the other customer moves event time past the day-6 purchases and the allowed lateness: the
    # models learn a label only once every shard's watermark has passed it, and the snapshot follows that learning.
    later = [("clickstream", view(OTHER, category="garden", day=6.5))]
    _produce(kafka_settings, _customer_events(WHO, VISITOR) + _customer_events(OTHER, "anon-keep-42b1") + later)
    engine = Engine(env, tmp_path / "engine.log")
    engine.start()
    try:
        _wait(lambda: fresh_redis.get(f"crm:profile:{WHO}") and fresh_redis.get(f"crm:anon:{VISITOR}"), "the profile", engine)
        _wait(
            lambda: WHO.encode() in (fresh_redis.get("crm:model:customer") or b""),
            "a model snapshot holding the customer",
            engine,
        )
        assert len(_mentions(fresh_redis, WHO)) >= 4  # profile, visitor link, timer bucket(s), model snapshot: the test has teeth

        # Access: the export is what Redis holds, and it is audited. The engine is still running (a timer may fire as
        # the idle partitions stop holding the clock back), so compare with a profile that did not change meanwhile.
        # A timer bucket can go as its hour fires without the profile changing (an entry the profile had moved on from),
        # so the buckets are read in the same window as the profile.
        for _ in range(20):
            before = fresh_redis.get(f"crm:profile:{OTHER}")
            exported = _cli(env, "export-customer", OTHER, "--actor", "agent:dpo")
            buckets = {key: fresh_redis.get(key) for key in exported["timers"]["index"]}
            if fresh_redis.get(f"crm:profile:{OTHER}") == before and all(buckets.values()):
                break  # nothing moved while the export ran: what it says can be held against Redis
        assert exported["profile"] == orjson.loads(before)
        assert exported["visitor_links"] == {"anon-keep-42b1": orjson.loads(fresh_redis.get("crm:anon:anon-keep-42b1"))}
        assert exported["timers"]["index"] and all(
            orjson.loads(buckets[key])[OTHER] == deadline for key, deadline in exported["timers"]["index"].items()
        )
        assert exported["view"]["frequency"] == 2 and exported["pending_predictions"]
        assert _cli(env, "profile", OTHER)["customer_id"] == OTHER

        fresh_redis.set(f"crm:claim:{WHO}", b'{"agent": "alice"}', ex=600)  # an agent's console claim names them too
        _produce(kafka_settings, [("control", event("erasure_request", WHO, day=7))])
        _wait(lambda: fresh_redis.get(f"crm:profile:{WHO}") is None, "the profile to be deleted", engine)
        _wait(lambda: not _mentions(fresh_redis, WHO), "every key about the customer to go (model snapshot included)", engine)
        assert not _mentions(fresh_redis, VISITOR)
        assert fresh_redis.get(f"crm:profile:{OTHER}") and _mentions(fresh_redis, OTHER)  # nobody else was touched

        topics = kafka_settings.topics
        for topic in (topics.service_alerts, topics.marketing_triggers):
            _wait(lambda topic=topic: (WHO, b"") in read_topic(kafka_settings, topic, timeout_s=5), f"a tombstone on {topic}")

        # Later events start from nothing.
        _produce(kafka_settings, [("purchases", purchase(WHO, amount=12.0, day=8))])
        fresh = _wait(lambda: fresh_redis.get(f"crm:profile:{WHO}"), "the new profile", engine)
        fresh = orjson.loads(fresh)
        assert fresh["frequency"] == 1 and fresh["monetary"] == 12.0 and VISITOR not in repr(fresh)
        assert not fresh.get("anonymous_ids") and not fresh.get("merged_anonymous_ids")
    finally:
        engine.kill()
    records = [orjson.loads(line) for line in audit_path.read_bytes().splitlines()]
    assert [(r["action"], r["actor"], r["customer_id"]) for r in records if r["action"] == "erasure"] == [
        ("erasure", "engine", WHO)
    ]
    assert ("export", "agent:dpo", OTHER) in [(r["action"], r["actor"], r["customer_id"]) for r in records]
    assert any(r["action"] == "profile_read" and r["customer_id"] == OTHER for r in records)


GONE = [f"cust-gone-{i}-5d2c" for i in range(6)]  # distinctive, as WHO
STAYS = [f"cust-stays-{i}-5d2c" for i in range(3)]


def _pending(client: redis.Redis) -> dict[str, int]:
    """Customer id -> open predictions in the stored model snapshot, decoded as the engine restores it."""
    from crm_stream.models.hub import ModelHub

    blob = client.get("crm:model:customer")
    hub = ModelHub.restore(blob) if blob else None
    return {c: len(hub.pending.entries(c)) for c in hub.pending.customer_ids()} if hub else {}


def test_erasures_then_kill_9_before_the_model_snapshot_leave_nothing_after_the_restart(
    kafka_settings, redis_url, fresh_redis, tmp_path
):
    """Issue 14, item 2. Erasures carried out, then ``kill -9`` before the model snapshot without the customers was
    written (it follows an erasure within ERASURE_SNAPSHOT_MIN_S): the stored snapshot still names them, and the
    restart skips the re-read erasures as done. The restart must forget them again from the shard records' guards,
    so that nothing in Redis names them once it runs, and after a graceful stop."""
    ensure_topics(kafka_settings, partitions=1)
    env = engine_env(kafka_settings, redis_url, tmp_path / "recovery", CRM_STREAM__MODELS__SNAPSHOT_EVERY_S="0.2")
    items = [item for cid in GONE + STAYS for item in _customer_events(cid, f"anon-{cid}")]
    # Event time goes on past the day-6 purchases (and the allowed lateness): the models learn a label only once
    # every shard's watermark has passed it, and the snapshot that names everyone follows that learning.
    items.append(("clickstream", view(STAYS[0], category="garden", day=6.5)))
    _produce(kafka_settings, items)
    engine = Engine(env, tmp_path / "engine.log")
    engine.start()
    try:
        _wait(lambda: set(GONE + STAYS) <= set(_pending(fresh_redis)), "a model snapshot holding every customer", engine, 120)
        # The first erasure's snapshot goes out at once; the rest fall within ERASURE_SNAPSHOT_MIN_S of it.
        _produce(kafka_settings, [("control", event("erasure_request", GONE[0], day=7))])
        _wait(lambda: fresh_redis.get(f"crm:profile:{GONE[0]}") is None, "the first erasure", engine)
        _produce(kafka_settings, [("control", event("erasure_request", cid, day=7.1)) for cid in GONE[1:]])
        _wait(lambda: not any(fresh_redis.get(f"crm:profile:{c}") for c in GONE), "the other erasures", engine, 30)
    finally:
        engine.kill()  # SIGKILL
    stale = [c for c in GONE if c in _pending(fresh_redis)]
    assert stale, "the test must kill the engine inside the window where the stored snapshot still names them"

    engine = Engine(env, tmp_path / "engine2.log")
    engine.start()
    try:
        _produce(kafka_settings, [("clickstream", view(STAYS[0], category="garden", day=8))])  # the stream goes on
        _wait(lambda: not any(_mentions(fresh_redis, c) for c in GONE), "every key to forget the erased customers", engine)
        assert set(STAYS) <= set(_pending(fresh_redis))  # the model kept everyone else
    finally:
        engine.kill(signal.SIGTERM)
    assert not any(_mentions(fresh_redis, c) for c in GONE)
    assert not set(GONE) & set(_pending(fresh_redis))
    for cid in GONE:
        assert f"anon-{cid}" not in repr(_pending(fresh_redis)) and not _mentions(fresh_redis, f"anon-{cid}")


def _redis_settings(redis_url: str) -> config.Settings:
    base = config.load(None, env={"CRM_STREAM__STORE__KIND": "redis", "CRM_STREAM__STORE__URL": redis_url})
    return base.replace(engine=base.engine.__class__(**{**vars(base.engine), "allowed_lateness_ms": 0}))


class _Appended:
    """The file as a partition that grows between runs: each run reads only the lines added since the last."""

    def __init__(self, path) -> None:
        self.path, self.read = path, 0
        path.write_bytes(b"")

    def add(self, events) -> _Appended:
        with open(self.path, "ab") as fh:
            fh.write(lines(events))
        return self

    def partitions(self):
        return FileReader(self.path).partitions()

    def open(self, partition, position):
        part = FileReader(self.path, batch_size=4).open(partition, self.read)
        self.read = sum(1 for _ in open(self.path, "rb"))
        return part


def _run(settings, source, store) -> CollectingOutputs:
    outputs = CollectingOutputs()
    flow = build_flow(settings, reader=source, outputs_factory=lambda w: outputs, store_provider=lambda: store)
    run_main(flow, epoch_interval=timedelta(seconds=1))
    return outputs


def test_erasure_and_a_later_life_on_redis_without_kafka(redis_url, fresh_redis, tmp_path):
    settings = _redis_settings(redis_url)
    store = RedisStore(redis_url)
    source = _Appended(tmp_path / "events.jsonl")
    _run(settings, source.add([ev for _, ev in _customer_events(WHO, VISITOR)] + [view(OTHER, day=2)]), store)
    assert len(_mentions(fresh_redis, WHO)) >= 4
    outputs = _run(settings, source.add([event("erasure_request", WHO, day=7)]), store)  # a new run: reads the snapshot back
    assert (MARKETING, WHO) in outputs.tombstones
    assert not _mentions(fresh_redis, WHO) and not _mentions(fresh_redis, VISITOR)
    _run(settings, source.add([purchase(WHO, amount=3.0, day=9)]), store)
    assert orjson.loads(fresh_redis.get(f"crm:profile:{WHO}"))["frequency"] == 1


def test_an_opted_out_customer_receives_no_trigger_even_one_scheduled_earlier(redis_url, fresh_redis, tmp_path):
    settings = _redis_settings(redis_url)
    store = RedisStore(redis_url)
    cid, twin = "cust-optout-1", "cust-stays-2"  # the twin behaves alike and does not opt out: a trigger reaches them
    evs = []
    for who in (cid, twin):
        evs += [event("consent", who, marketing_email=True, day=0.5)]
        evs += [view(who, category="x", day=d + 20 / 24) for d in range(3)]  # usually active at 20:00 UTC
        evs += [
            event("add_to_cart", who, product_id="p-cam", category="cameras", price=10.0, quantity=1, day=10 + 1 / 24 + i * 0.001)
            for i in range(5)
        ]
    evs.append(view("someone-else", day=12 + 2 / 24))  # the stream's clock passes the window: the trigger is held for ~20:00
    source = _Appended(tmp_path / "events.jsonl")
    assert not _run(settings, source.add(evs), store).records.get(MARKETING)
    held = orjson.loads(fresh_redis.get(f"crm:profile:{cid}"))["scheduled"]
    assert held, "the trigger should be scheduled (held in the profile in Redis) before the opt-out"
    outputs = _run(
        settings, source.add([event("consent", cid, marketing_email=False, day=12 + 3 / 24), view("someone-else", day=15)]), store
    )
    sent = [orjson.loads(v) for v in outputs.records.get(MARKETING, [])]
    assert [t["customer_id"] for t in sent] == [twin]
    assert orjson.loads(fresh_redis.get(f"crm:profile:{cid}"))["scheduled"] == {}
