"""segment_change -> marketing: the customer arrived in a segment worth acting on (configurable)."""

from __future__ import annotations

from crm_stream.operators.io.interface import MARKETING
from crm_stream.operators.rules import Candidate, RuleContext
from crm_stream.operators.rules.alerts import make_alert

KIND = "segment_change"
ON_SEGMENT_CHANGE = True  # runs whenever the customer's segment moves, after an event or at a timer


def on_event(ctx: RuleContext) -> list[Candidate]:
    before, after = ctx.segment_before, ctx.segment_after
    if before == after or before == "prospect" and after == "new":
        return []
    wanted = {s.strip() for s in ctx.cfg.segment_change_to.split(",")}
    situation = f"{before}->{after}:{ctx.now}"
    if after not in wanted or not ctx.can_raise(MARKETING, KIND, situation):
        return []  # a trigger nobody consented to receive is not built (in a real backfill, most moves)
    return [
        Candidate(
            MARKETING,
            make_alert(
                KIND,
                ctx.customer_id,
                ctx.now,
                situation=situation,
                priority="low",
                score=1.0,
                reasons=[f"segment changed from {before} to {after}"],
                payload={
                    "from": before,
                    "to": after,
                    "frequency": ctx.profile["frequency"],
                    "monetary": round(ctx.profile["monetary"], 2),
                },
            ),
        )
    ]
