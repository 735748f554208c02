"""The online models of one process, shared by its shards, and how they are kept.

Two models: the anger model (learns from agents' feedback) and the customer
model hub (churn and next purchase, learns from delayed labels; models/hub.py).
One of each per process, not per shard: every shard teaches and reads the same
model, behind a lock because Bytewax worker threads share the process.
Snapshots go to the store on a cadence and at the end of input, and are read
back at start, so a restart keeps what was learned. With several processes,
each learns from its own customers and the last snapshot written wins at the
next start (README, "Models").
"""

from __future__ import annotations

import logging
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import replace
from typing import Any, cast

from crm_stream.config.settings import ModelSettings
from crm_stream.models.anger import lexicon as anger
from crm_stream.models.anger.model import AngerModel
from crm_stream.models.hub import ModelHub, SnapshotError
from crm_stream.operators.io.interface import PUT, Effect, Store
from crm_stream.operators.io.keys import KeySpace
from crm_stream.operators.privacy.erasure import erasure_token
from crm_stream.operators.privacy.redact import redact
from crm_stream.operators.profile.state import ANGER, Profile, purchases_as_of
from crm_stream.operators.rules.churn_risk import ServiceBudget

log = logging.getLogger(__name__)
SAVE_EVERY_LABELS = 50
SAVE_EVERY_S = 60.0
MAX_ESCALATIONS = 20


ERASURE_SNAPSHOT_MIN_S = 5.0
"""Erasures replace the stored model snapshot at most this often (the customer leaves it within this time). A crash
inside this window cannot bring them back: the next start forgets again every customer the shard records still guard
as erased (``_forget_erased``)."""


class SharedModels:
    def __init__(
        self, store: Store, keys: KeySpace, cfg: ModelSettings | None = None, horizon_days: float = 30.0, shards: int = 0
    ) -> None:
        """``shards``: how many profile shards write a shard record (engine.shards); 0 skips the start-up check of
        recent erasures (tests and tools that build a hub of their own)."""
        self.keys = keys
        self._encode = store.encode  # bytes pass through, or are sealed at rest (store.pii_key: the hub holds customer ids)
        self.cfg = cfg or ModelSettings()
        self._lock = threading.Lock()
        self.churn_budget = ServiceBudget()
        """The process's daily budget of churn_risk service alerts, shared by its shards (operators/rules/churn_risk.py)."""
        raw_anger, raw_hub = store.get_many([keys.model("anger"), keys.model("customer")])
        self.anger = AngerModel(self.cfg.seed)
        if raw_anger:
            try:
                self.anger = AngerModel.from_bytes(raw_anger)
            except ValueError as exc:  # an older format: its features are not this version's
                log.error(
                    "the anger model snapshot in the store is not readable by this version (%s): starting a new "
                    "model (agents' earlier labels are not replayed)",
                    exc,
                )
        self.hub: ModelHub | None = None
        if self.cfg.enabled:
            try:
                self.hub = ModelHub.restore(raw_hub) if raw_hub else ModelHub(horizon_days, self.cfg.seed)
            except SnapshotError as exc:
                log.error("the customer model snapshot in the store is unreadable (%s): starting a new model", exc)
                self.hub = ModelHub(horizon_days, self.cfg.seed)
            if self.hub.horizon_days != horizon_days:
                log.warning(
                    "the stored customer model was trained for a %s-day horizon, not %s: starting a new model",
                    self.hub.horizon_days,
                    horizon_days,
                )
                self.hub = ModelHub(horizon_days, self.cfg.seed)
        self._unsaved = 0
        self._last_save = time.monotonic()
        forgotten = self._forget_erased(store, keys, shards) if self.hub is not None and shards else 0
        self._hub_version = self.hub.model_version if self.hub else 0
        self._hub_saved_at = time.monotonic()
        self._erased = forgotten > 0
        """A customer was forgotten since the last snapshot: a batch soon writes one, whatever the cadence."""
        self._erasure_saved_at = -ERASURE_SNAPSHOT_MIN_S  # the first erasure's snapshot goes out at once

    def anger_score(self, profile: dict[str, Any], event: dict[str, Any]) -> tuple[float, list[str]]:
        """The escalation score of an inbound message: text (rule blended with the learned model), then context."""
        text_score = event.get(ANGER) or anger.score_message(event["text"])
        blended = self.anger.predict_proba(event["text"], text_score)
        ticket = profile["tickets"].get(event["ticket_id"], {})
        recent = sum(1 for t in ticket.get("inbound_times", ()) if event["ts"] - 86_400_000 < t <= event["ts"])
        score, context = anger.contextual_anger(
            _with_score(text_score, blended), recent, bool(ticket.get("reopened")), profile["last_csat"], profile["nps"]
        )
        why = anger.reasons(text_score.signals) + context
        if self.anger.n_learned:
            why.append(f"learned from {self.anger.n_learned} agent labels")
        return score, why

    def remember_escalation(self, profile: dict[str, Any], alert_id: str, text: str) -> None:
        """Keep what the model needs to learn from this message when an agent labels the alert: a digest (hashed
        tokens of the redacted text, and the rule's signals), never the customer's words (README: Privacy)."""
        escalations = profile["escalations"]
        clipped = redact(text)[:500]
        escalations[alert_id] = AngerModel.digest(clipped, anger.score_message(clipped))
        while len(escalations) > MAX_ESCALATIONS:
            del escalations[next(iter(escalations))]

    def learn_feedback(self, profile: dict[str, Any], event: dict[str, Any]) -> list[Effect]:
        """An agent's label on an escalation teaches the model; returns a snapshot to store when one is due."""
        kept = profile["escalations"].get(event["alert_id"])
        if kept is None:
            return []  # feedback on another kind of alert, or one older than we keep
        with self._lock:
            if isinstance(kept, dict):
                self.anger.learn_digest(kept, event["label"] == "correct")
            else:  # a profile written before digests: the text itself
                self.anger.learn(kept, anger.score_message(kept), event["label"] == "correct")
            self._unsaved += 1
            return self._snapshot_if_due()

    def _snapshot_if_due(self) -> list[Effect]:
        if self._unsaved < SAVE_EVERY_LABELS and time.monotonic() - self._last_save < SAVE_EVERY_S:
            return []
        self._unsaved, self._last_save = 0, time.monotonic()
        return [Effect(PUT, self.keys.model("anger"), self._encode(self.anger.to_bytes()))]

    # -- the customer model hub --------------------------------------------------------

    def on_event(self, profile: dict[str, Any], event: dict[str, Any], population_gap_days: float) -> None:
        if self.hub is not None and self._trains_on(profile["customer_id"]):
            with self._lock:
                self.hub.on_event(profile, event, event["ts"], population_gap_days)

    def _trains_on(self, customer_id: str) -> bool:
        fraction = self.cfg.train_fraction
        return fraction >= 1.0 or zlib.crc32(customer_id.encode()) % 10_000 < fraction * 10_000

    def advance(self, watermark_ms: int) -> list[Effect]:
        """Labels whose horizon the watermark passed are learned; returns a snapshot when one is due."""
        if self.hub is None or watermark_ms <= 0 and not self._erased:
            return []
        with self._lock:
            self.hub.advance(watermark_ms)
            # The stored snapshot still holds an erased customer's pending features: replace it now, or, within
            # ERASURE_SNAPSHOT_MIN_S of the last such replacement, then (a snapshot of a large hub costs ~0.2 s
            # per 10 MB: a stream of erasures must not snapshot every batch).
            if self._erased and time.monotonic() - self._erasure_saved_at >= ERASURE_SNAPSHOT_MIN_S:
                self._erased, self._erasure_saved_at = False, time.monotonic()
                return self._hub_snapshot(force=True)
            if time.monotonic() - self._hub_saved_at < self.cfg.snapshot_every_s:
                return []
            return self._hub_snapshot()

    def _hub_snapshot(self, force: bool = False) -> list[Effect]:
        assert self.hub is not None
        self._hub_saved_at = time.monotonic()
        if self.hub.model_version == self._hub_version and not force:
            return []
        self._hub_version = self.hub.model_version
        return [Effect(PUT, self.keys.model("customer"), self._encode(self.hub.snapshot()))]

    def _forget_erased(self, store: Store, keys: KeySpace, shards: int) -> int:
        """Drop what the restored snapshot still holds of customers erased moments before the last stop.

        An erasure deletes the profile and records its guard (a hash of the id, operators/privacy/erasure.py) in
        the shard record, both in one atomic store write; the model snapshot without the customer follows within
        ``ERASURE_SNAPSHOT_MIN_S``. A crash in between leaves the customer's pending predictions in the stored
        snapshot, and the restart skips the re-read erasure as done: so the snapshot is checked here against every
        shard's guards, and the customer forgotten again (the next batch writes the snapshot without them).
        Returns how many pending predictions were dropped.
        """
        assert self.hub is not None
        tokens: set[str] = set()
        for blob in store.get_many([keys.shard(n) for n in range(shards)]):
            if blob:
                tokens.update((store.decode(blob).get("erasures") or {}).keys())
        if not tokens:
            return 0
        dropped = sum(self.hub.forget(c) for c in self.hub.pending.customer_ids() if erasure_token(c) in tokens)
        if dropped:
            log.info("the model snapshot held %d pending predictions of customers erased before the restart: forgotten", dropped)
        return dropped

    def forget(self, customer_id: str) -> int:
        """Erasure: drop the customer's pending predictions; returns how many. The next batch snapshots the hub."""
        if self.hub is None:
            return 0
        with self._lock:
            dropped = self.hub.forget(customer_id)
            self._erased = self._erased or dropped > 0
            return dropped

    def churn_risk(self, profile: dict[str, Any], as_of: int, population_gap_days: float) -> float | None:
        """Served as of ``as_of``, with the purchases made by then (a check fired at the watermark may find later
        ones, read ahead: ``purchases_as_of``)."""
        return self._served(ModelHub.churn_risk, profile, as_of, population_gap_days)

    def next_purchase_in_days(self, profile: dict[str, Any], as_of: int, population_gap_days: float) -> float | None:
        return self._served(ModelHub.next_purchase_in_days, profile, as_of, population_gap_days)

    def next_purchase_if_return_in_days(self, profile: dict[str, Any], as_of: int, population_gap_days: float) -> float | None:
        """Days to the next purchase if the customer buys again (``ModelHub.next_purchase_if_return_in_days``)."""
        return self._served(ModelHub.next_purchase_if_return_in_days, profile, as_of, population_gap_days)

    def _served(
        self, estimate: Callable[[ModelHub, Profile, int, float], float], profile: dict[str, Any], as_of: int, gap: float
    ) -> float | None:
        """One of the hub's served estimates, as of ``as_of`` with the purchases made by then; None without models."""
        if self.hub is None:
            return None
        then = purchases_as_of(cast(Profile, profile), as_of)
        with self._lock:
            return estimate(self.hub, then, as_of, gap)

    def report(self) -> dict[str, Any]:
        """Counters and progressive scores for the metrics port, read at scrape time (cheap: no ``hub.metrics()`` dict walk)."""
        with self._lock:
            out: dict[str, Any] = {
                "labels": {("anger", "feedback"): self.anger.n_learned},
                "churn_auc": {},
                "next_purchase_mae": {},
                "serving": {},
                "serving_source": {},
                "version": 0,
                "pending": 0,
            }
            hub = self.hub
            if hub is None:
                return out
            evaluation = hub.evaluation
            out["labels"].update(
                {
                    ("churn", "bought"): evaluation.churn_labels - evaluation.churn_positives,
                    ("churn", "churned"): evaluation.churn_positives,
                    ("next_purchase", "observed"): evaluation.days_observed,
                    ("next_purchase", "censored"): evaluation.days_censored,
                }
            )
            if evaluation.churn_labels:
                for source, scores in evaluation.churn.items():
                    out["churn_auc"][(source, "all")] = scores.auc.get()
                    out["churn_auc"][(source, "rolling")] = scores.rolling_auc.get()
            if evaluation.days_observed:
                for source, days in evaluation.days.items():
                    out["next_purchase_mae"][(source, "all")] = days.mae.get()
                    out["next_purchase_mae"][(source, "rolling")] = days.rolling_mae.get()
            churn_ready, days_ready = hub.ready
            out["serving"] = {"churn": churn_ready, "next_purchase": days_ready}
            # Which estimate the serving guard chose (models/guard.py): the model or one of its baselines.
            out["serving_source"] = {"churn": hub.serving[0], "next_purchase": hub.serving[1]}
            out["version"] = hub.model_version
            out["pending"] = len(hub.pending)
            return out

    def flush(self) -> list[Effect]:
        """A snapshot of whatever was learned since the last one (at the end of input, or when asked)."""
        with self._lock:
            out: list[Effect] = []
            if self._unsaved:
                self._unsaved, self._last_save = 0, time.monotonic()
                out.append(Effect(PUT, self.keys.model("anger"), self._encode(self.anger.to_bytes())))
            if self.hub is not None:
                out.extend(self._hub_snapshot(force=self._erased))
                self._erased = False
            return out


def _with_score(score: anger.AngerScore, value: float) -> anger.AngerScore:
    return replace(score, score=value)
