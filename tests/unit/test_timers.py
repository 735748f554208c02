from __future__ import annotations

from operators.timers import EventClock, TimerWheel, bucket_of
from operators.timeutil import MS_PER_HOUR

H = MS_PER_HOUR
T0 = 1_000 * H


class FakeStore:
    def __init__(self):
        self.data: dict[int, dict] = {}
        self.loads = 0

    def load(self, hours):
        self.loads += 1
        return [self.data.get(h) for h in hours]

    def persist(self, wheel):
        puts, deletes = wheel.take_changes()
        for h, b in puts.items():
            self.data[h] = dict(b)
        for h in deletes:
            self.data.pop(h, None)


def test_timers_fire_in_deadline_order_when_the_watermark_passes():
    store = FakeStore()
    wheel = TimerWheel(store.load)
    wheel.schedule("b", T0 + 5 * H + 10)
    wheel.schedule("a", T0 + 5 * H + 5)
    wheel.schedule("c", T0 + 50 * H)
    assert wheel.due(T0) == []
    assert wheel.due(T0 + 5 * H + 7) == [("a", T0 + 5 * H + 5)]
    assert wheel.due(T0 + 6 * H) == [("b", T0 + 5 * H + 10)]
    assert wheel.due(T0 + 100 * H) == [("c", T0 + 50 * H)]
    assert wheel.pending() == 0


def test_rescheduling_keeps_the_earliest_and_past_deadlines_fire_at_once():
    wheel = TimerWheel(FakeStore().load)
    wheel.due(T0)
    wheel.schedule("a", T0 + 3 * H)
    wheel.schedule("a", T0 + 2 * H)
    wheel.schedule("late", T0 - 10 * H)  # already past when scheduled
    assert [c for c, _ in wheel.due(T0 + 1)] == ["late"]
    assert [c for c, _ in wheel.due(T0 + 2 * H)] == ["a"]


def test_restart_resumes_from_the_store_without_refiring():
    store = FakeStore()
    wheel = TimerWheel(store.load)
    for i in range(100):
        wheel.schedule(f"c{i}", T0 + i * H)
    wheel.due(T0 + 10 * H + 1)
    store.persist(wheel)
    restarted = TimerWheel(store.load, fired_through=wheel.fired_through)
    fired = restarted.due(T0 + 200 * H)
    assert [c for c, _ in fired] == [f"c{i}" for i in range(11, 100)]
    store.persist(restarted)
    assert store.data == {}


def test_only_touched_hours_are_held_in_memory():
    store = FakeStore()
    wheel = TimerWheel(store.load)
    wheel.due(T0)
    for i in range(1000):
        wheel.schedule(f"c{i}", T0 + (24 + i % 48) * H)
    store.persist(wheel)
    restarted = TimerWheel(store.load, fired_through=wheel.fired_through)
    restarted.due(T0 + 30 * H)
    assert len(restarted.buckets) <= 2 and bucket_of(T0 + 30 * H) in restarted.buckets


def test_watermark_is_the_slowest_active_partition_minus_lateness():
    now = [0.0]
    clock = EventClock(allowed_lateness_ms=10, idle_after_s=5, now=lambda: now[0])
    clock.observe({"a#0": 1000, "b#0": 400})
    assert clock.watermark() == 390
    now[0] = 6.0
    clock.observe({"a#0": 2000})  # b has gone quiet: it no longer holds a back
    assert clock.watermark() == 1990
