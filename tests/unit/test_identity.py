from __future__ import annotations

from crm_stream.config import settings as config
from crm_stream.operators.io.keys import KeySpace
from crm_stream.operators.io.stores import MemoryStore
from crm_stream.operators.profile.state import SOURCE, SOURCE_OFFSET
from crm_stream.operators.stages.identity import IdentityShard
from crm_stream.operators.stages.shard import ProfileShard
from tests.events import event

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
