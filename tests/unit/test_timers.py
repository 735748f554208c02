from __future__ import annotations

from typing import Any

from crm_stream.operators.events.timeutil import MS_PER_HOUR
from crm_stream.operators.profile.timers import EventClock, TimerWheel, bucket_of

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
    clock.observe({"a#0": 2000})  # b silent for 6 s, but a has delivered one batch since: b may be waiting its turn
    assert clock.watermark() == 390
    for i in range(8):  # 4 batches per partition since b was last heard: b has gone quiet, it no longer holds a back
        clock.observe({"a#0": 2001 + i})
    assert clock.watermark() == 1998


def test_when_nothing_arrives_for_the_idle_time_every_partition_is_caught_up():
    now = [0.0]
    clock = EventClock(allowed_lateness_ms=10, idle_after_s=5, now=lambda: now[0])
    clock.observe({"a#0": 1000})
    clock.observe({"b#0": 400})
    now[0] = 4.0
    assert clock.watermark() == 390
    now[0] = 6.0
    assert clock.watermark() == 390  # seen once: maybe only a busy worker
    now[0] = 8.5
    assert clock.watermark() == 990  # seen again half the idle time later, nothing arrived in between


def test_a_worker_busy_past_the_idle_time_does_not_take_the_input_for_caught_up():
    now = [0.0]
    clock = EventClock(allowed_lateness_ms=10, idle_after_s=5, now=lambda: now[0])
    clock.observe({"a#0": 1000, "b#0": 400})
    now[0] = 9.0  # one batch took 9 s: the wake-up that follows finds nothing arrived meanwhile
    assert clock.watermark() == 390
    clock.observe({"b#0": 450})  # the next batch was waiting all along
    now[0] = 12.0
    assert clock.watermark() == 440


def test_at_the_end_of_input_no_partition_holds_the_others_back():
    clock = EventClock(allowed_lateness_ms=10, idle_after_s=5, now=lambda: 0.0)
    clock.observe({"a#0": 1000, "b#0": 400})
    assert clock.watermark() == 390  # b was heard just now: it holds a back
    clock.end()
    assert clock.watermark() == 990


# -- a shard's timers when partitions are read at different speeds -----------------------------------------------------


def _feed_partitioned(batches: list[list[tuple[str, dict]]], kinds: tuple[str, ...] = ("replenishment", "win_back")) -> set[str]:
    """Feed a profile shard batches of (input partition, event), as the router does: each batch carries the newest
    event time of every partition in it. Returns the ids of the timer-driven alerts it raised."""
    return _fed_shard(batches, kinds)[0]


def _fed_shard(batches: list[list[tuple[str, dict]]], kinds: tuple[str, ...]) -> tuple[set[str], Any]:
    """``_feed_partitioned``, and the shard it fed."""
    from dataclasses import replace

    from crm_stream.config import settings as config
    from crm_stream.operators.io import jsonutil
    from crm_stream.operators.io.interface import MARKETING, SERVICE
    from crm_stream.operators.io.keys import KeySpace
    from crm_stream.operators.io.stores import MemoryStore
    from crm_stream.operators.profile.state import SOURCE, SOURCE_OFFSET
    from crm_stream.operators.stages.shard import ProfileShard

    base = config.load(None, env={})
    shard = ProfileShard(0, replace(base, engine=replace(base.engine, allowed_lateness_ms=0)), MemoryStore(), KeySpace("crm"))
    shard.event_clock.now = lambda: 0.0  # no partition ever idles: the watermark is the slowest one, wherever the test runs
    offsets: dict[str, int] = {}
    out: list = []
    for batch in batches:
        events, clocks = [], {}
        for source, ev in batch:
            offsets[source] = offsets.get(source, -1) + 1
            ev = dict(ev, **{SOURCE: source, SOURCE_OFFSET: offsets[source]})
            if ev["type"] == "purchase":
                ev.setdefault("amount_base", ev["amount"])
            events.append(ev)
            clocks[source] = max(clocks.get(source, 0), ev["ts"])
        out += shard.process(events, clocks)
    alerts = [jsonutil.loads(v) for d, _, v in out if d in (SERVICE, MARKETING)]
    return {a["alert_id"] for a in alerts if a["kind"] in kinds}, shard


def test_a_partition_read_ahead_cancels_no_timer_the_watermark_has_not_reached_yet():
    """Purchases come on their own partition; a consumer may read all of it before the slower clickstream moves the
    watermark. Every replenishment reminder and win-back due in event time must still fire, with the same ids
    as when the same events arrive in time order (replay)."""
    from tests.events import T0, event, purchase, view

    def bought(day: float) -> dict:
        return purchase(
            "c1", amount=12, day=day, items=[{"product_id": "p-food", "category": "pet_food", "price": 12, "quantity": 1}]
        )

    # pet_food every 21 days: reminders due 2 days ahead (days 61, 82, 103); then 86 days of silence (win-back at 159).
    purchases = [("purchases#0", bought(d)) for d in (0.5, 21.5, 42.5, 63.5, 84.5, 170.5)]
    consent = ("clickstream#0", event("consent", "c1", day=0.1, marketing_email=True))
    clicks = [("clickstream#0", view("c2", day=d)) for d in range(1, 200)]
    by_day: dict[int, list] = {}  # replay: one file, in time order, a day per batch
    for _, ev in sorted([consent, *purchases, *clicks], key=lambda se: se[1]["ts"]):
        by_day.setdefault((ev["ts"] - T0) // 86_400_000, []).append(("file#-1", ev))
    replayed = _feed_partitioned([by_day[d] for d in sorted(by_day)])
    assert len(replayed) == 4  # three reminders and one win-back
    whole = [("file#-1", ev) for day in sorted(by_day) for _, ev in by_day[day]]
    assert _feed_partitioned([whole]) == replayed  # nor does the batch a purchase arrives in cancel a reminder due before it

    # Live: the whole purchases partition is read at once, the clickstream a day at a time.
    live = _feed_partitioned([[consent, *purchases], *([c] for c in clicks)])
    assert live == replayed


def test_a_look_read_ahead_of_the_watermark_neither_extends_nor_replaces_an_episode_already_due():
    """A customer's clickstream partition read ahead of a slower one: looks from later bursts are applied before
    the watermark reaches the deadline of an earlier interest episode. That episode must still be judged as it
    stood at its deadline, with the same alert id as in time order (replay)."""
    from tests.events import T0, event, view

    kinds = ("abandoned_interest",)
    consent = ("clicks#0", event("consent", "c1", day=0.05, marketing_email=True))
    looks = [("clicks#0", view("c1", category="books", day=1 + i * 0.01, product_id=f"b{i}")) for i in range(9)]  # due day 3.1
    looks += [("clicks#0", view("c1", category="books", day=4 + i * 0.01, product_id=f"b{i}")) for i in range(9)]  # 3 days on
    looks += [
        ("clicks#0", view("c1", category="books", day=45 + i * 0.01, product_id=f"b{i}")) for i in range(9)
    ]  # past cooldown
    looks += [("clicks#0", view("c3", category="toys", day=80))]  # the partition's clock moves on past every deadline
    slow = [("clicks#1", view("c2", category="garden", day=d)) for d in range(0, 81)]  # one look a day: the watermark
    by_day: dict[int, list] = {}
    for item in sorted([consent, *looks, *slow], key=lambda se: se[1]["ts"]):
        by_day.setdefault((item[1]["ts"] - T0) // 86_400_000, []).append(item)
    replayed = _feed_partitioned([by_day[d] for d in sorted(by_day)], kinds)
    assert len(replayed) == 2  # day 1's episode, then day 45's (day 4's falls in the 30-day cooldown and merges)
    live = _feed_partitioned([[consent, *looks], *([s] for s in slow)], kinds)  # all of c1's partition at once
    assert live == replayed


def test_an_emptied_bucket_is_known_empty_and_a_complete_wheel_never_reads():
    store = FakeStore()
    wheel = TimerWheel(store.load, T0 // H)
    wheel.schedule("a", T0 + H + 5)  # the current hour: fires at the next advance
    store.persist(wheel)
    loads = store.loads
    assert wheel.due(T0 + H + 10) == [("a", T0 + H + 5)]
    store.persist(wheel)
    assert bucket_of(T0 + H) not in store.data  # deleted in the store...
    wheel.schedule("b", T0 + H + 20)  # ...and known empty here: scheduling into it again reads nothing
    assert store.loads == loads and wheel.due(T0 + H + 30) == [("b", T0 + H + 20)]

    fresh = FakeStore()
    complete = TimerWheel(fresh.load, complete=True)
    complete.schedule("c", T0 + 3 * H)
    complete.forget("c", {bucket_of(T0 + 7 * H)})
    assert complete.due(T0 + 9 * H) == [] and fresh.loads == 0

    restarted = TimerWheel(store.load, T0 // H)  # not complete: what the store holds must be read
    store.data[bucket_of(T0 + 2 * H)] = {"d": T0 + 2 * H}
    assert restarted.due(T0 + 3 * H) == [("d", T0 + 2 * H)] and store.loads > loads


def test_a_shard_fires_no_timer_before_every_shard_has_completed_the_lines_of_its_day():
    """Two shards of one process share the shop's segment lines. A timer judges with the lines of its own day, which
    exist once every shard has passed that day: a shard whose clock ran ahead waits for the slower one instead of
    judging with older lines (which lines those were depended on how far the other shard happened to be)."""
    from dataclasses import replace

    from crm_stream.config import settings as config
    from crm_stream.operators.events.timeutil import MS_PER_DAY
    from crm_stream.operators.io.keys import KeySpace
    from crm_stream.operators.io.stores import MemoryStore
    from crm_stream.operators.profile.segments import ThresholdBoard
    from crm_stream.operators.stages.shard import ProfileShard

    base = config.load(None, env={})
    settings = replace(base, engine=replace(base.engine, allowed_lateness_ms=0))
    board, store = ThresholdBoard(settings.segments), MemoryStore()
    ahead, behind = (ProfileShard(n, settings, store, KeySpace("crm"), board=board) for n in (0, 1))
    for shard in (ahead, behind):
        shard.event_clock.now = lambda: 0.0
    day0 = 20_000 * MS_PER_DAY
    for hour in (0, 1):  # two rounds: every shard of the process has reported (ThresholdBoard._settled)
        ahead.process([], {"p#0": day0 + hour * MS_PER_HOUR})
        behind.process([], {"p#0": day0 + hour * MS_PER_HOUR})
    ahead.wheel.schedule("c1", day0 + 10 * MS_PER_DAY)  # due on day 10
    ahead.process([], {"p#0": day0 + 30 * MS_PER_DAY})  # this shard's watermark passed day 30; the other is at day 0
    assert ahead.wheel.fired_through is not None
    assert ahead.wheel.fired_through * MS_PER_HOUR < day0 + 2 * MS_PER_DAY
    assert ahead.wheel.pending() == 1
    behind.process([], {"p#0": day0 + 30 * MS_PER_DAY})  # the other shard catches up: day 10's lines are complete
    ahead.process([], None)
    assert ahead.wheel.pending() == 0
    assert (ahead.wheel.fired_through + 1) * MS_PER_HOUR == day0 + 30 * MS_PER_DAY


def test_interest_episodes_are_cut_in_time_order_whatever_order_the_looks_arrive_in():
    """Looks at days 0, 6 and 9 are one episode in time order (no silence of 7 days; 9 looks by day 9: an offer).
    Read with day 6's looks last (a visitor's looks released by ``identify``, or a partition read behind), an
    episode cut in arrival order would end at day 0 and begin again at day 9: no offer, or one with another id."""
    from tests.events import event, view

    kinds = ("abandoned_interest",)
    consent = ("clicks#0", event("consent", "c1", day=0.0, marketing_email=True))

    def looks(day: int) -> list[tuple[str, dict]]:
        return [("clicks#0", view("c1", category="books", day=day + 0.01 * (i + 1), product_id=f"b{i}")) for i in range(3)]

    ticks = [[(f"clicks#{d % 2}", view("c2", category="toys", day=d))] for d in range(10, 40)]  # the watermark moves on
    in_time = _feed_partitioned([[consent, *looks(0)], looks(6), looks(9), *ticks], kinds)
    assert len(in_time) == 1
    late = _feed_partitioned([[consent, *looks(0)], looks(9), looks(6), *ticks], kinds)
    assert late == in_time


def test_a_churn_check_before_a_purchase_read_ahead_is_judged_as_in_time_order():
    """A customer silent from day 0 buys again on day 100. The purchases partition is read at once, so the day-100
    purchase is in the profile when the watermark reaches the churn checks of days 0-100: they must judge (and
    re-arm) from the purchases made by then, and the model be served that history, as in time order."""
    from tests.events import T0, event, purchase, view

    def bought(day: float) -> dict:
        return purchase("c1", amount=40, day=day, items=[{"product_id": "p-tea", "category": "tea", "price": 40, "quantity": 1}])

    purchases = [("purchases#0", bought(d)) for d in (0.5, 100.5)]
    consent = ("clickstream#0", event("consent", "c1", day=0.1, marketing_email=True))
    clicks = [("clickstream#0", view("c2", day=d)) for d in range(1, 200)]
    by_day: dict[int, list] = {}
    for _, ev in sorted([consent, *purchases, *clicks], key=lambda se: se[1]["ts"]):
        by_day.setdefault((ev["ts"] - T0) // 86_400_000, []).append(("file#-1", ev))
    replayed = _feed_partitioned([by_day[d] for d in sorted(by_day)], ("churn_risk",))
    assert len(replayed) == 1  # the silence before day 100
    live = _feed_partitioned([[consent, *purchases], *([c] for c in clicks)], ("churn_risk",))
    assert live == replayed


def test_an_identify_read_behind_later_purchases_cancels_no_churn_check():
    """The identify comes on the clickstream, the purchases on their own partition, read first. Re-armed as of the
    identify, churn_risk found no purchase by then and cleared the check the purchases had armed: live lacked churn
    alerts that replay raised (3 of 60 on the integration test's shop)."""
    from tests.events import event, purchase, view

    kinds = ("churn_risk",)
    hello = [
        ("clicks#0", event("identify", "c1", day=0.05, anonymous_id="a1")),
        ("clicks#0", event("consent", "c1", day=0.06, marketing_email=True)),
    ]
    purchases = [("purchases#0", purchase("c1", day=d)) for d in (0.5, 10.5, 20.5, 30.5)]
    purchases.append(("purchases#0", purchase("c3", day=199)))  # the partition's clock moves on past every check
    clicks = [("clicks#0", view("c2", day=d)) for d in range(1, 200)]
    by_day: dict[int, list] = {}
    for item in sorted([("clicks#0", view("c2", day=0.01)), *hello, *purchases, *clicks], key=lambda se: se[1]["ts"]):
        by_day.setdefault((item[1]["ts"] - T0) // 86_400_000, []).append(item)
    replayed = _feed_partitioned([by_day[d] for d in sorted(by_day)], kinds)
    assert len(replayed) == 1
    early = ("clicks#0", view("c2", day=0.01))  # the clickstream was heard first: it holds the watermark back
    live = _feed_partitioned([[early], purchases, hello, *([c] for c in clicks)], kinds)  # then every purchase at once
    assert live == replayed


def test_a_partition_known_from_the_start_holds_the_watermark_until_it_delivers_or_idles():
    """At a live start the partitions deliver their first batches one after another: the first ones must not make
    the watermark alone (it passed days whose consents and looks a partition not read yet still held)."""
    wall = [0.0]
    clock = EventClock(allowed_lateness_ms=10, idle_after_s=5, now=lambda: wall[0])
    clock.expect(["a#0", "b#0"])
    clock.observe({"a#0": 1000})
    assert clock.watermark() <= 0
    clock.observe({"b#0": 400})
    assert clock.watermark() == 390
    other = EventClock(allowed_lateness_ms=10, idle_after_s=5, now=lambda: wall[0])
    other.expect(["a#0", "b#0"])  # b never delivers (an empty partition): idle once time and rounds have passed
    for n in range(20):
        wall[0] += 1.0
        other.observe({"a#0": 1000 + n})
    assert other.watermark() == 1009


def test_the_models_take_the_same_prediction_points_whatever_order_checks_and_events_come_in(monkeypatch):
    """A churn check due before a purchase read ahead of the watermark: fired after the purchase was applied, it found
    the customer seen since and the models took no point there, while replay (the check first) took one; the live
    models learned from other points than replay's, and served other scores (ProfileShard._check_before)."""
    from crm_stream.models.labels import PendingPredictions
    from tests.events import T0 as DAY0
    from tests.events import event, purchase, view

    hello = [("clicks#0", event("consent", "c1", day=0.06, marketing_email=True))]
    bought = [("purchases#0", purchase("c1", day=d)) for d in (0.5, 10.5, 20.5, 30.5, 120.5)]
    bought.append(("purchases#0", purchase("c3", day=199)))
    clicks = [("clicks#0", view("c2", day=d)) for d in range(1, 200)]
    by_day: dict[int, list] = {}  # replay: one file, in time order, a day per batch
    for _, ev in sorted([*hello, *bought, *clicks], key=lambda se: se[1]["ts"]):
        by_day.setdefault((ev["ts"] - DAY0) // 86_400_000, []).append(("file#-1", ev))
    made: list[int] = []
    add = PendingPredictions.add

    def recording(self: PendingPredictions, customer_id: str, made_at: int, x: Any, payload: Any) -> bool:
        if customer_id == "c1":
            made.append(made_at)
        return add(self, customer_id, made_at, x, payload)

    monkeypatch.setattr(PendingPredictions, "add", recording)
    _fed_shard([by_day[d] for d in sorted(by_day)], ())
    replayed, made[:] = list(made), []
    _fed_shard([[("clicks#0", view("c2", day=0.01))], hello, bought, *([c] for c in clicks)], ())  # purchases at once
    assert any(30.5 < (t - DAY0) / 86_400_000 < 120 for t in replayed)  # a point at a check in the silence
    assert made == replayed
