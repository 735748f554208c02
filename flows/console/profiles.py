"""A customer's live profile as the agents' console shows it, read from the store of record.

The same view as ``crm-stream profile`` (operators/profile/views.py ``full_view``),
as of the stream's event time (the newest of the profile's last event and
the shards' clocks), with segment thresholds from the shards' statistics, plus
what an agent needs at a glance: events by type and the time of the last one.
The profile keeps counts, not an event log (memory per customer is bounded),
so "recent events" are those counts and ``last_seen``; the console adds the
customer's recent alerts beside them.
"""

from __future__ import annotations

from typing import Any

from crm_stream.config.settings import Settings
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
    return view
