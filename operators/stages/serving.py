"""What the rules ask of the models, for one profile shard.

- ``churn_risk``: the churn risk served at an event time: the online models' (operators/stages/learning.py,
  which serve whichever estimate ranks best), else the customer's own purchase rhythm (models/rhythm.py);
- ``reachable``: whether a marketing trigger could reach the customer on any channel (policy/governance.py);
- ``look``: a rule's check looked at a customer and needed no prediction: the models still take it as a
  prediction point if they want one there, so training is the same as when every check asked.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from crm_stream.config.settings import Settings
from crm_stream.models import rhythm
from crm_stream.operators.events.timeutil import MS_PER_DAY
from crm_stream.operators.policy import governance
from crm_stream.operators.profile.segments import EVENT_LINES_LAG_MS, Thresholds
from crm_stream.operators.profile.state import Profile, purchases_as_of
from crm_stream.operators.stages.learning import SharedModels


class Serving:
    """``lines(ts)``: the shop's segment lines in force at event time ``ts`` (their population gap is the prior)."""

    def __init__(self, models: SharedModels, lines: Callable[[int], Thresholds], settings: Settings) -> None:
        self.models, self.lines, self.settings = models, lines, settings

    def churn_risk(self, profile: dict[str, Any], as_of: int) -> float:
        # The models' features read the lines of EVENT_LINES_LAG_MS before, as at events: a check's point may be taken
        # before the event that follows it (ProfileShard._check_before), when its own day's lines are not complete.
        modelled = self.models.churn_risk(profile, as_of, self.lines(as_of - EVENT_LINES_LAG_MS).population_gap_days)
        if modelled is not None:
            return modelled
        thresholds = self.lines(as_of)
        # With the purchases made by then, as the models: live, a later one may be applied already (read ahead).
        then = purchases_as_of(cast(Profile, profile), as_of)
        last = then["last_purchase_at"]
        recency = max(0.0, (as_of - last) / MS_PER_DAY) if last is not None else None
        return rhythm.churn_risk(
            then["frequency"],
            then["gap_mean_days"],
            recency,
            self.settings.engine.churn_horizon_days,
            thresholds.population_gap_days,
        )

    def reachable(self, profile: dict[str, Any]) -> bool:
        return governance.channel_for(profile, self.settings.governance) is not None

    def look(self, profile: dict[str, Any], as_of: int) -> None:
        hub = self.models.hub
        if hub is None or as_of < profile["last_seen"]:
            return
        customer_id, anchor = profile["customer_id"], profile["last_purchase_at"] or profile["first_seen"]
        # The hub's own condition for a point (ModelHub.churn_risk): two reads of its pending book; the prediction
        # that may follow takes the models' lock.
        if hub.pending.tracks(customer_id) and hub.pending.due(customer_id, as_of, anchor, False):
            self.churn_risk(profile, as_of)
