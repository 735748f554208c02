"""What a profile looks like to the outside: replay's PROFILES.jsonl and ``crm-stream profile``.

Everything time-dependent is computed *as of* a given event time, never the
wall clock, so replay output depends only on its input.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from crm_stream.config.settings import Settings
from crm_stream.models import rhythm
from crm_stream.operators.events.timeutil import MS_PER_DAY, to_rfc3339
from crm_stream.operators.profile import state as profiles
from crm_stream.operators.profile.segments import SegmentStats, Thresholds, merge_stats, segment_of

Predictor = Callable[[profiles.Profile, int, float], tuple[float, float]]


def contract_view(
    profile: profiles.Profile,
    as_of: int,
    thresholds: Thresholds,
    settings: Settings,
    horizon_days: float | None = None,
    predictor: Predictor | None = None,
) -> dict[str, Any]:
    """The replay contract's fields (customer_id, segment, recency, frequency, monetary, churn_risk, next_purchase_in_days).

    ``predictor`` (the online models, trained for the engine's horizon) gives churn risk and next purchase;
    without one, or for another horizon, the purchase-rhythm estimate does.
    """
    horizon = settings.engine.churn_horizon_days if horizon_days is None else horizon_days
    high_value, active_days, population_gap = thresholds
    last, first = profile["last_purchase_at"], profile["first_purchase_at"]
    recency = max(0.0, (as_of - last) / MS_PER_DAY) if last is not None else None
    frequency, monetary, gap = profile["frequency"], profile["monetary"], profile["gap_mean_days"]
    if predictor is not None:
        churn, next_days = predictor(profile, as_of, population_gap)
    else:
        churn = rhythm.churn_risk(frequency, gap, recency, horizon, population_gap)
        next_days = rhythm.next_purchase_in_days(frequency, gap, recency, population_gap)
    return {
        "customer_id": profile["customer_id"],
        "segment": segment_of(
            frequency,
            monetary,
            (as_of - first) / MS_PER_DAY if first is not None else None,
            recency,
            gap,
            high_value,
            active_days,
            settings.segments,
        ),
        "recency_days": None if recency is None else round(recency, 4),
        "frequency": frequency,
        "monetary": round(monetary, 2),
        "churn_risk": round(min(1.0, max(0.0, churn)), 6),
        "next_purchase_in_days": round(max(0.0, next_days), 4),
    }


def full_view(profile: dict[str, Any], as_of: int, thresholds: Thresholds, settings: Settings) -> dict[str, Any]:
    """Everything worth showing a person about one customer."""
    profile = profiles.stored_profile(profile)  # a plain dict decoded from a sparse blob gets its defaults
    rules = profiles.ProfileRules.from_settings(settings.engine)
    view = contract_view(profile, as_of, thresholds, settings)
    sentiment = profiles.sentiment_value(profile, as_of, rules)
    view.update(
        {
            "as_of": to_rfc3339(as_of),
            "first_seen": to_rfc3339(profile["first_seen"]),
            "last_seen": to_rfc3339(profile["last_seen"]),
            "last_purchase_at": to_rfc3339(profile["last_purchase_at"]) if profile["last_purchase_at"] else None,
            "gap_mean_days": profile["gap_mean_days"],
            "gap_std_days": profile["gap_std_days"],
            "refunds": profile["refunds"],
            "top_interests": profiles.top_interests(profile, as_of, rules),
            "cart": profile["cart"],
            "open_tickets": sorted(profile["tickets"]),
            "sentiment": None if sentiment is None else round(sentiment, 4),
            "nps": profile["nps"],
            "consent": {k: v for k, v in profile["consent"].items() if k != "at"},
            "active_hours_utc": profile["active_hours"],
            "anonymous_ids": profile["anonymous_ids"],
            "events": profile["events"],
        }
    )
    return view


def stream_view(profile: dict[str, Any], shard_records: list[dict[str, Any]], settings: Settings) -> dict[str, Any]:
    """``full_view`` as of the stream's event time (the newest of the profile's last event and the shards' clocks,
    never the wall clock), with segment thresholds from the shards' statistics: what people are shown."""
    stats = merge_stats([SegmentStats.from_dict(r) for r in shard_records])
    as_of = max([profile["last_seen"]] + [r.get("clock", 0) for r in shard_records])
    return full_view(profile, as_of, stats.thresholds(settings.segments), settings)
