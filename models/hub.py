"""The model hub: churn and next-purchase models, their delayed labels, metrics and snapshots, in one object.

Framework-free: the engine calls it from the profile shard, after an event has
been applied, and on its event-time clock:

    hub.on_event(profile, event, event["ts"], population_gap_days)   # per applied event
    hub.advance(watermark_ms)                                         # per batch
    hub.churn_risk(profile, as_of, population_gap_days)               # when a view or a rule needs it
    hub.forget(customer_id)                                           # erasure

``on_event`` resolves the labels a purchase reveals (learning from them) and,
at the prediction cadence of models/labels.py, records a prediction point:
features, the models' predictions and the baselines' predictions, all as of
that event time. ``advance`` resolves what the passing of event time reveals
(churn after the horizon, censoring of long gaps). Every label is scored on
the prediction made before it (models/evaluation.py) and only then learned,
so ``metrics()`` is an honest progressive validation.

Serving: the serving guard (models/guard.py) picks the source, on complete cohorts (every prediction H after
it was made), from ``warmup_labels`` of them on; before, the churn model (untrained: the streaming MBG/NBD it
corrects) and the streaming MBG/NBD's next purchase serve. The churn model learns in those cohorts too. ``metrics()`` scores
the raw model (from its first prediction), every baseline and what was served.

Censored gaps (no purchase within ``censor_days`` W): the next-purchase model
never learns a made-up exact target. It makes a one-sided update: if its
prediction for that point is below W it learns W (with its absolute loss,
exactly the gradient of the hinge ``max(0, W - prediction)``), otherwise
nothing. Churn needs no such care: "no purchase within the horizon" *is*
the label. (Measured on the simulated shop: the one-sided update costs 0.2
days of MAE on observed gaps and gains a little on MAE counting censored
gaps: 9.78 vs 9.82 days.)

Snapshots (``snapshot()`` / ``ModelHub.restore``) hold the models, the
pending buffers (features and predictions waiting for labels), the metrics
and the counters, behind a header with the format version and the model
version (the number of learning steps so far; two snapshots with the same
version hold the same models). Restoring mid-stream resumes exactly: nothing
learned and nothing pending is lost. Snapshots are pickles: load them only
from the engine's own store.

Several workers. A hub is one coherent model per process; with the engine's
shards spread over processes there are three ways to share it:

1. *per-process models* (simplest): each process runs a hub over its own
   shards' customers; every customer's labels stay in one hub, so pending
   buffers are local. Each model learns from 1/P of the labels; linear models
   can be merged now and then by averaging weights and scaler statistics.
2. *one learner, many scorers*: shards keep pending buffers and resolve labels
   locally, ship (features, label) to one learner (a topic), which publishes
   a snapshot every N seconds; scorers swap it in. Scoring lags learning by
   the publish interval (seconds to minutes, negligible next to a 30-day label
   delay).
3. per-shard models merged periodically: like 1, finer grained.

A hub is not thread-safe: Bytewax worker threads of one process sharing it
must hold a lock around every call (or run one process per worker, which
the measured stack costs in docs/stack-costs.md recommend anyway).

Memory and snapshot size: per customer with open predictions, at most
``max_pending_per_customer`` entries (~0.5 KB each, features as a float
array); a churn label resolved by a purchase keeps its entry's features until H
after its prediction, when it is learned with its cohort (at most one more
entry's worth per open prediction); the models are ~2 KB each; the rolling
metric windows ~1.5 MB in all. Measured before cohort learning
(load/bench_models.py, 2,000 customers): a 5.2 MB snapshot, 2.7 KB
per customer with pending predictions, 0.3 s to write, 0.6 s to restore. At
millions of customers the pending buffers dominate (GBs): snapshot them less
often than the models, or keep them with each profile (see the report).

Cost (same benchmark, one core): ~30 us per event on average, over all
events: a prediction point on ~7% of events (features + two predictions,
~100 us) and two labels learned and scored per point (~75 us per learning
step, ~55 us to score a churn label against four sources).
"""

from __future__ import annotations

import bisect
import heapq
import math
import pickle
import struct
from collections.abc import Mapping
from typing import Any, NamedTuple

from crm_stream.errors import CrmStreamError
from crm_stream.models import churn, guard, next_purchase, rhythm
from crm_stream.models.bgnbd_stream import StreamingBGNBD, cell_of
from crm_stream.models.evaluation import CompleteCohorts, ProgressiveValidation
from crm_stream.models.features import (
    BGNBD_CHURN_LOGIT,
    BGNBD_NEXT_DAYS,
    DEFAULT_INTEREST_HALF_LIFE_DAYS,
    FEATURE_NAMES,
    MS_PER_DAY,
    as_dict,
    feature_vector,
    feature_vector_and_rhythm,
    rhythm_inputs_match,
)
from crm_stream.models.labels import CENSORED, CHURN, NEXT_PURCHASE, PendingPredictions, Resolved

FORMAT_VERSION = 6  # 2: the streaming BG/NBD, its features and the serving guard; 3: the guard compares complete cohorts;
# 4: the churn model learns in complete cohorts too; 5: next purchase if the customer returns is scored too;
# 6: the churn model's correction has a level and a slope per stage of the silence (models/churn.py)
_GAP_DUE = FEATURE_NAMES.index("gap_due_days")
_MAGIC = b"CRMHUB"
_HEADER = struct.Struct(">6sHQ")  # magic, format version, model version


class SnapshotError(CrmStreamError, ValueError):
    """A model snapshot cannot be restored (not a snapshot, or written by an incompatible version)."""


class Prediction(NamedTuple):
    churn_risk: float
    next_purchase_in_days: float
    next_category: str | None
    source: str
    """What served the churn risk: the serving guard's choice (models/guard.py), or ``too_little_data``."""


def recency_churn_score(days_since_last_purchase: float | None, horizon_days: float) -> float:
    """The naive baseline: days since the last purchase squashed into (0, 1); prospects count as long silent."""
    r = 3650.0 if days_since_last_purchase is None else days_since_last_purchase
    return r / (r + horizon_days) if r > 0 else 0.0


def frequency_churn_score(frequency: int) -> float:
    """The other naive baseline: the fewer purchases, the likelier none comes (1 / (1 + purchases))."""
    return 1.0 / (1.0 + frequency)


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z)) if z > -700 else 0.0


TOO_LITTLE_DATA = "too_little_data"
"""The basis of a prediction for a customer who has never bought: a population prior, not their own history."""


class ModelHub:
    """Churn and next-purchase models fed in event time (see the module doc).

    >>> from operators.profile.state import ProfileRules, apply, new_profile
    >>> rules, day = ProfileRules(14, 72, 64), 86_400_000
    >>> hub = ModelHub(horizon_days=30, seed=1)
    >>> profile = new_profile("c1", 0)
    >>> bought = {"event_id": "e1", "type": "purchase", "ts": 0, "order_id": "o1", "amount": 9.5, "amount_base": 9.5, "currency": "USD"}
    >>> apply(profile, bought, rules)
    True
    >>> hub.on_event(profile, bought, bought["ts"], population_gap_days=20.0)  # a prediction point, nothing learned
    >>> hub.n_learned, len(hub.pending)
    (0, 1)
    >>> hub.advance(31 * day)  # 30 days passed without a purchase: churned
    1
    >>> hub.churn_learned, hub.metrics()["churn"]["positive_rate"]
    ([0, 1], 1.0)
    >>> round(hub.churn_risk(profile, 31 * day, 20.0), 3)  # the model, one label in: still the streaming MBG/NBD
    0.934
    """

    def __init__(
        self,
        horizon_days: float = 30.0,
        seed: int = 0,
        *,
        censor_days: float | None = None,
        max_pending_per_customer: int = 8,
        min_spacing_days: float = 3.0,
        warmup_labels: int = 200,
        window: int = 10_000,
        interest_half_life_days: float = DEFAULT_INTEREST_HALF_LIFE_DAYS,
        refit_every_days: float = 7.0,
        min_buyers: int = 100,
        guard_every: int = 200,
        guard_margin: float = 0.005,
    ) -> None:
        """``censor_days`` defaults to ``max(4 * horizon_days, 90)``: long enough to see a slow buyer's gap.

        ``refit_every_days`` / ``min_buyers``: the streaming BG/NBD's refit cadence (event time) and the
        buyers it needs for a first fit. ``guard_every`` / ``guard_margin``: how often (labels) the serving
        guard looks again, and by how much a source must beat the one serving to replace it (models/guard.py).
        """
        self.horizon_days = float(horizon_days)
        self.seed = seed
        self.censor_days = float(censor_days if censor_days is not None else max(4 * horizon_days, 90.0))
        self.warmup_labels = warmup_labels
        self.interest_half_life_days = interest_half_life_days
        self.churn_model = churn.build(seed)
        self.days_model = next_purchase.build(seed)
        self.pending = PendingPredictions(
            self.horizon_days, self.censor_days, max_per_customer=max_pending_per_customer, min_spacing_days=min_spacing_days
        )
        self.evaluation = ProgressiveValidation(window)
        self.cohorts = CompleteCohorts(window, horizon_days=self.horizon_days, censor_days=self.censor_days)
        """What the serving guard compares: every prediction scored H after it was made (models/evaluation.py)."""
        self._cohort_due: list[tuple[int, str, int, bool, float, tuple[float, ...], tuple[float, ...], Any]] = []
        """Churn labels scored, waiting until H after their prediction to be learned and shown to the guard:
        (made at + H, customer, made at, churned, gap, churn scores, days scores, features)."""
        self.churn_learned = [0, 0]  # labels learned: [bought (0), churned (1)]
        self.days_learned = 0
        self.censored_learned = 0
        self.points = 0
        self.model_version = 0
        """Learning steps so far: the models' identity (same version, same models)."""
        self.population = StreamingBGNBD(refit_every_days, min_buyers)
        self.guard_every = guard_every
        self.guard_margin = guard_margin
        self.serving = [guard.START_CHURN, guard.START_DAYS]
        """Which source serves (churn, next purchase): the serving guard's choice, looked at every ``guard_every`` labels."""
        self.guard_switches = 0
        self._labels_since_guard = 0
        self._due: list[tuple[int, str, int, str, int, Resolved, set[str] | None]] = []
        """Resolved labels waiting for the watermark (``_defer``): (known at, customer, made at, kind, arrival, ...)."""
        self._arrivals = 0

    # -- the stream ----------------------------------------------------------------------------

    def on_event(
        self, profile_after: Mapping[str, Any], event: Mapping[str, Any], as_of_ms: int, population_gap_days: float
    ) -> None:
        """Call after the engine applied ``event`` to the profile (not for redeliveries)."""
        customer_id = profile_after["customer_id"]
        purchase = event["type"] == "purchase" and _recorded_purchase(profile_after, event)
        if purchase:
            # Event time moves the population fit on (models/bgnbd_stream.py: as of a past point, exactly).
            self.population.advance(event["ts"])
            self._count_purchase(profile_after, event["ts"])
        # Resolved from the profile's purchase history, not from this event alone: the same answer for
        # a purchase just applied, and a catch-up for any the hub missed (restarted from an older snapshot).
        resolved = self.pending.on_purchases(customer_id, profile_after.get("purchase_times") or [])
        if resolved:
            categories = {item["category"] for item in event.get("items") or ()} if purchase else None
            for item in resolved:
                self._defer(item, categories if purchase and item.at == event["ts"] else None)
        # A late event must not make a prediction "as of" a time before what the profile already holds.
        as_of = max(as_of_ms, profile_after["last_seen"])
        anchor = profile_after["last_purchase_at"]
        if anchor is None:
            anchor = profile_after["first_seen"]
        if self.pending.due(customer_id, as_of, anchor, purchase):
            self._record_point(customer_id, profile_after, as_of, population_gap_days)

    def advance(self, watermark_ms: int) -> int:
        """Resolve what event time up to ``watermark_ms`` reveals (churn after the horizon, censoring); returns how many."""
        self.population.advance(watermark_ms)
        for item in self.pending.advance(watermark_ms):
            self._defer(item, None)
        due, learned = self._labels_due, 0
        while due and due[0][0] <= watermark_ms:
            *_, item, categories = heapq.heappop(due)
            self._learn(item, categories)
            learned += 1
        cohort = self._cohort_due
        while cohort and cohort[0][0] < watermark_ms:  # as churn itself: once the watermark is strictly past made-at + H
            _, _, _, churned, gap, churn_scores, days_scores, x = heapq.heappop(cohort)
            self.cohorts.score(churned, churn_scores, days_scores, gap)
            # Learned here, H after the prediction, not as the label resolved: in resolution order a purchase teaches
            # "bought" at once and "churned" waits H, so while customers arrive the model learns a churn rate far too
            # low (on CDNOW at 30 days, months 2-4: mean 0.65 predicted, 0.81 observed) and ranks worse than its offset.
            churn.learn(self.churn_model, as_dict(x), churned)
            self.churn_learned[churned] += 1
            self.model_version += 1
            self._labels_since_guard += 1
            if self._labels_since_guard >= self.guard_every:
                self._labels_since_guard = 0
                self._guard()
        return learned

    @property
    def _labels_due(self) -> list[tuple[int, str, int, str, int, Resolved, set[str] | None]]:
        if "_due" not in self.__dict__:  # a hub restored from a snapshot written before labels waited
            self._due, self._arrivals = [], 0
        return self._due

    def _defer(self, item: Resolved, categories: set[str] | None) -> None:
        """A label is learned once the watermark passes the time it became known, in (that time, customer,
        prediction time, kind) order, never as its purchase arrives: live, a purchases partition is read weeks
        ahead of the others, and a model that learned those labels early would serve the earlier checks a
        future replay never saw (and live would differ from replay by the order partitions were read in)."""
        self._arrivals = self.__dict__.get("_arrivals", 0) + 1
        key = (item.at, item.customer_id, item.entry.made_at, item.kind, self._arrivals, item, categories)
        heapq.heappush(self._labels_due, key)

    def forget(self, customer_id: str) -> int:
        """Erasure: drop the customer's pending features and predictions (what was learned stays: it is aggregate).

        Returns how many were open. The next ``snapshot()`` no longer holds the customer.
        """
        due = self._labels_due
        kept = [label for label in due if label[1] != customer_id]
        if len(kept) != len(due):
            heapq.heapify(kept)
            self._due = kept
        cohort = [item for item in self._cohort_due if item[1] != customer_id]
        if len(cohort) != len(self._cohort_due):
            heapq.heapify(cohort)
            self._cohort_due = cohort
        return self.pending.forget(customer_id) + len(due) - len(kept)

    # -- serving -------------------------------------------------------------------------------

    @property
    def ready(self) -> tuple[bool, bool]:
        """(churn model serving, next-purchase model serving): the serving guard chose the learned model."""
        return (self.serving[0] == "model", self.serving[1] == "model")

    @property
    def n_learned(self) -> int:
        return sum(self.churn_learned) + self.days_learned + self.censored_learned

    def predict(self, profile: Mapping[str, Any], as_of_ms: int, population_gap_days: float) -> Prediction:
        """All served estimates at once (one feature computation at most)."""
        risk = self.churn_risk(profile, as_of_ms, population_gap_days)
        days = self.next_purchase_in_days(profile, as_of_ms, population_gap_days)
        category = next_purchase.likely_category(profile, as_of_ms, self.interest_half_life_days)
        return Prediction(risk, days, category, self.basis(profile))

    def basis(self, profile: Mapping[str, Any]) -> str:
        """What the churn risk served for this customer rests on: the serving source, or ``too_little_data``
        for a customer who never bought (their score is a population prior, not their own history)."""
        return TOO_LITTLE_DATA if not profile["frequency"] else self.serving[0]

    def churn_risk(self, profile: Mapping[str, Any], as_of_ms: int, population_gap_days: float) -> float:
        """P(no purchase in the ``horizon_days`` after ``as_of_ms``), from the source the serving guard chose.

        A look at a customer the hub learns from (one it holds prediction points for), at or after their
        last event, is a prediction point too when the cadence says so (models/labels.py): this is how
        silent customers, looked at by the churn rule's checks, enter training and the progressive scores
        (a purchase log alone would only ever give points at purchases, where recency is always 0).
        """
        customer_id = profile["customer_id"]
        if (
            as_of_ms >= profile["last_seen"]
            and self.pending.tracks(customer_id)
            and self.pending.due(customer_id, as_of_ms, profile["last_purchase_at"] or profile["first_seen"], False)
        ):
            served = self._record_point(customer_id, profile, as_of_ms, population_gap_days)
            if served is not None:
                return served
        source = self.serving[0]
        if source == "model":
            return churn.predict(self.churn_model, self._features(profile, as_of_ms, population_gap_days))
        recency, frequency, gap = _rhythm_inputs(profile, as_of_ms)
        if source == "bgnbd" and frequency and profile["first_purchase_at"] is not None:
            return self.population.estimate(
                frequency, profile["first_purchase_at"], profile["last_purchase_at"], as_of_ms, self.horizon_days
            ).p_none
        if source == "recency":
            return recency_churn_score(recency, self.horizon_days)
        return rhythm.churn_risk(frequency, gap, recency, self.horizon_days, population_gap_days)

    def next_purchase_in_days(self, profile: Mapping[str, Any], as_of_ms: int, population_gap_days: float) -> float:
        """Days from ``as_of_ms`` to the next purchase, from the source the serving guard chose."""
        source = self.serving[1]
        if source == "model":
            return next_purchase.predict(self.days_model, self._features(profile, as_of_ms, population_gap_days))
        recency, frequency, gap = _rhythm_inputs(profile, as_of_ms)
        if source == "bgnbd" and frequency and profile["first_purchase_at"] is not None:
            estimate = self.population.estimate(
                frequency, profile["first_purchase_at"], profile["last_purchase_at"], as_of_ms, self.horizon_days
            )
            return min(next_purchase.MAX_DAYS, estimate.next_days)
        if source == "gap":
            typical = rhythm.typical_gap_days(frequency, gap, population_gap_days)
            return max(0.0, typical - (recency if recency is not None else 0.0))
        return rhythm.next_purchase_in_days(frequency, gap, recency, population_gap_days)

    def next_purchase_if_return_in_days(self, profile: Mapping[str, Any], as_of_ms: int, population_gap_days: float) -> float:
        """Days from ``as_of_ms`` to the next purchase *if the customer buys again within W* (``censor_days``).

        ``next_purchase_in_days`` answers for everyone, so P(never within W) pulls it towards W (what the customers
        who leave need); for one who does return that is the wrong question. This is the streaming MBG/NBD's median
        among the futures with a purchase within W; with P(churn) it says "if they come back, in about N days".
        A prospect has no purchase to count from: the rhythm estimate's prior."""
        recency, frequency, gap = _rhythm_inputs(profile, as_of_ms)
        if not frequency or profile["first_purchase_at"] is None:
            return rhythm.next_purchase_in_days(frequency, gap, recency, population_gap_days)
        return _if_return(self.population, profile, as_of_ms, self.horizon_days, self.censor_days)

    def expected_purchases(self, profile: Mapping[str, Any], as_of_ms: int, horizon_days: float | None = None) -> float:
        """BG/NBD's conditional expectation of purchases in the horizon (0 for a prospect; not for the per-event path)."""
        if not profile["frequency"] or profile["first_purchase_at"] is None:
            return 0.0
        return self.population.expected_purchases(
            profile["frequency"],
            profile["first_purchase_at"],
            profile["last_purchase_at"],
            as_of_ms,
            self.horizon_days if horizon_days is None else horizon_days,
        )

    # -- reporting and persistence ---------------------------------------------------------------

    def metrics(self) -> dict[str, Any]:
        """Progressive (test-then-train) metrics of the models and the baselines, and the hub's counters."""
        report = self.evaluation.report()
        report["hub"] = {
            "horizon_days": self.horizon_days,
            "censor_days": self.censor_days,
            "model_version": self.model_version,
            "n_learned": self.n_learned,
            "churn_learned": {"bought": self.churn_learned[0], "churned": self.churn_learned[1]},
            "days_learned": self.days_learned,
            "censored_learned": self.censored_learned,
            "serving": {"churn": self.serving[0], "next_purchase": self.serving[1]},
            "guard_switches": self.guard_switches,
            "bgnbd": {"params": dict(self.population.params._asdict()), "fits": self.population.fits},
            "prediction_points": self.points,
            "points_skipped": self.pending.skipped,
            "pending_open": len(self.pending),
            "pending_customers": self.pending.customers(),
            "watermark": self.pending.watermark,
        }
        return report

    def snapshot(self) -> bytes:
        """Everything needed to resume: models, pending buffers, metrics, counters (see the module doc)."""
        header = _HEADER.pack(_MAGIC, FORMAT_VERSION, self.model_version)
        return header + pickle.dumps(self.__dict__, protocol=pickle.HIGHEST_PROTOCOL)

    @classmethod
    def restore(cls, blob: bytes) -> ModelHub:
        format_version, _ = cls.peek(blob)
        if format_version != FORMAT_VERSION:
            raise SnapshotError(
                f"model snapshot has format version {format_version}, this code reads {FORMAT_VERSION}: "
                "start with a fresh ModelHub (it re-learns from the stream) or run the version that wrote it"
            )
        hub = cls.__new__(cls)
        hub.__dict__.update(pickle.loads(blob[_HEADER.size :]))
        return hub

    @staticmethod
    def peek(blob: bytes) -> tuple[int, int]:
        """(format version, model version) of a snapshot, without loading it."""
        if len(blob) < _HEADER.size or blob[: len(_MAGIC)] != _MAGIC:
            raise SnapshotError(
                f"not a model snapshot (starts with {bytes(blob[:8])!r}): expected one made by ModelHub.snapshot()"
            )
        _, format_version, model_version = _HEADER.unpack_from(blob)
        return format_version, model_version

    # -- internals -----------------------------------------------------------------------------

    def _features(self, profile: Mapping[str, Any], as_of_ms: int, population_gap_days: float) -> dict[str, float]:
        return as_dict(self._vector(profile, as_of_ms, population_gap_days))

    def _vector(self, profile: Mapping[str, Any], as_of_ms: int, population_gap_days: float) -> list[float]:
        return feature_vector(
            profile,
            as_of_ms,
            population_gap_days,
            horizon_days=self.horizon_days,
            interest_half_life_days=self.interest_half_life_days,
            population=self.population,
        )

    def _record_point(self, customer_id: str, profile: Mapping[str, Any], as_of: int, population_gap_days: float) -> float | None:
        """Record a prediction point; returns the churn risk served there (None when the customer's buffer is full)."""
        vector, churn_rhythm, days_rhythm = feature_vector_and_rhythm(
            profile,
            as_of,
            population_gap_days,
            horizon_days=self.horizon_days,
            interest_half_life_days=self.interest_half_life_days,
            population=self.population,
        )
        x = as_dict(vector)
        recency, frequency, gap = _rhythm_inputs(profile, as_of)
        if not rhythm_inputs_match(as_of, profile["last_purchase_at"], population_gap_days):
            # The features' estimates saw clipped inputs: the baselines are scored on the raw ones.
            churn_rhythm, days_rhythm = rhythm.estimates(frequency, gap, recency, self.horizon_days, population_gap_days)
        churn_model = churn.predict(self.churn_model, x)
        days_model = next_purchase.predict(self.days_model, x)
        top = next_purchase.top_interest(profile, as_of, self.interest_half_life_days)
        churn_recency = recency_churn_score(recency, self.horizon_days)
        churn_bgnbd = _sigmoid(vector[BGNBD_CHURN_LOGIT])
        days_bgnbd = min(next_purchase.MAX_DAYS, vector[BGNBD_NEXT_DAYS])
        churn_source, days_source = self.serving
        churn_scores = (churn_model, churn_rhythm, churn_recency, churn_bgnbd)
        days_scores = (days_model, days_rhythm, vector[_GAP_DUE], days_bgnbd)
        days_if_return = (
            _if_return(self.population, profile, as_of, self.horizon_days, self.censor_days) if frequency else days_rhythm
        )
        payload = (
            (
                churn_model,
                churn_scores[_CHURN_INDEX[churn_source]],
                churn_rhythm,
                churn_recency,
                churn_bgnbd,
                frequency_churn_score(frequency),
            ),
            (days_model, days_scores[_DAYS_INDEX[days_source]], days_rhythm, vector[_GAP_DUE], days_bgnbd, days_if_return),
            (next_purchase.likely_category(profile, as_of, self.interest_half_life_days, top=top), top),
        )
        if self.pending.add(customer_id, as_of, vector, payload):
            self.points += 1
            return payload[0][1]
        return None

    def _learn(self, resolved: Resolved, categories: set[str] | None) -> None:
        """Score the prediction made back then, *then* learn from its label (the order is the point)."""
        entry = resolved.entry
        churn_scores, days_scores, category_guesses = entry.payload
        if resolved.kind == CHURN:
            churned = resolved.value >= 0.5
            self.evaluation.score_churn(churned, churn_scores)
            # The guard sees this label, and the model learns it, H after its prediction, with every other label
            # of that cohort (``advance``).
            gap = self.horizon_days if churned else (resolved.at - entry.made_at) / MS_PER_DAY
            due = entry.made_at + int(self.horizon_days * MS_PER_DAY)
            cohort = (due, resolved.customer_id, entry.made_at, churned, gap, churn_scores, days_scores, entry.x)
            heapq.heappush(self._cohort_due, cohort)
            return
        x = as_dict(entry.x)  # the next-purchase model's input (a churn label is learned later, from entry.x)
        if resolved.kind == NEXT_PURCHASE:
            self.evaluation.score_days(resolved.value, days_scores)
            if categories is not None:
                self.evaluation.score_category(categories, category_guesses)
            next_purchase.learn(self.days_model, x, resolved.value)
            self.days_learned += 1
        elif resolved.kind == CENSORED:
            self.evaluation.score_days_censored(resolved.value, days_scores)
            if next_purchase.predict(self.days_model, x) >= resolved.value:
                return  # already predicts "at least W": a one-sided loss has nothing to teach
            next_purchase.learn(self.days_model, x, resolved.value)
            self.censored_learned += 1
        else:  # pragma: no cover - labels.py defines the kinds
            raise ValueError(f"unknown label kind {resolved.kind!r}")
        self.model_version += 1

    def _guard(self) -> None:
        """Look again at which source serves (models/guard.py), on complete cohorts, once each has enough of them."""
        cohorts, evaluation = self.cohorts, self.evaluation
        chosen, days_chosen = self.serving
        if min(cohorts.positives, cohorts.labels - cohorts.positives) >= self.warmup_labels:  # an AUC needs both classes
            scores = {name: cohorts.churn_auc(name) for name in guard.CHURN_CANDIDATES}
            # The lead must beat the AUC's noise over the rolling window too: on CDNOW's first cohorts a 0.006 lead
            # (model 0.548, MBG/NBD 0.542) switched, and the model or rhythm then served months where the MBG/NBD
            # ranked better (progressive served AUC 0.728 against 0.779 for the MBG/NBD it builds on, 30 days).
            share = min(1.0, evaluation.window / cohorts.labels)
            noise = guard.auc_standard_error(cohorts.positives * share, (cohorts.labels - cohorts.positives) * share)
            chosen = guard.choose(scores, chosen, margin=self.guard_margin, higher_is_better=True, noise=noise)
        # Once censored gaps were scored, the rolling error counting the shortfalls at W: on observed gaps alone,
        # predicting "soon" for everyone looks good, since the customers who never come back are never scored.
        # Before (W is months), only a source better whatever the unseen gaps turn out to be (CompleteCohorts).
        if self.days_learned >= self.warmup_labels and evaluation.days_censored >= self.warmup_labels:
            days_scores = {name: evaluation.days[name].rolling_with_censored.get() for name in guard.DAYS_CANDIDATES}
            days_chosen = guard.choose(days_scores, days_chosen, margin=self.guard_margin * 10, higher_is_better=False)
        elif cohorts.labels >= self.warmup_labels:
            # ...and that tells the customers who leave a longer wait than those who buy: an estimate that says "soon"
            # to leavers is the failure censored gaps would expose, and they have not been seen yet.
            # A source that stops doing so goes back to the cold start (the one that holds no such promise).
            bounds = {
                name: cohorts.days_bounds(name)
                for name in guard.DAYS_CANDIDATES
                if name == guard.START_DAYS or cohorts.days_ranks_churners_later(name)
            }
            days_chosen = guard.choose_surely_better(bounds, days_chosen if days_chosen in bounds else guard.START_DAYS)
        if [chosen, days_chosen] != self.serving:
            self.guard_switches += 1
            self.serving = [chosen, days_chosen]

    def _count_purchase(self, profile: Mapping[str, Any], ts: int) -> None:
        """Move the customer's cell of the streaming BG/NBD: O(1) from the profile as it stands after the purchase."""
        frequency = profile["frequency"]
        first, last = profile["first_purchase_at"], profile["last_purchase_at"]
        if first is None or last is None:
            return
        new = cell_of(frequency, first, last)
        if frequency <= 1:
            old = None
        else:
            times = profile["purchase_times"]
            if ts == last:  # the usual case: the newest purchase; before it, the last was the one before
                old = cell_of(frequency - 1, first, times[-2] if len(times) >= 2 else first)
            elif ts == first:  # a late purchase earlier than every other: the first moved back
                old = cell_of(frequency - 1, times[1] if len(times) >= 2 else last, last)
            else:
                old = cell_of(frequency - 1, first, last)
        self.population.on_purchase(old, new, ts)


_CHURN_INDEX = {"model": 0, "rhythm": 1, "recency": 2, "bgnbd": 3}
_DAYS_INDEX = {"model": 0, "rhythm": 1, "gap": 2, "bgnbd": 3}


def _recorded_purchase(profile: Mapping[str, Any], event: Mapping[str, Any]) -> bool:
    """Did this purchase event count as a new purchase (not the same order again under another event id)?"""
    times = profile["purchase_times"]
    ts = event["ts"]
    i = bisect.bisect_left(times, ts)
    return i < len(times) and times[i] == ts


def _if_return(population: StreamingBGNBD, profile: Mapping[str, Any], as_of_ms: int, horizon: float, within: float) -> float:
    """The streaming MBG/NBD's median days to the next purchase among futures with one within ``within`` days (a buyer)."""
    first, last = profile["first_purchase_at"], profile["last_purchase_at"]
    estimate = population.estimate(profile["frequency"], first, last if last is not None else first, as_of_ms, horizon, within)
    return min(next_purchase.MAX_DAYS, estimate.next_days_if_return)


def _rhythm_inputs(profile: Mapping[str, Any], as_of_ms: int) -> tuple[float | None, int, float | None]:
    last = profile["last_purchase_at"]
    recency = None if last is None else max(0.0, (as_of_ms - last) / MS_PER_DAY)
    return recency, profile["frequency"], profile["gap_mean_days"]


__all__ = [
    "FEATURE_NAMES",
    "FORMAT_VERSION",
    "TOO_LITTLE_DATA",
    "ModelHub",
    "Prediction",
    "SnapshotError",
    "frequency_churn_score",
    "recency_churn_score",
]
