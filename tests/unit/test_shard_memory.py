"""Profiles held between batches as their encoded blob (the mode a Redis-backed engine runs in)."""

from __future__ import annotations

import gc
from dataclasses import replace
from datetime import timedelta

from bytewax.testing import run_main

from crm_stream.config import settings as config
from crm_stream.flows.dataflow import build_flow
from crm_stream.operators.events.simulator import Shop
from crm_stream.operators.io import jsonutil
from crm_stream.operators.io.files import CollectingOutputs, FileReader
from crm_stream.operators.io.interface import MARKETING, SERVICE
from crm_stream.operators.io.stores import MemoryStore
from tests.events import purchase, view
from tests.unit.test_rules import SETTINGS, Harness

SIM = config.SimulatorSettings(customers=120, days=90, seed=3, bad_rate=0.01)


class BytesStore(MemoryStore):
    """A memory store that encodes like Redis (JSON bytes): shards then hold blobs, as against Redis."""

    def encode(self, value):
        return value if isinstance(value, bytes) else jsonutil.dumps_state(value)

    def decode(self, stored):
        return jsonutil.loads(stored)


def _run(store, path):
    outputs, shards = CollectingOutputs(), {}
    flow = build_flow(
        config.load(None, env={}),
        reader=FileReader(path, batch_size=50),
        outputs_factory=lambda w: outputs,
        store_provider=lambda: store,
        shard_registry=shards,
    )
    run_main(flow, epoch_interval=timedelta(seconds=10))
    alerts = [v for d in (SERVICE, MARKETING) for v in outputs.records.get(d, [])]
    profiles = {k: store.decode(v) if isinstance(v, bytes) else v for k, v in store.scan("crm:profile:")}
    return alerts, profiles, shards


def test_held_blobs_give_the_same_alerts_and_profiles_as_held_objects(tmp_path):
    path = tmp_path / "events.jsonl"
    Shop(SIM).write_files(path)
    alerts, profiles, objects = _run(MemoryStore(), path)
    held_alerts, held_profiles, held = _run(BytesStore(), path)
    assert alerts and held_alerts == alerts
    assert {k: jsonutil.loads(jsonutil.dumps(p)) for k, p in profiles.items()} == held_profiles
    assert all(not s.hold_encoded for s in objects.values()) and all(s.hold_encoded for s in held.values())
    kept = [p for s in held.values() for p in s.profiles.values()]
    assert kept and all(type(p) is bytes for p in kept)  # between batches memory holds only blobs
    gc.collect()  # and so the collector untracks the shard's dict: its passes never walk a million entries
    assert not any(gc.is_tracked(s.profiles) for s in held.values())
    assert sorted(p["customer_id"] for s in held.values() for p in s.held_profiles()) == sorted(
        p["customer_id"] for p in held_profiles.values()
    )


def test_held_blobs_are_evicted_and_read_back():
    settings = replace(SETTINGS, engine=replace(SETTINGS.engine, retention_days=2.0))
    h = Harness(settings)
    h.shard = type(h.shard)(0, settings, BytesStore(), h.shard.keys)
    h.shard.working_set.evict_every_s = 0.0
    h.feed(purchase("c1", amount=10, day=0), purchase("c1", amount=20, day=1))
    assert type(h.shard.profiles["c1"]) is bytes
    h.shard.store.write({k: v for t, k, v in h.out if t == "put"})  # what the sink does
    h.feed(view("c2", day=5))
    assert "c1" not in h.shard.profiles and h.shard.evicted == 1
    h.feed(purchase("c1", amount=30, day=6))
    [c1] = [p for p in h.shard.held_profiles() if p["customer_id"] == "c1"]
    assert c1["frequency"] == 3 and c1["monetary"] == 60
    gc.collect()
    h.feed(purchase("c1", amount=5, day=6.5), view("c9", day=6.5))  # a held customer decoded, a new one made...
    assert not gc.is_tracked(h.shard.profiles)  # ...outside the held dict: it stays untracked, never walked
    again = purchase("c1", amount=5, day=7)
    h.feed(again)
    seen = len(h.out)
    h.feed(again)  # the same event id again, at a new offset (a producer's retry): counted once...
    held = jsonutil.loads(h.shard.profiles["c1"])
    assert held["frequency"] == 5 and held["offsets"]["file#-1"] == h.line  # ...its offset kept, as with objects
    assert not [k for t, k, _ in h.out[seen:] if t == "put" and k == "crm:profile:c1"]  # nothing the store must see
    before = h.shard.profiles["c1"]
    h.shard.process([], {"file#-1": held["last_seen"]})  # nothing touches c1: the very same bytes stay
    assert h.shard.profiles["c1"] is before
