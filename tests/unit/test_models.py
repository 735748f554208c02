"""The online models: features, the shared model contract, delayed labels, progressive validation, snapshots."""

from __future__ import annotations

import doctest
import math
import pickle
import random
import time

import pytest

from crm_stream.config.settings import SimulatorSettings
from crm_stream.models import churn, components, evaluation, features, labels, next_purchase, rhythm
from crm_stream.models import hub as hubs
from crm_stream.models.features import FEATURE_NAMES, MS_PER_DAY
from crm_stream.models.hub import ModelHub, SnapshotError
from crm_stream.models.labels import CENSORED, CHURN, NEXT_PURCHASE, PendingPredictions
from crm_stream.operators.events.simulator import Shop
from crm_stream.operators.profile import state as profiles
from crm_stream.operators.profile.state import ProfileRules
from crm_stream.operators.stages.evaluate import evaluate_file
from tests.events import T0, event, purchase, view

RULES = ProfileRules(interest_half_life_days=14, sentiment_half_life_hours=72, dedup_max_ids=64)
DAY = MS_PER_DAY
POP_GAP = 20.0


def norm(ev: dict) -> dict:
    ev = dict(ev)
    if ev["type"] in ("purchase", "refund"):
        ev["amount_base"] = ev["amount"]
    ev.setdefault("quantity", 1)
    return ev


def fold(events: list[dict], customer_id: str = "c1") -> dict:
    p = profiles.new_profile(customer_id, events[0]["ts"])
    for ev in events:
        profiles.apply(p, norm(ev), RULES)
    return p


class Stream:
    """Customers' profiles folded event by event, each applied event handed to the hub (as the engine does)."""

    def __init__(self, hub: ModelHub) -> None:
        self.hub = hub
        self.profiles: dict[str, dict] = {}

    def send(self, ev: dict) -> None:
        ev = norm(ev)
        customer = ev["customer_id"]
        profile = self.profiles.get(customer)
        if profile is None:
            profile = self.profiles[customer] = profiles.new_profile(customer, ev["ts"])
        if profiles.apply(profile, ev, RULES):
            self.hub.on_event(profile, ev, ev["ts"], POP_GAP)


def busy_profile() -> dict:
    events = [
        purchase(day=d, amount=20 + d, items=[{"product_id": "p1", "category": "coffee", "price": 10, "quantity": 2}])
        for d in (0, 9, 21, 30)
    ]
    events += [
        view(day=31, category="tea"),
        event("add_to_cart", day=31.1, product_id="p9", category="tea", price=5.0),
        event("ticket_opened", day=32, ticket_id="t1"),
        event("support_message", day=32.1, ticket_id="t1", text="Terrible, I want a refund!!!", direction="inbound"),
        event("survey", day=33, score=3),
        event("ticket_closed", day=33, ticket_id="t1", csat=2),
        event("refund", day=34, order_id="o-x", amount=5.0, currency="USD"),
        event("consent", day=1, marketing_email=True, contact_frequency="low"),
    ]
    return fold(sorted(events, key=lambda e: e["ts"]))


# -- features -------------------------------------------------------------------------------


def test_features_are_named_finite_floats():
    blank = profiles.new_profile("c1", T0)
    for profile, as_of in ((blank, T0), (blank, T0 + 400 * DAY), (busy_profile(), T0 + 40 * DAY)):
        x = features.features(profile, as_of, POP_GAP)
        assert tuple(x) == FEATURE_NAMES
        assert all(type(v) is float and math.isfinite(v) for v in x.values())


def test_features_survive_extreme_profiles():
    p = busy_profile()
    p.update(monetary=1e308, refund_amount=1e308, gap_mean_days=0.0, gap_std_days=1e308, events=10**12)
    p["sentiment"] = [math.inf, 1.0, T0]
    x = features.features(p, T0 - 10 * DAY, population_gap_days=math.nan)  # as of before the profile began, too
    assert all(math.isfinite(v) for v in x.values())
    assert x["recency_days"] == 0.0


def test_features_describe_the_customer():
    x = features.features(busy_profile(), T0 + 40 * DAY, POP_GAP)
    assert x["is_prospect"] == 0.0 and x["log_frequency"] == pytest.approx(math.log1p(4))
    assert x["recency_days"] == pytest.approx(10.0)
    assert x["purchases_30d"] == 2.0 and x["purchases_90d"] == 4.0  # days 21 and 30 are within 30 days of day 40
    assert x["cart_items"] == 1.0 and x["has_nps"] == 1.0 and x["nps"] < 0 and x["csat"] < 0
    assert x["open_tickets"] == 0.0 and x["log_refunds"] > 0 and x["consent_any"] == 1.0 and x["consent_low_frequency"] == 1.0
    assert x["sentiment"] < 0 and x["has_sentiment"] == 1.0


def test_recency_is_relative_to_the_customers_own_rhythm():
    weekly = fold([purchase(day=7 * k) for k in range(8)])
    quarterly = fold([purchase(day=90 * k) for k in range(4)])
    as_of_w, as_of_q = weekly["last_purchase_at"] + 20 * DAY, quarterly["last_purchase_at"] + 20 * DAY
    xw, xq = features.features(weekly, as_of_w, POP_GAP), features.features(quarterly, as_of_q, POP_GAP)
    assert xw["recency_days"] == xq["recency_days"] == pytest.approx(20.0)
    assert xw["relative_recency"] > 2.0 > 1.0 > xq["relative_recency"]
    assert xw["overdue"] > 0 and xq["overdue"] == 0


def test_features_never_count_purchases_after_as_of():
    p = fold([purchase(day=0), purchase(day=10), purchase(day=20)])
    x = features.features(p, T0 + 12 * DAY, POP_GAP)
    assert x["purchases_30d"] == 2.0


# -- the shared model contract ---------------------------------------------------------------

MODELS = {
    "churn": (churn.build, churn.predict, churn.learn, lambda rng: rng.random() < 0.3),
    "next_purchase": (next_purchase.build, next_purchase.predict, next_purchase.learn, lambda rng: rng.uniform(0, 60)),
}


def sample_stream(n: int = 200, seed: int = 3) -> list[tuple[dict[str, float], object]]:
    rng = random.Random(seed)
    profile = busy_profile()
    out = []
    for i in range(n):
        x = features.features(profile, profile["last_purchase_at"] + int(rng.uniform(0, 90) * DAY), rng.uniform(5, 60))
        out.append((x, MODELS["churn"][3](rng) if i % 2 else MODELS["next_purchase"][3](rng)))
    return out


@pytest.fixture(params=sorted(MODELS))
def model_kind(request):
    return request.param


def test_contract_predicts_before_it_learns(model_kind):
    build, predict, _, _ = MODELS[model_kind]
    x = sample_stream(1)[0][0]
    value = predict(build(seed=1), x)
    assert math.isfinite(value)
    if model_kind == "churn":  # the streaming BG/NBD it corrects
        assert value == pytest.approx(1.0 / (1.0 + math.exp(-x["bgnbd_churn_logit"])))
    else:
        assert value == pytest.approx(x["gap_due_days"])  # the baseline it corrects


def test_contract_pickles(model_kind):
    build, predict, learn, make_label = MODELS[model_kind]
    rng = random.Random(0)
    model = build(seed=1)
    stream = sample_stream()
    for x, _ in stream[:150]:
        learn(model, x, make_label(rng))
    copy = pickle.loads(pickle.dumps(model))
    assert [predict(copy, x) for x, _ in stream[150:]] == [predict(model, x) for x, _ in stream[150:]]
    for x, _ in stream[150:]:  # and both go on learning alike
        y = make_label(rng)
        learn(model, x, y)
        learn(copy, x, y)
    assert predict(copy, stream[0][0]) == predict(model, stream[0][0])


def test_contract_is_deterministic_with_a_seed(model_kind):
    build, predict, learn, make_label = MODELS[model_kind]
    stream = sample_stream()
    runs = []
    for _ in range(2):
        rng = random.Random(5)
        model = build(seed=7)
        for x, _ in stream:
            learn(model, x, make_label(rng))
        runs.append([predict(model, x) for x, _ in stream[:20]])
    assert runs[0] == runs[1]


def test_contract_clone_gives_an_untrained_copy(model_kind):
    build, predict, learn, make_label = MODELS[model_kind]
    model = build(seed=1)
    x = sample_stream(1)[0][0]
    before = predict(model, x)
    for _ in range(50):
        learn(model, x, make_label(random.Random(1)))
    assert predict(model.clone(), x) == before


def test_likely_category_prefers_what_was_bought():
    p = busy_profile()
    assert next_purchase.likely_category(p, T0 + 40 * DAY) == "coffee"
    assert next_purchase.top_interest(p, T0 + 40 * DAY) in ("coffee", "tea")
    assert next_purchase.likely_category(profiles.new_profile("c2", T0), T0) is None


# -- delayed labels --------------------------------------------------------------------------


def test_purchase_within_horizon_resolves_churn_0_and_the_gap_only_then():
    pending = PendingPredictions(horizon_days=30, censor_days=120)
    pending.add("c1", T0, [0.0], payload=None)
    assert pending.advance(T0 + 9 * DAY) == []
    resolved = pending.on_purchase("c1", T0 + 10 * DAY)
    assert [(r.kind, r.value, r.at) for r in resolved] == [(CHURN, 0.0, T0 + 10 * DAY), (NEXT_PURCHASE, 10.0, T0 + 10 * DAY)]
    assert len(pending) == 0 and pending.advance(T0 + 200 * DAY) == []


def test_horizon_passing_resolves_churn_1_without_another_event():
    pending = PendingPredictions(horizon_days=30, censor_days=120)
    pending.add("c1", T0, [0.0], payload=None)
    assert pending.advance(T0 + 30 * DAY) == []  # a purchase exactly at t + H still counts as within
    [resolved] = pending.advance(T0 + 30 * DAY + 1)
    assert (resolved.kind, resolved.value, resolved.at) == (CHURN, 1.0, T0 + 30 * DAY)
    assert len(pending) == 1  # still waiting to observe the gap


def test_gap_longer_than_the_censoring_window_is_censored_not_invented():
    pending = PendingPredictions(horizon_days=30, censor_days=120)
    pending.add("c1", T0, [0.0], payload=None)
    kinds = [(r.kind, r.value) for r in pending.advance(T0 + 365 * DAY)]
    assert kinds == [(CHURN, 1.0), (CENSORED, 120.0)]
    assert len(pending) == 0 and pending.customers() == 0  # memory handed back
    assert pending.on_purchase("c1", T0 + 400 * DAY) == []


def test_labels_do_not_depend_on_how_often_the_clock_moves():
    def run(tick_days: float | None) -> list[tuple[str, float]]:
        pending = PendingPredictions(horizon_days=30, censor_days=120)
        pending.add("c1", T0, [0.0], payload=None)
        out = []
        if tick_days:
            t = T0
            while t < T0 + 45 * DAY:
                t += int(tick_days * DAY)
                out += pending.advance(t)
        out += pending.on_purchase("c1", T0 + 45 * DAY)
        return [(r.kind, r.value) for r in out]

    assert run(None) == run(1.0) == run(7.0) == [(CHURN, 1.0), (NEXT_PURCHASE, 45.0)]


def test_a_late_purchase_from_before_the_prediction_resolves_nothing():
    pending = PendingPredictions(horizon_days=30, censor_days=120)
    pending.add("c1", T0 + 10 * DAY, [0.0], payload=None)
    assert pending.on_purchase("c1", T0 + 5 * DAY) == []
    assert len(pending) == 1


def test_pending_predictions_are_bounded_per_customer():
    pending = PendingPredictions(horizon_days=30, censor_days=120, max_per_customer=4)
    added = [pending.add("c1", T0 + i * DAY, [0.0], payload=None) for i in range(7)]
    assert added == [True] * 4 + [False] * 3
    assert len(pending) == 4 and pending.skipped == 3


def test_prediction_points_are_log_spaced_into_a_silence():
    pending = PendingPredictions(horizon_days=30, censor_days=120, max_per_customer=20, min_spacing_days=1.0)
    points = []
    for hour in range(0, 70 * 24, 6):  # an event every 6 hours, 70 days after a purchase at T0
        as_of = T0 + hour * 3_600_000
        if pending.due("c1", as_of, T0, purchase=hour == 0):
            pending.add("c1", as_of, [0.0], payload=None)
            points.append(hour / 24)
    assert points == [0, 1, 2, 4, 8, 16, 32, 64]


def test_forget_drops_the_customers_pending_predictions():
    pending = PendingPredictions(horizon_days=30, censor_days=120)
    pending.add("c1", T0, [1.0, 2.0], payload="secret")
    pending.add("c2", T0, [3.0], payload=None)
    assert pending.forget("c1") == 1
    assert pending.entries("c1") == [] and len(pending) == 1
    assert b"c1" not in pickle.dumps(pending)  # nothing of theirs is persisted
    assert [r.customer_id for r in pending.advance(T0 + 31 * DAY)] == ["c2"]


def test_the_clock_costs_nothing_for_customers_with_nothing_due():
    pending = PendingPredictions(horizon_days=30, censor_days=120)
    for i in range(50_000):
        pending.add(f"c{i}", T0 + DAY, [0.0], payload=None)
    started = time.perf_counter()
    for minute in range(10_000):  # ten thousand clock ticks before anything is due
        assert pending.advance(T0 + minute * 60_000) == []
    assert time.perf_counter() - started < 0.5
    assert len(pending.advance(T0 + 32 * DAY)) == 50_000


# -- the hub ---------------------------------------------------------------------------------


def test_hub_learns_nothing_before_the_label_time():
    hub = ModelHub(horizon_days=30, seed=1)
    stream = Stream(hub)
    stream.send(purchase(day=0))
    for d in range(1, 10):
        stream.send(view(day=d))
        hub.advance(T0 + d * DAY)
    assert hub.n_learned == 0 and hub.model_version == 0 and len(hub.pending) > 0
    stream.send(purchase(day=10))
    assert hub.n_learned == 0  # the labels the purchase reveals are learned once the watermark passes it
    hub.advance(T0 + 10 * DAY)
    report = hub.metrics()
    assert report["next_purchase"]["observed"] == hub.days_learned > 0
    # Churn labels are scored as they resolve, but learned only H after their prediction, in complete cohorts:
    # learned in resolution order, "bought" comes at once and "churned" H later, a bias towards "bought".
    assert report["churn"]["labels"] > 0 and hub.churn_learned == [0, 0]
    hub.advance(T0 + 41 * DAY)
    assert hub.churn_learned[0] == report["churn"]["labels"]


def test_hub_labels_churn_for_a_customer_who_never_comes_back():
    hub = ModelHub(horizon_days=30, seed=1)
    stream = Stream(hub)
    stream.send(purchase(day=0))
    stream.send(purchase("c2", day=0))
    hub.advance(T0 + 29 * DAY)
    assert hub.n_learned == 0
    hub.advance(T0 + 31 * DAY)
    assert hub.churn_learned == [0, 2]
    assert hub.metrics()["churn"]["positive_rate"] == 1.0


def test_hub_censors_gaps_and_never_learns_an_invented_one():
    hub = ModelHub(horizon_days=30, seed=1, censor_days=60)
    stream = Stream(hub)
    stream.send(purchase(day=0))
    hub.advance(T0 + 61 * DAY)
    report = hub.metrics()["next_purchase"]
    assert report["observed"] == 0 and report["censored"] == 1 and hub.days_learned == 0
    # The one-sided update: the untrained model predicted below 60 days, so it was pushed up.
    assert hub.censored_learned == 1 and report["model"]["mae_with_censored"] > 0


def test_hub_cold_start_serves_the_streaming_bgnbd_through_the_untrained_correction():
    hub = ModelHub(horizon_days=30, seed=1, warmup_labels=3, guard_every=1, guard_margin=0.0)
    stream = Stream(hub)
    profile = fold([purchase(day=0), purchase(day=10)])
    as_of = T0 + 15 * DAY
    expected = hub.population.estimate(2, profile["first_purchase_at"], profile["last_purchase_at"], as_of, 30.0).p_none
    assert hub.churn_risk(profile, as_of, POP_GAP) == pytest.approx(expected, rel=1e-9)
    assert hub.predict(profile, as_of, POP_GAP).source == "model"
    hub.serving[0] = "bgnbd"  # as the guard would if the correction fell behind
    assert hub.churn_risk(profile, as_of, POP_GAP) == expected
    for c in range(4):
        stream.send(purchase(f"b{c}", day=0))
        stream.send(purchase(f"b{c}", day=5))  # churn 0 and a gap for each
        stream.send(purchase(f"q{c}", day=0))
    hub.advance(T0 + 31 * DAY)  # churn 1 for the q's
    assert min(hub.churn_learned) >= 3
    hub.serving = ["model", "model"]  # as the guard would once the model ranks best (test_guard.py)
    served = hub.predict(profile, as_of, POP_GAP)
    assert served.source == "model" and hub.ready == (True, True)
    assert (
        served.churn_risk
        == hub.churn_risk(profile, as_of, POP_GAP)
        == churn.predict(hub.churn_model, hub._features(profile, as_of, POP_GAP))
    )
    assert 0.0 <= served.next_purchase_in_days <= next_purchase.MAX_DAYS


class _Log(list):
    pass


def test_progressive_validation_scores_each_prediction_before_learning_from_it():
    log = _Log()

    class SpyModel:
        def __init__(self, inner, name):
            self.inner, self.name = inner, name

        def predict_proba_one(self, x):
            return self.inner.predict_proba_one(x)

        def predict_one(self, x):
            return self.inner.predict_one(x)

        def learn_one(self, x, y):
            log.append(("learn", self.name, tuple(sorted(x.items()))))
            self.inner.learn_one(x, y)

    class SpyValidation(evaluation.ProgressiveValidation):
        def score_churn(self, churned, predictions):
            log.append(("score", "churn", predictions[0]))
            super().score_churn(churned, predictions)

        def score_days(self, days, predictions):
            log.append(("score", "days", predictions[0]))
            super().score_days(days, predictions)

        def score_days_censored(self, lower_bound_days, predictions):
            log.append(("score", "days", predictions[0]))
            super().score_days_censored(lower_bound_days, predictions)

    hub = ModelHub(horizon_days=30, seed=1)
    hub.churn_model = SpyModel(hub.churn_model, "churn")
    hub.days_model = SpyModel(hub.days_model, "days")
    hub.evaluation = SpyValidation()
    made = {}
    original_add = hub.pending.add

    def add(customer_id, made_at, x, payload):
        made[(customer_id, made_at)] = payload
        return original_add(customer_id, made_at, x, payload)

    hub.pending.add = add
    stream = Stream(hub)
    rng = random.Random(4)
    for c in range(6):
        for day in sorted(rng.uniform(0, 80) for _ in range(5)):
            stream.send(purchase(f"c{c}", day=day))
            hub.advance(T0 + int(day * DAY))
    hub.advance(T0 + 300 * DAY)
    assert any(e[0] == "learn" for e in log)
    for i, entry in enumerate(log):
        if entry[0] == "learn" and entry[1] == "days":  # each learning step comes straight after the score of that label
            assert log[i - 1][:2] == ("score", "days")
        if entry[0] == "learn" and entry[1] == "churn":  # learned H after its prediction: scored before, at resolution
            scored = sum(e[:2] == ("score", "churn") for e in log[:i])
            learned = sum(e[:2] == ("learn", "churn") for e in log[: i + 1])
            assert learned <= scored
    assert sum(e[:2] == ("learn", "churn") for e in log) == sum(e[:2] == ("score", "churn") for e in log)
    # What was scored is what was predicted at the prediction point, not a later re-prediction.
    scored = [e[2] for e in log if e[:2] == ("score", "churn")]
    predicted = {payload[0][0] for payload in made.values()}
    assert set(scored) <= predicted


def test_hub_serves_days_if_the_customer_returns_and_scores_them_on_the_same_gaps():
    hub = ModelHub(horizon_days=90, seed=1)
    stream = Stream(hub)
    rng = random.Random(7)
    for c in range(40):
        for day in sorted(rng.uniform(0, 400) for _ in range(rng.choice((1, 1, 2, 4)))):
            stream.send(purchase(f"c{c}", day=day))
    hub.advance(T0 + 800 * DAY)
    once = fold([purchase(day=0)])
    silent = T0 + 200 * DAY
    everyone, if_return = (
        hub.next_purchase_in_days(once, silent, POP_GAP),
        hub.next_purchase_if_return_in_days(once, silent, POP_GAP),
    )
    estimate = hub.population.estimate(1, T0, T0, silent, 90.0)
    assert if_return == pytest.approx(estimate.next_days_if_return) and everyone == pytest.approx(estimate.next_days)
    assert if_return < everyone < hub.censor_days  # P(gone) x W is not in the answer for a customer who does come back
    days = hub.metrics()["next_purchase"]
    assert days["observed"] > 0 and days["censored"] > 0
    assert days["if_return"]["mae"] != days["bgnbd"]["mae"]  # scored on its own predictions, on the same gaps
    assert hub.next_purchase_if_return_in_days(fold([view(day=0)]), silent, POP_GAP) == pytest.approx(
        rhythm.next_purchase_in_days(0, None, None, POP_GAP)
    )  # a prospect: no purchase to count from


def test_snapshot_restore_mid_stream_resumes_exactly():
    rng = random.Random(11)
    events = []
    for c in range(25):
        gap = rng.choice((5, 12, 30))
        day = rng.uniform(0, 10)
        while day < 200:
            events.append(
                purchase(f"c{c}", day=day, items=[{"product_id": "p", "category": rng.choice("ab"), "price": 1, "quantity": 1}])
            )
            events.append(view(f"c{c}", day=day + rng.uniform(0, gap)))
            day += rng.uniform(0.5, 2) * gap
    events.sort(key=lambda e: e["ts"])
    half = len(events) // 2

    def feed(hub, stream, part):
        for ev in part:
            stream.send(ev)
            hub.advance(ev["ts"] - 3_600_000)

    hub = ModelHub(horizon_days=30, seed=3, warmup_labels=10)
    stream = Stream(hub)
    feed(hub, stream, events[:half])
    blob = hub.snapshot()
    assert ModelHub.peek(blob) == (hubs.FORMAT_VERSION, hub.model_version) and hub.model_version > 0
    restored = ModelHub.restore(blob)
    assert len(restored.pending) == len(hub.pending) > 0  # the pending buffers travel with the models
    assert restored.metrics() == hub.metrics()

    twin = Stream(restored)
    twin.profiles = pickle.loads(pickle.dumps(stream.profiles))  # the engine's profiles come back from the store
    feed(hub, stream, events[half:])
    feed(restored, twin, events[half:])
    assert restored.metrics() == hub.metrics()
    profile = stream.profiles["c0"]
    as_of = events[-1]["ts"]
    assert restored.predict(profile, as_of, POP_GAP) == hub.predict(profile, as_of, POP_GAP)


def test_a_hub_restored_from_an_older_snapshot_catches_up_on_purchases_it_missed():
    hub = ModelHub(horizon_days=30, seed=1)
    stream = Stream(hub)
    stream.send(purchase(day=0))
    blob = hub.snapshot()
    stream.send(purchase(day=5))  # applied to the profile (and stored with it), then the process dies
    restored = ModelHub.restore(blob)
    stream.hub = restored
    stream.send(view(day=6))  # the customer's next event: the profile says they bought on day 5
    restored.advance(T0 + 6 * DAY)
    assert restored.days_learned == 1 and restored.metrics()["churn"]["labels"] == 1
    assert restored.metrics()["next_purchase"]["observed"] == 1
    restored.advance(T0 + 200 * DAY)
    # The bought label of the day-0 point (learned H after it), and churn only for the day-6 point, which saw no
    # purchase after it.
    assert restored.churn_learned == [1, 1]


def test_restore_refuses_what_it_cannot_read():
    with pytest.raises(SnapshotError, match="not a model snapshot"):
        ModelHub.restore(b"{}")
    blob = ModelHub().snapshot()
    future = blob[:6] + (hubs.FORMAT_VERSION + 1).to_bytes(2, "big") + blob[8:]
    with pytest.raises(SnapshotError, match="format version"):
        ModelHub.restore(future)


def test_hub_forget_drops_the_pending_features():
    hub = ModelHub()
    stream = Stream(hub)
    stream.send(purchase("c1", day=0))
    stream.send(purchase("c2", day=0))
    hub.forget("c1")
    assert hub.pending.entries("c1") == [] and hub.pending.entries("c2")
    hub.advance(T0 + 200 * DAY)
    assert sum(hub.churn_learned) == 1


def test_a_redelivered_order_makes_no_second_prediction_point():
    hub = ModelHub()
    stream = Stream(hub)
    first = purchase(day=0, order_id="o-1")
    stream.send(first)
    points = hub.points
    stream.send(dict(first, event_id="another-id"))  # same order, new event id: applied, but not a new purchase
    assert hub.points == points


# -- evaluation --------------------------------------------------------------------------------


def test_logit_binned_auc_matches_the_exact_auc():
    rng = random.Random(2)
    pairs = [(rng.random() < 0.3, rng.random()) for _ in range(2000)]
    pairs = [(y, min(1.0, p + 0.3 * y)) for y, p in pairs]
    auc = evaluation.LogitBinnedAUC()
    for y, p in pairs:
        auc.update(y, p)
    pos = [p for y, p in pairs if y]
    neg = [p for y, p in pairs if not y]
    exact = sum((a > b) + 0.5 * (a == b) for a in pos for b in neg) / (len(pos) * len(neg))
    assert auc.get() == pytest.approx(exact, abs=0.005)


def test_evaluate_file_runs_the_engine_path_on_a_simulated_shop(tmp_path):
    path = tmp_path / "events.jsonl"
    Shop(SimulatorSettings(customers=24, days=90, seed=5)).write_files(path)
    result = evaluate_file(path, horizon_days=14, seed=1)
    report = result["metrics"]
    assert result["events"] > 1000 and result["dead"] == 0
    assert report["churn"]["labels"] > 50 and report["next_purchase"]["observed"] > 20
    assert "model" in result["table"] and "rhythm" in result["table"]
    assert evaluate_file(path, horizon_days=14, seed=1)["metrics"] == report  # replayable
    assert evaluate_file(path, 14, 1, with_models=False)["metrics"] is None


def _random_rows(seed: int, n: int) -> list[dict[str, float]]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        row = {name: rng.choice([0.0, 1.0, -2.5, rng.gauss(0, 3), rng.expovariate(0.01)]) for name in FEATURE_NAMES}
        if i % 7 == 3:
            row["unseen_before"] = rng.random()  # a key the scaler meets late
        rows.append(row)
    return rows


def _bits(values) -> list[str]:
    return [float(v).hex() for v in values]


def test_fused_learn_transform_is_learn_then_transform_bit_for_bit():
    """The hot path's one-pass StandardClip step must equal River's two calls exactly (outputs feed replay results)."""
    fused, split = components.StandardClip(3.0), components.StandardClip(3.0)
    for x in _random_rows(3, 300):
        out = fused.learn_transform_one(x)
        split.learn_one(x)
        expected = split.transform_one(x)
        assert list(out) == list(expected) and _bits(out.values()) == _bits(expected.values())
    assert {k: _bits(v) for k, v in fused.stats.items()} == {k: _bits(v) for k, v in split.stats.items()}


@pytest.mark.parametrize("kind", ["next_purchase"])  # churn is an OffsetLogistic, not a River pipeline (test_bgnbd.py)
def test_models_driven_step_by_step_equal_the_river_pipeline_bit_for_bit(kind):
    """learn_scaled / predict_scaled drive the pipeline's steps directly: same predictions and weights as River's way."""
    module = churn if kind == "churn" else next_purchase
    fast, river_way = module.build(1), module.build(1)
    rng = random.Random(4)
    for x in _random_rows(5, 400):
        x.pop("unseen_before", None)
        x["gap_due_days"] = abs(x["gap_due_days"])
        y = rng.random() < 0.3 if kind == "churn" else rng.expovariate(0.05)
        if kind == "churn":
            assert module.predict(fast, x) == float(river_way.predict_proba_one(x).get(True, 0.0))
            module.learn(fast, x, y)
            river_way.learn_one(x, bool(y))
        else:
            regressor = river_way.regressor
            expected = min(next_purchase.MAX_DAYS, max(0.0, max(0.0, x["gap_due_days"] + regressor.predict_one(x))))
            assert module.predict(fast, x) == expected
            module.learn(fast, x, y)
            regressor.learn_one(x, max(0.0, y) - x["gap_due_days"])
    fast_pipeline = fast if kind == "churn" else fast.regressor
    river_pipeline = river_way if kind == "churn" else river_way.regressor
    (fast_scaler, fast_lr), (river_scaler, river_lr) = fast_pipeline.steps.values(), river_pipeline.steps.values()
    assert fast_scaler.stats == river_scaler.stats
    assert dict(fast_lr._weights) == dict(river_lr._weights) and fast_lr.intercept == river_lr.intercept


def test_rhythm_estimates_equal_the_two_functions():
    rng = random.Random(6)
    for _ in range(500):
        frequency = rng.randrange(0, 12)
        gap = rng.choice([None, rng.uniform(0.1, 90)])
        recency = rng.choice([None, 0.0, rng.uniform(0, 400)])
        horizon, population = rng.choice([14.0, 30.0]), rng.uniform(1, 60)
        assert rhythm.estimates(frequency, gap, recency, horizon, population) == (
            rhythm.churn_risk(frequency, gap, recency, horizon, population),
            rhythm.next_purchase_in_days(frequency, gap, recency, population),
        )


@pytest.mark.parametrize("population_gap", [POP_GAP, 0.0, float("nan")])
@pytest.mark.parametrize("days_after", [0, 40, 5000])
def test_features_rhythm_estimates_are_reused_only_when_their_inputs_were_the_raw_ones(population_gap, days_after):
    p = fold([purchase(day=0), purchase(day=12)])
    as_of = T0 + 12 * DAY + days_after * DAY
    vector, risk, days = features.feature_vector_and_rhythm(p, as_of, population_gap, horizon_days=30.0)
    assert vector == features.feature_vector(p, as_of, population_gap, horizon_days=30.0)
    recency = max(0.0, (as_of - p["last_purchase_at"]) / DAY)
    raw = rhythm.estimates(p["frequency"], p["gap_mean_days"], recency, 30.0, population_gap)
    if features.rhythm_inputs_match(as_of, p["last_purchase_at"], population_gap):
        assert (risk, days) == raw
    else:
        assert days_after == 5000 or population_gap != POP_GAP


def test_likely_category_given_the_top_interest_is_the_same():
    prospect = fold([view(category="tea"), view(category="coffee", day=1)])
    for profile in (busy_profile(), prospect, profiles.new_profile("c3", T0)):
        top = next_purchase.top_interest(profile, T0 + 3 * DAY)
        assert next_purchase.likely_category(profile, T0 + 3 * DAY, top=top) == next_purchase.likely_category(
            profile, T0 + 3 * DAY
        )


@pytest.mark.parametrize("module", [features, churn, next_purchase, labels, evaluation, components, hubs])
def test_docstring_examples_run(module):
    result = doctest.testmod(module)
    assert result.failed == 0 and result.attempted > 0
