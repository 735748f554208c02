"""angry_customer -> service: an inbound support message that reads as angry; priority from anger x customer value."""

from __future__ import annotations

from crm_stream.operators.events.timeutil import MS_PER_HOUR
from crm_stream.operators.io.interface import SERVICE
from crm_stream.operators.privacy.redact import redact
from crm_stream.operators.rules import Candidate, RuleContext
from crm_stream.operators.rules.alerts import make_alert

KIND = "angry_customer"
REACTS_TO = frozenset({"support_message"})
TEACHES_ANGER = True  # agents' feedback on these alerts trains the anger model (models/anger/model.py)


def on_event(ctx: RuleContext) -> list[Candidate]:
    event = ctx.event
    if event is None or event["type"] != "support_message" or event["direction"] != "inbound":
        return []
    score, reasons = ctx.anger(ctx.profile, event)
    if score < ctx.cfg.angry_threshold:
        return []
    ticket = event["ticket_id"]
    last = ctx.profile["alerted"].get(f"{KIND}:{ticket}")
    if last is not None and event["ts"] - last < ctx.cfg.angry_cooldown_hours * MS_PER_HOUR:
        return []  # one alert per ticket per cooldown: the agent already knows
    valuable = ctx.high_value()
    if score >= ctx.cfg.angry_urgent_threshold and valuable:
        priority = "urgent"
    elif valuable or score >= ctx.cfg.angry_urgent_threshold:
        priority = "high"
    else:
        priority = "medium"
    value_note = (
        f"high-value customer (lifetime {ctx.profile['monetary']:.2f})"
        if valuable
        else f"lifetime value {ctx.profile['monetary']:.2f}"
    )
    alert = make_alert(
        KIND,
        ctx.customer_id,
        event["ts"],
        situation=f"{ticket}@{event['ts']}" if last is not None else ticket,
        priority=priority,
        score=score,
        reasons=[f"anger score {score:.2f} (threshold {ctx.cfg.angry_threshold:.2f})", *reasons, value_note],
        payload={
            "ticket_id": ticket,
            "channel": event.get("channel"),
            "segment": ctx.segment_after,
            "open_tickets": len(ctx.profile["tickets"]),
            "excerpt": excerpt(event["text"], ctx.cfg.angry_excerpt_chars),
        },
    )
    ctx.profile["alerted"][f"{KIND}:{ticket}"] = event["ts"]
    return [Candidate(SERVICE, alert)]


def excerpt(text: str, chars: int) -> str | None:
    """The start of the message for the agent, personal data redacted first (so a cut never splits a card number)."""
    return redact(text)[:chars] if chars > 0 else None
