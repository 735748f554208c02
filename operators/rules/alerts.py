"""Alerts and triggers in the contract's shape, with deterministic ids.

An ``alert_id`` is a hash of what the situation *is* (rule, customer, the
event-time anchor of the situation), never of when it was processed, so a
replay or a restart raises the same id and consumers can dedupe on it.
"""

from __future__ import annotations

import hashlib
from typing import Any

from crm_stream.operators.events.timeutil import to_rfc3339
from crm_stream.operators.privacy.redact import redact_value

PRIORITIES = ("low", "medium", "high", "urgent")


def alert_id(kind: str, customer_id: str, situation: str) -> str:
    digest = hashlib.blake2b(f"{kind}\x1f{customer_id}\x1f{situation}".encode(), digest_size=12).hexdigest()
    return f"{kind}-{digest}"


def make_alert(
    kind: str,
    customer_id: str,
    ts_ms: int,
    *,
    situation: str,
    priority: str,
    score: float,
    reasons: list[str],
    payload: dict[str, Any],
    send_at_ms: int | None = None,
) -> dict[str, Any]:
    if priority not in PRIORITIES:
        raise ValueError(f"priority {priority!r} is not one of {PRIORITIES}")
    alert = {
        "alert_id": alert_id(kind, customer_id, situation),
        "kind": kind,
        "customer_id": customer_id,
        "ts": to_rfc3339(ts_ms),
        "priority": priority,
        "score": round(float(score), 6),
        # Whatever a rule put in words, e-mails, phones and card numbers never leave the engine (operators/privacy/redact.py).
        "reasons": redact_value(reasons),
        "payload": redact_value(payload),
    }
    if send_at_ms is not None:
        alert["send_at"] = to_rfc3339(send_at_ms)
    return alert
