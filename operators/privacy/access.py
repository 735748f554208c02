"""Right of access: everything the engine's store holds on one customer, as one JSON-ready dict.

``crm-stream export-customer`` prints it. It reads exactly the keys the engine
writes about a customer (operators/io/keys.py) and shows them as stored, beside
the derived view a person would read:

- ``profile``: the stored profile, every field as written (not the short view);
- ``view``: the derived view (operators/profile/views.py ``full_view``), as of the stream's event time;
- ``visitor_links``: the records of anonymous ids linked to the customer (their buffered pre-login events);
- ``timers``: the profile's pending deadlines, and the timer-index entries that name the customer;
- ``scheduled_triggers``: marketing triggers held until their send time, with the channel each is held for;
- ``pending_predictions``: features and predictions waiting for their labels in the model snapshot.

Pure apart from the ``Store`` it is handed: no Bytewax, no printing.
"""

from __future__ import annotations

from typing import Any

from crm_stream.config.settings import Settings
from crm_stream.operators.events.timeutil import to_rfc3339
from crm_stream.operators.io.interface import Store
from crm_stream.operators.io.keys import KeySpace, shard_of
from crm_stream.operators.profile.state import TIMER_HOURS, stored_profile
from crm_stream.operators.profile.timers import bucket_of
from crm_stream.operators.profile.views import stream_view


def export_customer(store: Store, keys: KeySpace, settings: Settings, customer_id: str) -> dict[str, Any]:
    """Everything held on ``customer_id`` (``profile`` None when the store has no profile for them)."""
    shards = settings.engine.shards
    profile_blob, hub_blob, *shard_blobs = store.get_many(
        [keys.profile(customer_id), keys.model("customer")] + [keys.shard(n) for n in range(shards)]
    )
    out: dict[str, Any] = {
        "customer_id": customer_id,
        "profile": None,
        "view": None,
        "visitor_links": {},
        "timers": {"deadlines": {}, "index": {}},
        "scheduled_triggers": [],
        "pending_predictions": _pending_predictions(hub_blob, customer_id),
    }
    if profile_blob is None:
        return out
    stored = dict(store.decode(profile_blob))
    out["profile"] = dict(stored)
    profile = stored_profile(stored)  # a copy: reading defaults must not touch what a memory store holds
    out["view"] = stream_view(profile, [store.decode(b) for b in shard_blobs if b], settings)

    anonymous_ids = sorted(set(profile["anonymous_ids"]) | set(profile.get("merged_anonymous_ids", ())))
    if anonymous_ids:
        for anonymous_id, blob in zip(anonymous_ids, store.get_many([keys.anon(a) for a in anonymous_ids])):
            if blob is not None:
                record = store.decode(blob)
                if record.get("customer_id") == customer_id:
                    out["visitor_links"][anonymous_id] = record

    timers = profile["timers"]
    out["timers"]["deadlines"] = {kind: to_rfc3339(deadline) for kind, deadline in sorted(timers.items())}
    shard = shard_of(customer_id, shards)
    hours = sorted(set(profile.get(TIMER_HOURS, ())) | {bucket_of(d) for d in timers.values()})
    if hours:
        bucket_keys = [keys.timers(shard, h) for h in hours]
        for key, blob in zip(bucket_keys, store.get_many(bucket_keys)):
            if blob is not None:
                deadline = store.decode(blob).get(customer_id)
                if deadline is not None:
                    out["timers"]["index"][key] = deadline

    for alert_id, held in sorted(profile["scheduled"].items(), key=lambda kv: (kv[1][0], kv[0])):
        out["scheduled_triggers"].append(
            {
                "alert_id": alert_id,
                "send_at": to_rfc3339(held[0]),
                "channel": held[2] if len(held) > 2 else None,
                "trigger": held[1],
            }
        )
    return out


def _pending_predictions(hub_blob: bytes | None, customer_id: str) -> list[dict[str, Any]]:
    if not hub_blob:
        return []
    from crm_stream.models.evaluation import CATEGORY_SOURCES, CHURN_SOURCES, DAYS_SOURCES
    from crm_stream.models.features import as_dict
    from crm_stream.models.hub import ModelHub, SnapshotError

    try:
        hub = ModelHub.restore(bytes(hub_blob))
    except SnapshotError:
        return []  # the engine itself starts a new model from an unreadable snapshot: it holds nothing usable
    out = []
    for entry in hub.pending.entries(customer_id):
        churn_scores, days_scores, category_guesses = entry.payload
        out.append(
            {
                "made_at": to_rfc3339(entry.made_at),
                "churn_label_open": entry.churn_open,
                "features": as_dict(entry.x),
                "churn_risk": dict(zip(CHURN_SOURCES, churn_scores)),
                "next_purchase_in_days": dict(zip(DAYS_SOURCES, days_scores)),
                "next_category": dict(zip(CATEGORY_SOURCES, category_guesses)),
            }
        )
    return out
