"""Alert rules: one small module each, registered in ``RULES``.

A rule is a module with ``KIND``, declarations of what it reacts to, and up to three pure functions of a
``RuleContext``:

- ``REACTS_TO``: event types after which ``on_event(ctx) -> list[Candidate]`` runs;
- ``ON_SEGMENT_CHANGE``: ``on_event`` also runs whenever the customer's segment moves (after an event or at a timer);
- ``REARMS_ON``: event types after which ``deadline(ctx) -> int | None`` is asked when this customer should next
  be looked at (absence rules); ``on_timer(ctx) -> list[Candidate]`` looks again at that deadline (``ctx.now`` is
  the deadline, ``ctx.event`` is None);
- ``TEACHES_ANGER``: agents' feedback on its alerts trains the anger model.

The shard dispatches from these declarations only (``plan_for``); it knows no rule by name. Rules only
propose; the shard deduplicates, holds marketing triggers (operators/policy/triggers.py) and emits.

To add a rule: a module here with its declarations and thresholds in ``config.settings.RuleSettings``, appended
to ``RULES``, and a test with a small event sequence (``context`` builds a ``RuleContext`` to call it directly).
The alert itself is built with ``alerts.make_alert`` (deterministic ids).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any, NamedTuple

from crm_stream.config.settings import RuleSettings
from crm_stream.operators.io.interface import MARKETING
from crm_stream.operators.profile.segments import Thresholds
from crm_stream.operators.rules.alerts import alert_id


class Candidate(NamedTuple):
    destination: str  # operators.io.interface.SERVICE or MARKETING
    alert: dict[str, Any]


@dataclass(slots=True)
class RuleContext:
    profile: dict[str, Any]
    event: dict[str, Any] | None
    now: int
    cfg: RuleSettings
    thresholds: Thresholds
    churn_risk: Callable[[dict[str, Any], int], float]
    anger: Callable[[dict[str, Any], dict[str, Any]], tuple[float, list[str]]]
    returns: Any  # operators.rules.return_spike.ReturnWatch
    segment_before: str
    segment_after: str
    cfg_horizon_days: float = 30.0
    churn_budget: Any = None  # operators.rules.churn_risk.ServiceBudget, one per process; None: no daily budget
    reachable: Callable[[dict[str, Any]], bool] = lambda _profile: True
    """Does the customer consent to marketing on some channel now (a marketing trigger can be held at all)?"""
    look: Callable[[dict[str, Any], int], None] = lambda _profile, _as_of: None
    """A check looked at the customer without asking the model: the models may still take it as a prediction point."""

    @property
    def customer_id(self) -> str:
        return self.profile["customer_id"]

    def high_value(self) -> bool:
        return self.profile["monetary"] >= self.thresholds.high_value

    def can_raise(self, destination: str, kind: str, situation: str) -> bool:
        """Could an alert of this rule for this situation go out at all? False when the customer already had it
        (the shard would drop it as a duplicate: a cooldown still running) or when it is a marketing trigger and the
        customer consents to no channel (it would be suppressed). A rule asks before paying for a model
        prediction or building the alert, so a timer's cost follows what it can produce.

        >>> from crm_stream.operators.profile.state import new_profile
        >>> ctx = context(new_profile("c1", 0), reachable=lambda _p: False)
        >>> ctx.can_raise("service", "churn_risk", "5"), ctx.can_raise("marketing", "churn_risk", "5")
        (True, False)
        >>> ctx.profile["alerted"][alert_id("churn_risk", "c1", "5")] = 9
        >>> ctx.can_raise("service", "churn_risk", "5")
        False
        """
        if alert_id(kind, self.profile["customer_id"], situation) in self.profile.get("alerted", ()):
            return False
        return destination != MARKETING or self.reachable(self.profile)

    def last_purchase_by_now(self) -> int | None:
        """The last purchase at or before ``now``: a timer judges the past as it was at its deadline,
        even if later events were already applied (they may arrive in the same batch)."""
        times = self.profile["purchase_times"]  # sorted (profile/state.py inserts in order)
        i = bisect.bisect_right(times, self.now)
        return times[i - 1] if i else None


def _registry() -> list[ModuleType]:
    from crm_stream.operators.rules import (
        abandoned_interest,
        angry_customer,
        churn_risk,
        replenishment,
        return_spike,
        segment_change,
        win_back,
    )

    return [angry_customer, abandoned_interest, churn_risk, win_back, replenishment, segment_change, return_spike]


RULES: list[ModuleType] = _registry()
TIMED_RULES: dict[str, ModuleType] = {rule.KIND: rule for rule in RULES if hasattr(rule, "on_timer")}
SEGMENT_RULES: tuple[ModuleType, ...] = tuple(rule for rule in RULES if getattr(rule, "ON_SEGMENT_CHANGE", False))


class RulePlan(NamedTuple):
    """What one rule does after an event of a given type."""

    rule: ModuleType
    reacts: bool
    """``on_event`` runs."""
    on_segment: bool
    """``on_event`` runs if the event moved the customer's segment."""
    rearms: bool
    """``deadline`` is asked again."""
    teaches_anger: bool


RULE_EVENT_TYPES: frozenset[str] = frozenset().union(
    *(getattr(rule, "REACTS_TO", ()) for rule in RULES), *(getattr(rule, "REARMS_ON", ()) for rule in RULES)
)
"""Event types some rule reacts to or re-arms on; for the rest (page views, searches...) no context is built."""


def _plan(event_type: str) -> tuple[RulePlan, ...]:
    entries = []
    for rule in RULES:
        plan = RulePlan(
            rule,
            event_type in getattr(rule, "REACTS_TO", ()),
            getattr(rule, "ON_SEGMENT_CHANGE", False),
            event_type in getattr(rule, "REARMS_ON", ()),
            getattr(rule, "TEACHES_ANGER", False),
        )
        if plan.reacts or plan.on_segment or plan.rearms:
            entries.append(plan)
    return tuple(entries)


_PLANS = {event_type: _plan(event_type) for event_type in RULE_EVENT_TYPES}
_SEGMENT_ONLY = _plan("")


def plan_for(event_type: str) -> tuple[RulePlan, ...]:
    """The rules an event type can concern, in ``RULES`` order (the per-event loop visits only these).

    >>> [p.rule.KIND for p in plan_for("support_message") if p.reacts]
    ['angry_customer']
    >>> [p.rule.KIND for p in plan_for("page_view")]
    ['segment_change']
    """
    return _PLANS.get(event_type) or _SEGMENT_ONLY


def context(
    profile: dict[str, Any],
    event: dict[str, Any] | None = None,
    *,
    now: int | None = None,
    cfg: RuleSettings | None = None,
    thresholds: Thresholds | None = None,
    churn_risk: Callable[[dict[str, Any], int], float] | None = None,
    anger: Callable[[dict[str, Any], dict[str, Any]], tuple[float, list[str]]] | None = None,
    returns: Any = None,
    segment_before: str | None = None,
    horizon_days: float = 30.0,
    reachable: Callable[[dict[str, Any]], bool] | None = None,
) -> RuleContext:
    """A ``RuleContext`` with defaults, so a test can call a rule directly (the shard builds its own).

    Defaults: ``now`` is the event's ``ts`` (else the profile's ``last_seen``), default rule settings,
    thresholds of a new shop, a churn risk of 0, no anger, a fresh ``ReturnWatch``, an unchanged segment.

    >>> from crm_stream.operators.profile.state import new_profile
    >>> ctx = context(new_profile("c1", 0), {"type": "page_view", "ts": 5})
    >>> ctx.customer_id, ctx.now, ctx.high_value()
    ('c1', 5, False)
    """
    if returns is None:
        from crm_stream.operators.rules.return_spike import ReturnWatch

        returns = ReturnWatch()
    if now is None:
        now = event["ts"] if event is not None else profile["last_seen"]
    return RuleContext(
        profile,
        event,
        now,
        cfg or RuleSettings(),
        thresholds or Thresholds(high_value=float("inf"), active_days=30.0, population_gap_days=30.0),
        churn_risk or (lambda _profile, _as_of: 0.0),
        anger or (lambda _profile, _event: (0.0, [])),
        returns,
        profile["segment"] if segment_before is None else segment_before,
        profile["segment"],
        horizon_days,
        reachable=reachable or (lambda _profile: True),
    )
