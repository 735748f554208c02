"""Alert rules: one small module each, registered in ``RULES``.

A rule is a module with ``KIND`` and up to three pure functions of a
``RuleContext``:

- ``on_event(ctx) -> list[Candidate]``: react to the event just applied;
- ``deadline(ctx) -> int | None``: when this customer should next be looked at
  by this rule, from the profile as it now stands (absence rules);
- ``on_timer(ctx) -> list[Candidate]``: look again at that deadline (``ctx.now``
  is the deadline, ``ctx.event`` is None).

Rules only propose; the shard deduplicates, governs marketing triggers
(operators/policy/governance.py) and emits. To add a rule: a module here with its
thresholds in ``config.settings.RuleSettings``, appended to ``RULES``, and a
test with a small event sequence.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any, NamedTuple

from crm_stream.config.settings import RuleSettings
from crm_stream.operators.profile.segments import Thresholds


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

    @property
    def customer_id(self) -> str:
        return self.profile["customer_id"]

    def high_value(self) -> bool:
        return self.profile["monetary"] >= self.thresholds.high_value

    def last_purchase_by_now(self) -> int | None:
        """The last purchase at or before ``now``: a timer judges the past as it was at its deadline,
        even if later events were already applied (they may arrive in the same batch)."""
        times = [t for t in self.profile["purchase_times"] if t <= self.now]
        return times[-1] if times else None


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
