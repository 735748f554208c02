"""A customer's live profile as the agents' console shows it, read from the store of record.

The same view as ``crm-stream profile`` (operators/profile/views.py ``full_view``),
as of the stream's event time (the newest of the profile's last event and
the shards' clocks), with segment thresholds from the shards' statistics, plus
what an agent needs at a glance: events by type, the time of the last one, and
each open ticket with its inbound messages' anger scores (``tickets``). The
profile keeps counts and scores, not an event log or the customers' words
(memory per customer is bounded; privacy), so "recent events" are those counts
and ``last_seen``, and what the customer wrote is the redacted excerpt the
``angry_customer`` alert carries; the console adds the customer's recent alerts
beside them.
"""

from __future__ import annotations

from typing import Any

from crm_stream.config.settings import Settings
from crm_stream.operators.events.timeutil import to_rfc3339
from crm_stream.operators.io import jsonutil
from crm_stream.operators.io.interface import Store
from crm_stream.operators.io.keys import KeySpace
from crm_stream.operators.profile.state import full_profile
from crm_stream.operators.profile.views import stream_view


def _snapshot(store: Store, blob: Any) -> Any:
    # The in-process store hands out the dataflow's live dicts, changing on another thread: copy them
    # first (orjson copies without releasing the GIL, so the copy is consistent). Redis blobs are bytes.
    value = store.decode(blob)
    return value if isinstance(blob, (bytes, bytearray)) else jsonutil.loads(jsonutil.dumps_state(value))


def customer_view(store: Store, keys: KeySpace, settings: Settings, customer_id: str) -> dict[str, Any] | None:
    """The profile view of ``customer_id``, or None when the store has no profile for them."""
    shards = settings.engine.shards
    profile_blob, *shard_blobs = store.get_many([keys.profile(customer_id)] + [keys.shard(n) for n in range(shards)])
    if profile_blob is None:
        return None
    profile = full_profile(_snapshot(store, profile_blob))  # stored profiles are sparse: fill in the defaults
    view = stream_view(profile, [_snapshot(store, b) for b in shard_blobs if b is not None], settings)
    view["events_by_type"] = dict(sorted(profile.get("type_counts", {}).items(), key=lambda kv: -kv[1]))
    view["tickets"] = open_tickets(profile.get("tickets") or {})
    return view


def open_tickets(tickets: dict[str, Any]) -> list[dict[str, Any]]:
    """The profile's open tickets for a person, most recently active first; ``scores`` are the anger scores of the
    ticket's newest inbound messages (kept by the angry_customer rule), oldest first.

    >>> open_tickets({"t1": {"opened_at": 0, "inbound": 2, "last_inbound_at": 60_000, "scores": [[0, 0.2], [60_000, 0.9]]}})
    ... # doctest: +NORMALIZE_WHITESPACE
    [{'ticket_id': 't1', 'opened_at': '1970-01-01T00:00:00.000Z', 'messages': 2,
      'last_message_at': '1970-01-01T00:01:00.000Z', 'reopened': False,
      'scores': [{'ts': '1970-01-01T00:00:00.000Z', 'score': 0.2}, {'ts': '1970-01-01T00:01:00.000Z', 'score': 0.9}]}]
    """

    def recency(item: tuple[str, dict[str, Any]]) -> tuple[int, str]:
        ticket_id, t = item
        return (-(t.get("last_inbound_at") or t.get("opened_at") or 0), ticket_id)

    return [
        {
            "ticket_id": ticket_id,
            "opened_at": to_rfc3339(t["opened_at"]) if t.get("opened_at") is not None else None,
            "messages": t.get("inbound", 0),
            "last_message_at": to_rfc3339(t["last_inbound_at"]) if t.get("last_inbound_at") else None,
            "reopened": bool(t.get("reopened")),
            "scores": [{"ts": to_rfc3339(ts), "score": score} for ts, score in t.get("scores", ())],
        }
        for ticket_id, t in sorted(tickets.items(), key=recency)
    ]
