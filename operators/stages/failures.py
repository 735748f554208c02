"""What a stage does with one record it cannot handle: a dead letter with the reason, never a stopped engine."""

from __future__ import annotations

from typing import Any

from crm_stream.operators.io import jsonutil
from crm_stream.operators.io.interface import DEADLETTER, Effect
from crm_stream.operators.privacy.redact import redact


def internal_error(event: dict[str, Any], exc: Exception) -> Effect:
    """A dead letter for an event that passed validation but could not be applied (a bug): kept, with the reason.

    >>> effect = internal_error({"type": "purchase", "event_id": "e1", "customer_id": "c1"}, KeyError("amount"))
    >>> effect.target, effect.key
    ('deadletter', 'c1')
    >>> b"internal error applying purchase event e1: KeyError" in effect.value
    True
    """
    record = {
        "reason": f"internal error applying {event.get('type')} event {event.get('event_id')}: {type(exc).__name__}: {exc}; "
        "please report it with this record",
        "topic": None,
        "partition": None,
        "offset": None,
        # Always redacted (operators/privacy/redact.py): a bug report needs the event's shape, not the customer's e-mail.
        "raw": redact(jsonutil.dumps({k: v for k, v in event.items() if not k.startswith("_")}).decode()),
    }
    return Effect(DEADLETTER, event.get("customer_id"), jsonutil.dumps(record))
