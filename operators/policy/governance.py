"""What every marketing trigger must pass before it reaches a customer: consent, caps, quiet hours.

Pure functions of the profile and event time. The engine holds a trigger until
its ``send_at`` (event time) and decides again then, so a customer who opts
out in between receives nothing, and caps count what was actually sent.

Service alerts are not governed here (an agent must hear of an angry customer
whatever their marketing consent); they are deduplicated per situation instead.
"""

from __future__ import annotations

from typing import Any

from crm_stream.config.settings import GovernanceSettings
from crm_stream.operators.events.timeutil import MS_PER_DAY, MS_PER_HOUR

MAX_SENT_HISTORY = 20

# Suppression reasons, as counted in metrics and the replay summary.
NO_CONSENT = "no_consent"
DAILY_CAP = "daily_cap"
WEEKLY_CAP = "weekly_cap"
LOW_FREQUENCY = "low_frequency_cap"
DUPLICATE = "duplicate"


def channel_for(profile: dict[str, Any], cfg: GovernanceSettings) -> str | None:
    """The first channel, in the configured preference, the customer opted in to (None: no marketing at all)."""
    consent = profile["consent"]
    for channel in cfg.channel_preference.split(","):
        if consent.get(channel.strip()) is True:
            return channel.strip()
    return None


def cap_reason(profile: dict[str, Any], now_ms: int, cfg: GovernanceSettings) -> str | None:
    sent = profile["sent"]
    last_day = sum(1 for t in sent if now_ms - MS_PER_DAY < t <= now_ms)
    last_week = sum(1 for t in sent if now_ms - 7 * MS_PER_DAY < t <= now_ms)
    if last_day >= cfg.daily_cap:
        return DAILY_CAP
    if profile["consent"].get("contact_frequency") == "low" and last_week >= cfg.low_frequency_weekly_cap:
        return LOW_FREQUENCY
    if last_week >= cfg.weekly_cap:
        return WEEKLY_CAP
    return None


def usual_hour_utc(profile: dict[str, Any]) -> int | None:
    hours = profile["active_hours"]
    if not any(hours):
        return None
    return max(range(24), key=lambda h: (hours[h], -h))


def send_time(profile: dict[str, Any], now_ms: int, cfg: GovernanceSettings) -> int:
    """When to contact: the customer's usual active hour, never in their quiet hours, never before now."""
    offset_ms = (profile.get("utc_offset_min") or 0) * 60_000
    usual = usual_hour_utc(profile)
    day_start = now_ms - now_ms % MS_PER_DAY
    if usual is not None:
        candidate = day_start + usual * MS_PER_HOUR
        if candidate < now_ms:
            candidate += MS_PER_DAY
        if candidate - now_ms > 18 * MS_PER_HOUR:  # do not sit on a fresh offer for most of a day
            candidate = now_ms
    else:
        candidate = now_ms
    return _outside_quiet_hours(candidate, offset_ms, cfg)


def _outside_quiet_hours(ts_ms: int, offset_ms: int, cfg: GovernanceSettings) -> int:
    local_hour = ((ts_ms + offset_ms) // MS_PER_HOUR) % 24
    start, end = cfg.quiet_start_hour, cfg.quiet_end_hour
    quiet = (start <= local_hour or local_hour < end) if start > end else (start <= local_hour < end)
    if not quiet:
        return ts_ms
    hours_to_end = (end - local_hour) % 24
    local_start_of_hour = ts_ms - (ts_ms + offset_ms) % MS_PER_HOUR
    return local_start_of_hour + hours_to_end * MS_PER_HOUR


def record_sent(profile: dict[str, Any], sent_at_ms: int) -> None:
    sent = profile["sent"]
    sent.append(sent_at_ms)
    sent.sort()
    del sent[:-MAX_SENT_HISTORY]
