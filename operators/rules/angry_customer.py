"""angry_customer -> service: an inbound support message that reads as angry; priority from anger x customer value."""

from __future__ import annotations

import bisect
from typing import Any

from crm_stream.operators.events.timeutil import MS_PER_HOUR, to_rfc3339
from crm_stream.operators.io.interface import SERVICE
from crm_stream.operators.privacy.redact import redact
from crm_stream.operators.profile.state import MAX_TICKET_TIMES
from crm_stream.operators.rules import Candidate, RuleContext
from crm_stream.operators.rules.alerts import make_alert

KIND = "angry_customer"
REACTS_TO = frozenset({"support_message"})
TEACHES_ANGER = True  # agents' feedback on these alerts trains the anger model (models/anger/model.py)
MAX_SCORED = MAX_TICKET_TIMES
"""Scores kept per open ticket: its newest inbound messages', as many as the ticket keeps their times."""


def on_event(ctx: RuleContext) -> list[Candidate]:
    event = ctx.event
    if event is None or event["type"] != "support_message" or event["direction"] != "inbound":
        return []
    score, reasons = ctx.anger(ctx.profile, event)
    ticket = event["ticket_id"]
    history = remember_score(ctx.profile, ticket, event["ts"], score)
    if score < ctx.cfg.angry_threshold:
        return []
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
            **ticket_summary(ctx.profile["tickets"].get(ticket), history),
        },
    )
    ctx.profile["alerted"][f"{KIND}:{ticket}"] = event["ts"]
    return [Candidate(SERVICE, alert)]


def excerpt(text: str, chars: int) -> str | None:
    """The start of the message for the agent, personal data redacted first (so a cut never splits a card number)."""
    return redact(text)[:chars] if chars > 0 else None


def remember_score(profile: dict[str, Any], ticket_id: str, ts: int, score: float) -> list[list[Any]]:
    """Keep this inbound message's score on its open ticket (every message, alerted or not), so the agent
    sees how the conversation went; returns the ticket's ``[ts, score]`` pairs, oldest first. Scores, not
    words: the profile keeps no support text."""
    ticket = profile["tickets"].get(ticket_id)
    if ticket is None:  # the profile applies the message (opening the ticket) before rules run; be safe anyway
        return [[ts, round(score, 4)]]
    scores = ticket.setdefault("scores", [])
    bisect.insort(scores, [ts, round(score, 4)])  # in event time, as the ticket's inbound times
    del scores[:-MAX_SCORED]
    return scores


def ticket_summary(ticket: dict[str, Any] | None, history: list[list[Any]]) -> dict[str, Any]:
    """The ticket as the alert's payload carries it: when it opened, its inbound messages, their scores.

    >>> ticket_summary({"opened_at": 0, "inbound": 2}, [[0, 0.31], [3_600_000, 0.82]])["ticket_scores"]
    [{'ts': '1970-01-01T00:00:00.000Z', 'score': 0.31}, {'ts': '1970-01-01T01:00:00.000Z', 'score': 0.82}]
    """
    ticket = ticket or {}
    opened = ticket.get("opened_at")
    return {
        "ticket_opened_at": to_rfc3339(opened) if opened is not None else None,
        "ticket_messages": ticket.get("inbound", len(history)),
        "ticket_scores": [{"ts": to_rfc3339(ts), "score": score} for ts, score in history],
    }
