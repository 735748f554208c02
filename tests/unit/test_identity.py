from __future__ import annotations

import zlib
from datetime import timedelta

import pytest
from bytewax.testing import TestingSource, run_main

from crm_stream.config import settings as config
from crm_stream.flows.dataflow import build_flow
from crm_stream.operators.events.simulator import Shop
from crm_stream.operators.io.effects import EffectsWriter
from crm_stream.operators.io.files import CollectingOutputs
from crm_stream.operators.io.keys import KeySpace
from crm_stream.operators.io.stores import MemoryStore
from crm_stream.operators.profile.state import SOURCE, SOURCE_OFFSET
from crm_stream.operators.stages.identity import IdentityShard
from crm_stream.operators.stages.shard import ProfileShard
from tests.events import event
from tests.unit.test_shard_memory import BytesStore  # encodes like Redis: a restart reads back bytes

SETTINGS = config.load(None, env={})
KEYS = KeySpace("crm")


def tagged(ev, line):
    ev = dict(ev, **{SOURCE: "file#-1", SOURCE_OFFSET: line})
    ev.setdefault("quantity", 1)
    return ev


def test_visitor_history_is_merged_even_when_the_customers_own_later_events_overtake_the_identify():
    store = MemoryStore()
    identity = IdentityShard(store, KEYS, shards=1, max_events=100)
    profiles = ProfileShard(0, SETTINGS, store, KEYS)
    anon_view = tagged(event("add_to_cart", None, anonymous_id="a1", product_id="p1", category="books", price=9.0), 1)
    identify = tagged(event("identify", "c1", anonymous_id="a1", day=1), 2)
    consent = tagged(event("consent", "c1", marketing_email=True, day=1.1), 3)
    routed, _ = identity.process([anon_view])
    assert routed == {}  # buffered: nobody to attribute it to yet
    routed_identify, _ = identity.process([identify])
    routed_consent, _ = identity.process([consent])
    # The two arrive at the profile shard by different paths; the later one first.
    profiles.process(routed_consent[0])
    profiles.process(routed_identify[0])
    profile = profiles.profiles["c1"]
    assert profile["type_counts"].get("identify") == 1
    assert "p1" in profile["cart"] and "books" in profile["interests"]
    assert profile["merged_anonymous_ids"] == ["a1"]


def test_identify_replayed_after_a_crash_merges_nothing_twice():
    store = MemoryStore()
    profiles = ProfileShard(0, SETTINGS, store, KEYS)
    for _ in range(2):  # a fresh identity shard each time: restarted, reading its record back from the store
        identity = IdentityShard(store, KEYS, shards=1, max_events=100)
        routed, effects = identity.process(
            [tagged(event("add_to_cart", None, anonymous_id="a1", product_id="p1", category="c", price=1.0), 1)]
        )
        routed2, effects2 = identity.process([tagged(event("identify", "c1", anonymous_id="a1", day=1), 2)])
        store.write({k: v for _, k, v in effects + effects2})
        profiles.process(routed2[0])
    assert profiles.profiles["c1"]["cart"]["p1"]["quantity"] == 1


def test_later_anonymous_events_follow_the_link():
    store = MemoryStore()
    identity = IdentityShard(store, KEYS, shards=4, max_events=100)
    identity.process([tagged(event("identify", "c1", anonymous_id="a1"), 1)])
    routed, effects = identity.process([tagged(event("page_view", None, anonymous_id="a1", url="/x"), 2)])
    [(shard, [forwarded])] = routed.items()
    assert forwarded["customer_id"] == "c1" and effects == []


def test_visitor_buffer_is_bounded_and_deduplicated():
    store = MemoryStore()
    identity = IdentityShard(store, KEYS, shards=1, max_events=3)
    evs = [tagged(event("page_view", None, anonymous_id="a1", url=f"/{i}"), i) for i in range(5)]
    identity.process(evs + [evs[-1]])
    assert [e["url"] for e in identity.visitors["a1"]["events"]] == ["/2", "/3", "/4"]


def _run_from_start(store, batches):
    """A fresh identity and profile shard (a restart) reading ``batches`` from their first offsets, every effect
    written as the sink writes it; the stored profile of c1 at the end (None if there is none)."""
    identity, profiles = IdentityShard(store, KEYS, shards=1, max_events=100), ProfileShard(0, SETTINGS, store, KEYS)
    writer = EffectsWriter(CollectingOutputs(), store)
    for batch in batches:
        routed, visitor_effects = identity.process([dict(e) for e in batch])
        writer.write(visitor_effects)
        writer.write(profiles.process(routed.get(0, [])))
    blob = store.get_many([KEYS.profile("c1")])[0]
    return None if blob is None else store.decode(blob)


@pytest.mark.parametrize("identify_first", [False, True], ids=["view-first", "identify-first"])
def test_a_visitors_event_read_again_after_a_restart_is_not_applied_twice_once_the_visitor_is_linked(identify_first):
    """The visitor's view was released into c1 by the identify (without its source offset); then c1 had more
    events than the event-id window holds. A restart from a checkpoint before the view reads it again, now with
    the visitor linked in the store (and the identify too, before or after it: partitions are read at their own
    pace): it must not reach the profile a second time."""
    anon_view, identify, own = _visitor_scene()
    batches = [[anon_view], [identify], own]
    store = BytesStore()
    first = _run_from_start(store, batches)
    assert first["events"] == len(own) + 2 and first["type_counts"]["product_view"] == 1
    # Killed after the last write, restarted from the first offsets.
    again = _run_from_start(store, [[identify], [anon_view], own] if identify_first else batches)
    assert (again["events"], again["type_counts"]) == (first["events"], first["type_counts"])


def _visitor_scene():
    """c1's visitor view, the identify, and more of c1's own events than the event-id window holds."""
    window = SETTINGS.engine.dedup_max_ids
    anon_view = dict(
        event("product_view", None, anonymous_id="a1", product_id="p1", category="books"),
        **{SOURCE: "clickstream#0", SOURCE_OFFSET: 0},
    )
    identify = dict(event("identify", "c1", anonymous_id="a1", day=1), **{SOURCE: "control#0", SOURCE_OFFSET: 0})
    own = [
        dict(event("page_view", "c1", url=f"/{i}", day=2 + i / 100), **{SOURCE: "clickstream#1", SOURCE_OFFSET: i})
        for i in range(window + 6)
    ]
    return anon_view, identify, own


def test_a_buffered_event_read_again_after_an_identify_this_run_read_first_is_not_applied_twice():
    """The run before read the view (buffered: stored unlinked) and was killed before it read the identify. The
    restart reads the identify first, which releases the stored buffer into c1, then c1's own events, then the
    view again (partitions at their own pace): the view must not be forwarded to c1 a second time. Before the
    fix, memory kept the link without the released events (they came back unlinked from the store), so the view
    was forwarded at its offset, and the event-id window had moved on."""
    anon_view, identify, own = _visitor_scene()
    store = BytesStore()
    _run_from_start(store, [[anon_view]])  # killed after this batch was written
    again = _run_from_start(store, [[identify], own, [anon_view]])
    assert again["events"] == len(own) + 2 and again["type_counts"]["product_view"] == 1


def test_an_identify_read_twice_keeps_the_released_events_in_the_store():
    """The identify delivered twice (at-least-once) before a restart: the second must not rewrite the visitor's
    stored record with the empty list memory keeps for a visitor this run linked, or the restart, reading the view
    again with the visitor linked in the store, forwards it to c1 a second time."""
    anon_view, identify, own = _visitor_scene()
    store = BytesStore()
    first = _run_from_start(store, [[anon_view], [identify], [dict(identify)], own])
    assert store.decode(store.get_many([KEYS.anon("a1")])[0])["events"] != []
    again = _run_from_start(store, [[anon_view], [identify], own])
    assert (again["events"], again["type_counts"]) == (first["events"], first["type_counts"])


def test_the_dataflow_restarted_from_the_first_offsets_ends_with_the_replays_profiles():
    """The same, end to end: the simulator's records laid out as on the broker (a topic per role, 4 partitions by
    key, offsets per partition), a run killed a third of the way in and restarted from the first offsets on the
    same store. The event-id window is made small, so that a customer's window moves on within this short shop,
    as it does for the active customers of a longer one (before the fix: 112 events applied twice, 7 customers)."""
    sim = config.SimulatorSettings(customers=60, days=60, seed=21, bad_rate=0.0)
    settings = config.load(None, env={"CRM_STREAM__ENGINE__DEDUP_MAX_IDS": "8"})
    positions: dict[tuple[str, int], int] = {}
    records = []
    for role, key, value in Shop(sim).records():
        partition = zlib.crc32(key.encode()) % 4
        positions[role, partition] = offset = positions.get((role, partition), -1) + 1
        records.append((role, partition, offset, value))

    def run(store, records):
        batches = [records[i : i + 200] for i in range(0, len(records), 200)]
        flow = build_flow(
            settings, reader=TestingSource(batches), outputs_factory=lambda w: CollectingOutputs(), store_provider=lambda: store
        )
        run_main(flow, epoch_interval=timedelta(seconds=10))
        return {key: store.decode(blob) for key, blob in store.scan(KEYS.profile_prefix)}

    replayed = run(BytesStore(), records)
    store = BytesStore()
    run(store, records[: len(records) // 3])
    restarted = run(store, records)
    differ = {
        key: (restarted[key]["events"] - p["events"], restarted[key]["type_counts"])
        for key, p in replayed.items()
        if (restarted[key]["events"], restarted[key]["type_counts"]) != (p["events"], p["type_counts"])
    }
    assert restarted.keys() == replayed.keys() and not differ, differ
