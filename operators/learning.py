"""The online models of one process, shared by its shards, and how they are kept.

One model per process (not per shard): every shard's feedback teaches the same
model, and the model is read by every shard. Snapshots go to the store on a
cadence (``SAVE_EVERY_LABELS`` labels or ``SAVE_EVERY_S`` seconds, whichever
first) and are read back at start, so a restart keeps what was learned. With
several processes each learns from its own customers' feedback and the last
snapshot written wins at the next start: documented in the README.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from models.anger_model import AngerModel
from operators import anger
from operators.keys import KeySpace
from operators.io import Store
from operators.profile import ANGER

SAVE_EVERY_LABELS = 50
SAVE_EVERY_S = 60.0
MAX_ESCALATIONS = 20
Effect = tuple[str, str | None, Any]


class SharedModels:
    def __init__(self, store: Store, keys: KeySpace, seed: int = 0, threshold: float = anger.DEFAULT_ESCALATION_THRESHOLD) -> None:
        self.keys = keys
        self._lock = threading.Lock()
        raw = store.get_many([keys.model("anger")])[0]
        self.anger = AngerModel.from_bytes(raw) if raw else AngerModel(seed)
        self._unsaved = 0
        self._last_save = time.monotonic()

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
        escalations = profile["escalations"]
        escalations[alert_id] = text[:500]
        while len(escalations) > MAX_ESCALATIONS:
            del escalations[next(iter(escalations))]

    def learn_feedback(self, profile: dict[str, Any], event: dict[str, Any]) -> list[Effect]:
        """An agent's label on an escalation teaches the model; returns a snapshot to store when one is due."""
        text = profile["escalations"].get(event["alert_id"])
        if text is None:
            return []  # feedback on another kind of alert, or one older than we keep
        with self._lock:
            self.anger.learn(text, anger.score_message(text), event["label"] == "correct")
            self._unsaved += 1
            return self._snapshot_if_due()

    def _snapshot_if_due(self) -> list[Effect]:
        if self._unsaved < SAVE_EVERY_LABELS and time.monotonic() - self._last_save < SAVE_EVERY_S:
            return []
        self._unsaved, self._last_save = 0, time.monotonic()
        return [("put", self.keys.model("anger"), self.anger.to_bytes())]

    def flush(self) -> list[Effect]:
        """A snapshot of whatever was learned since the last one (at shutdown or when asked)."""
        with self._lock:
            if not self._unsaved:
                return []
            self._unsaved, self._last_save = 0, time.monotonic()
            return [("put", self.keys.model("anger"), self.anger.to_bytes())]


def _with_score(score: anger.AngerScore, value: float) -> anger.AngerScore:
    from dataclasses import replace

    return replace(score, score=value)
