"""What a stage does with one record it cannot handle: a dead letter with the reason, never a stopped engine."""

from __future__ import annotations

from typing import Any

from crm_stream.operators.events import deadletters
from crm_stream.operators.io import jsonutil
from crm_stream.operators.io.interface import DEADLETTER, Effect
from crm_stream.operators.privacy.redact import redact


def internal_error(event: dict[str, Any], exc: Exception, limit: int = 1_000_000) -> Effect:
    """A dead letter for an event that passed validation but could not be applied (a bug): kept, with the reason and
    its source position (``topic``, ``partition``, ``offset``, or ``line`` for files), within ``limit`` bytes (the
    dead-letter topic's message limit, kafka.max_message_bytes).

    >>> effect = internal_error({"type": "purchase", "event_id": "e1", "customer_id": "c1", "_src": "crm.purchases#2",
    ...     "_off": 40}, KeyError("amount"))
    >>> effect.target, effect.key
    ('deadletter', 'c1')
    >>> b"internal error applying purchase event e1 (crm.purchases[2]@40): KeyError" in effect.value
    True
    >>> record = jsonutil.loads(effect.value)
    >>> record["topic"], record["partition"], record["offset"]
    ('crm.purchases', 2, 40)
    """
    record = {
        "reason": f"internal error applying {event.get('type')} event {event.get('event_id')} ({deadletters.where(event)}): "
        f"{type(exc).__name__}: {exc}; please report it with this record",
        **deadletters.position(event),
        # Always redacted (operators/privacy/redact.py): a bug report needs the event's shape, not the customer's e-mail.
        "raw": redact(jsonutil.dumps({k: v for k, v in event.items() if not k.startswith("_")}).decode()),
    }
    return Effect(DEADLETTER, event.get("customer_id"), deadletters.bounded(record, limit))
