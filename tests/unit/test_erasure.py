"""Right to erasure, place by place in memory, and in the dataflow; consent acting on held triggers."""

from __future__ import annotations

from datetime import timedelta

from bytewax.testing import run_main

from crm_stream.flows.dataflow import build_flow
from crm_stream.flows.runtime import replay
from crm_stream.models.hub import ModelHub
from crm_stream.operators.events.router import Router, shard_key
from crm_stream.operators.events.schema import Decoder
from crm_stream.operators.events.timeutil import MS_PER_DAY, MS_PER_HOUR
from crm_stream.operators.io import jsonutil
from crm_stream.operators.io.effects import EffectsWriter
from crm_stream.operators.io.files import CollectingOutputs, FileOutputs, FileReader
from crm_stream.operators.io.interface import AUDIT, MARKETING, SERVICE
from crm_stream.operators.io.keys import KeySpace
from crm_stream.operators.io.stores import MemoryStore
from crm_stream.operators.privacy.access import export_customer
from crm_stream.operators.privacy.erasure import erasure_token as _erasure_token
from crm_stream.operators.profile.state import SOURCE, SOURCE_OFFSET
from crm_stream.operators.stages.identity import ERASE_LINKS_ONLY, IdentityShard
from crm_stream.operators.stages.shard import ProfileShard
from tests.events import T0, event, lines, purchase, view
from tests.unit.test_rules import SETTINGS, Harness, _interest, opt_in

KEYS = KeySpace("crm")


def _busy(h: Harness, cid: str = "c1") -> None:
    """A customer with something in every place: purchases, pending predictions, timers, a held trigger."""
    h.feed(opt_in(cid, day=0.5), *[view(cid, category="x", day=d + 20 / 24) for d in range(3)])
    h.feed(purchase(cid, amount=40, day=3), purchase(cid, amount=60, day=8))
    _interest(h, cid, 10 + 1 / 24)
    h.advance(T0 + 12 * MS_PER_DAY + 2 * MS_PER_HOUR)  # the interest window passed: a trigger held until ~20:00


def _mentions(value: object, needle: str) -> bool:
    return needle in repr(value)


def test_erasure_forgets_every_in_memory_place_and_says_so_downstream():
    h = Harness()
    _busy(h)
    shard, profile = h.shard, h.shard.profiles["c1"]
    assert profile["scheduled"] and profile["timers"] and profile["seen_ids"]
    assert shard.models.hub.pending.entries("c1") and any("c1" in b for b in shard.wheel.buckets.values())
    h.out.clear()
    h.feed(event("erasure_request", "c1", day=12.2))
    assert "c1" not in shard.profiles and "c1" not in shard.working_set.touched
    assert not any(_mentions(b, "c1") for b in shard.wheel.buckets.values())
    assert shard.models.hub.pending.entries("c1") == []
    shard.models.hub.pending.advance(T0 + 13 * MS_PER_DAY)
    assert not _mentions(shard.models.hub.pending._due, "'c1'")
    assert not _mentions(shard.stats.to_dict(), "c1")
    assert (SERVICE, "c1", None) in h.out and (MARKETING, "c1", None) in h.out
    assert ("del", "crm:profile:c1", None) in h.out
    [(_, who, detail)] = [e for e in h.out if e[0] == AUDIT]
    assert who == "c1" and detail["profile"] and detail["timer_entries"] >= 1 and detail["pending_predictions"] >= 1
    snapshot = [v for t, k, v in h.out if t == "put" and k == "crm:model:customer"]
    assert snapshot and b"c1" not in snapshot[0]  # the model snapshot is replaced at once, without the customer
    record = [v for t, k, v in h.out if t == "put" and k == "crm:shard:0"][-1]
    assert not _mentions(record, "c1") and _erasure_token("c1") in record["erasures"]
    h.out.clear()
    h.advance(T0 + 14 * MS_PER_DAY)
    assert h.alerts(destination=MARKETING) == []  # the held trigger went with the profile


def test_a_stream_of_erasures_replaces_the_model_snapshot_at_most_every_few_seconds(monkeypatch):
    import crm_stream.operators.stages.learning as learning

    clock = [1000.0]
    monkeypatch.setattr(learning.time, "monotonic", lambda: clock[0])
    h = Harness()
    for cid in ("c1", "c2", "c3"):
        _busy(h, cid)

    def snapshots() -> list[bytes]:
        out = [v for t, k, v in h.out if t == "put" and k == "crm:model:customer"]
        h.out.clear()
        return out

    snapshots()
    h.feed(event("erasure_request", "c1", day=12.2))
    assert len(snapshots()) == 1  # the first goes out at once
    h.feed(event("erasure_request", "c2", day=12.3))
    assert snapshots() == []  # within ERASURE_SNAPSHOT_MIN_S: not a multi-MB snapshot per batch
    clock[0] += learning.ERASURE_SNAPSHOT_MIN_S
    h.feed(view("c3", day=12.4))
    [snapshot] = snapshots()
    assert b"c2" not in snapshot and b"c3" in snapshot  # then c2 leaves it too


def test_later_events_start_from_nothing_even_if_the_store_still_has_the_old_profile():
    h = Harness()
    h.feed(purchase("c1", amount=40, day=1), purchase("c1", amount=60, day=2))
    h.shard.store.write({k: v for t, k, v in h.out if t == "put"})  # the old profile is in the store
    h.shard.working_set.complete = False  # so a miss would read the store
    h.feed(event("erasure_request", "c1", day=3))  # ... and the delete has not reached it yet
    h.feed(purchase("c1", amount=5, day=4))
    fresh = h.shard.profiles["c1"]
    assert fresh["frequency"] == 1 and fresh["monetary"] == 5 and fresh["first_seen"] == T0 + 4 * MS_PER_DAY


def _write(h: Harness, store: MemoryStore) -> CollectingOutputs:
    outputs = CollectingOutputs()
    EffectsWriter(outputs, store).write(h.out)
    h.out.clear()
    return outputs


def test_a_restart_that_rereads_the_erasure_and_what_came_before_resurrects_nothing():
    store = MemoryStore()
    h = Harness()
    h.shard = ProfileShard(0, SETTINGS, store, KEYS)
    before = [purchase("c1", amount=40, day=1), purchase("c1", amount=60, day=2)]
    erasure = event("erasure_request", "c1", day=3)
    later = purchase("c1", amount=7, day=4)
    h.feed(*before, erasure)
    _write(h, store)
    assert store.get_many(["crm:profile:c1"]) == [None]
    restarted = Harness()
    restarted.shard = ProfileShard(0, SETTINGS, store, KEYS)  # reads the guard back from the shard record
    restarted.feed(*before)  # re-read from an older position: the same lines, 1 and 2
    assert "crm:profile:c1" not in {k for t, k, _ in restarted.out if t == "put"}
    restarted.feed(erasure)  # line 3 again: already carried out, nothing repeated
    assert not [e for e in restarted.out if e[0] in (SERVICE, MARKETING, AUDIT)]
    restarted.feed(later)
    _write(restarted, store)
    [blob] = store.get_many(["crm:profile:c1"])
    assert blob["frequency"] == 1 and blob["monetary"] == 7
    again = Harness()
    again.shard = ProfileShard(0, SETTINGS, store, KEYS)
    again.line = 2
    again.feed(erasure)  # line 3 once more, after the new life began: it must not erase the new life
    assert not [e for e in again.out if e[0] == AUDIT] and again.shard.profiles["c1"]["monetary"] == 7


def test_the_erasure_guard_expires_and_leaves_nothing_in_the_shard_record():
    h = Harness()
    h.feed(purchase("c1", day=1), event("erasure_request", "c1", day=2))
    h.shard.erasures.guard_s = 0.0
    h.out.clear()
    h.advance(T0 + 3 * MS_PER_DAY)
    record = [v for t, k, v in h.out if t == "put" and k == "crm:shard:0"][-1]
    assert "erasures" not in record and h.shard.erasures.erased == {}


def test_timer_entries_in_buckets_not_in_memory_are_deleted_from_the_store():
    store = MemoryStore()
    h = Harness()
    h.shard = ProfileShard(0, SETTINGS, store, KEYS)
    _busy(h)
    _write(h, store)
    named = [k for k, v in store.data.items() if k.startswith("crm:timers:") and "c1" in v]
    assert named
    restarted = Harness()
    restarted.shard = ProfileShard(0, SETTINGS, store, KEYS)  # nothing of the wheel in memory
    restarted.line = h.line
    restarted.feed(event("erasure_request", "c1", day=12.2))
    _write(restarted, store)
    assert not [k for k, v in store.data.items() if _mentions(v, "c1") or "c1" in k]


def test_identity_shards_forget_links_and_buffers():
    store = MemoryStore()
    identity = IdentityShard(store, KEYS, shards=1, max_events=100)
    tag = lambda ev, n: dict(ev, **{SOURCE: "file#-1", SOURCE_OFFSET: n})
    identity.process(
        [
            tag(event("page_view", None, anonymous_id="a1", url="/"), 1),
            tag(event("identify", "c1", anonymous_id="a1"), 2),
            tag(event("page_view", None, anonymous_id="a2", url="/"), 3),
        ]
    )
    routed, effects = identity.process([tag(event("erasure_request", "c1", day=1), 4)])
    assert identity.visitors["a1"] == {"customer_id": None, "events": []}
    assert ("del", "crm:anon:a1", None) in effects and routed[0][0]["type"] == "erasure_request"
    routed, effects = identity.process([tag(dict(event("erasure_request", "c9"), **{ERASE_LINKS_ONLY: True}), 5)])
    assert routed == {} and effects == []  # a copy for the links: nothing of c9 here, nothing routed on
    routed, effects = identity.process([tag(event("erasure_request", None, anonymous_id="a2"), 6)])
    assert routed == {} and ("del", "crm:anon:a2", None) in effects and identity.visitors["a2"]["events"] == []
    assert [e for e in effects if e[0] == AUDIT][0][2]["anonymous_id"] == "a2"


def test_the_router_sends_an_erasure_to_every_identity_shard_once():
    router = Router(Decoder({"USD": 1.0}, "USD", 1_000_000), 4)
    from crm_stream.operators.io.interface import Raw

    out = dict(router.route([Raw("crm.control", 0, 7, jsonutil.dumps(event("erasure_request", "c1")))]))
    erasures = [e for s in range(4) for e in out[shard_key(s)][1]]
    assert len(erasures) == 4 and sum(not e.get(ERASE_LINKS_ONLY) for e in erasures) == 1
    assert router.decoded == 1


def test_tombstones_never_reach_alert_files(tmp_path):
    files = FileOutputs(tmp_path)
    files.send(SERVICE, "c1", None)
    files.send(SERVICE, "c2", b"{}")
    files.close()
    assert (tmp_path / "service.jsonl").read_bytes() == b"{}\n"


def test_the_sink_writes_audit_records_after_the_tombstones_and_before_the_store():
    log: list = []

    class Recorder:
        def send(self, destination, key, value):
            log.append(("send", destination, key, value))

        def flush(self):
            log.append(("flush",))

        def close(self):
            pass

        def write(self, puts, deletes=()):
            log.append(("write", sorted(deletes)))

        def record(self, actor, action, customer_id, *, via, detail=None):
            log.append(("audit", actor, action, customer_id, via))

    r = Recorder()
    EffectsWriter(r, r, audit=r).write([(SERVICE, "c1", None), ("del", "crm:profile:c1", None), (AUDIT, "c1", {"event_id": "e"})])
    assert log == [
        ("send", SERVICE, "c1", None),
        ("flush",),
        ("audit", "engine", "erasure", "c1", "stream"),
        ("write", ["crm:profile:c1"]),
    ]


def test_an_opt_out_of_the_channel_a_trigger_is_held_for_cancels_it_even_if_another_channel_remains():
    h = Harness()
    h.feed(
        opt_in("c1", day=0.5, marketing_email=True, marketing_sms=True),
        *[view("c1", category="x", day=d + 20 / 24) for d in range(3)],
    )
    _interest(h, "c1", 10 + 1 / 24)
    h.advance(T0 + 12 * MS_PER_DAY + 2 * MS_PER_HOUR)
    [(send_at, trigger, channel)] = h.shard.profiles["c1"]["scheduled"].values()
    assert channel == "marketing_email"
    h.feed(event("consent", "c1", marketing_email=False, day=12 + 3 / 24))
    assert h.shard.profiles["c1"]["scheduled"] == {} and "send" not in h.shard.profiles["c1"]["timers"]
    h.advance(T0 + 14 * MS_PER_DAY)
    assert h.alerts(destination=MARKETING) == []


def test_export_shows_what_the_store_holds():
    store = MemoryStore()
    h = Harness()
    h.shard = ProfileShard(0, SETTINGS, store, KEYS)
    _busy(h)
    _write(h, store)
    h.shard.models.flush()
    store.write({k: v for t, k, v in h.shard.models.flush() + [("put", "crm:model:customer", h.shard.models.hub.snapshot())]})
    settings = SETTINGS.replace(engine=SETTINGS.engine.__class__(**{**vars(SETTINGS.engine), "shards": 1}))
    export = export_customer(store, KEYS, settings, "c1")
    assert export["profile"] == dict(store.data["crm:profile:c1"])
    assert export["view"]["customer_id"] == "c1" and export["view"]["frequency"] == 2
    assert export["scheduled_triggers"] and export["scheduled_triggers"][0]["channel"] == "marketing_email"
    assert export["timers"]["index"] and all(store.data[k]["c1"] == d for k, d in export["timers"]["index"].items())
    assert len(export["pending_predictions"]) == len(ModelHub.restore(store.data["crm:model:customer"]).pending.entries("c1"))
    assert export_customer(store, KEYS, settings, "nobody")["profile"] is None


def _stream() -> list[dict]:
    evs = []
    for i in range(6):
        evs += [view(f"c{i}", day=i * 0.1), purchase(f"c{i}", amount=10 + i, day=1 + i * 0.1)]
    evs.append(event("product_view", None, day=2, anonymous_id="anon-3", product_id="p9", category="books"))
    evs.append(event("identify", "c3", day=2.1, anonymous_id="anon-3"))
    evs.append(event("erasure_request", "c3", day=3))
    evs.append(purchase("c3", amount=99, day=4))
    evs.append(event("erasure_request", "c4", day=3.5))
    return evs


def test_replay_after_an_erasure_gives_a_fresh_profile_and_the_same_bytes_each_time(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_bytes(lines(_stream()))
    runs = []
    for n in range(2):
        out = {k: tmp_path / f"{k}{n}.jsonl" for k in ("alerts", "profiles")}
        replay(SETTINGS, path, alerts_out=out["alerts"], profiles_out=out["profiles"])
        runs.append((out["alerts"].read_bytes(), out["profiles"].read_bytes()))
    assert runs[0] == runs[1]
    profiles = {p["customer_id"]: p for p in map(jsonutil.loads, runs[0][1].splitlines())}
    assert "c4" not in profiles and profiles["c3"]["frequency"] == 1 and profiles["c3"]["monetary"] == 99
    assert all(line.startswith(b"{") for line in runs[0][0].splitlines())  # alerts only, no tombstones

    store, outputs = MemoryStore(), CollectingOutputs()
    flow = build_flow(
        SETTINGS, reader=FileReader(path, batch_size=3), outputs_factory=lambda w: outputs, store_provider=lambda: store
    )
    run_main(flow, epoch_interval=timedelta(seconds=1))
    assert (SERVICE, "c4") in outputs.tombstones and (MARKETING, "c3") in outputs.tombstones
    c3 = store.data["crm:profile:c3"]
    assert c3["frequency"] == 1 and "anon-3" not in repr(c3) and "crm:anon:anon-3" not in store.data


def test_a_reread_visitor_event_from_before_the_erasure_does_not_relink_the_visitor():
    store = MemoryStore()
    shard = ProfileShard(0, SETTINGS, store, KEYS)
    via_visitor = dict(
        event("identify", "c1", anonymous_id="visitor-zq", day=1), **{SOURCE: "file#-1|visitor-zq", SOURCE_OFFSET: 1}
    )
    erasure = dict(event("erasure_request", "c1", day=2), **{SOURCE: "file#-1", SOURCE_OFFSET: 2})
    EffectsWriter(CollectingOutputs(), store).write(shard.process([via_visitor, erasure], {"file#-1": T0 + 2 * MS_PER_DAY}))
    assert "visitor-zq" not in repr(store.data)  # the guard names the visitor's path by a hash only
    restarted = ProfileShard(0, SETTINGS, store, KEYS)
    restarted.process([via_visitor, erasure])
    assert "c1" not in restarted.profiles
