"""The book of held marketing triggers: hold until the send time, send, cancel on an opt-out.

This is the file to read for "how does consent block a trigger". A marketing trigger a rule raises is never sent
on the spot:

1. ``hold``: it is held in the profile (``scheduled``) for the channel the customer consents to *now* (none: it
   is suppressed as ``no_consent``), until a send time out of the customer's quiet hours (policy/governance.py);
2. ``send_due``: at that time (a ``send`` timer, in event time, so live and replay send in the same order) it is
   checked again: still consented on that channel, within the daily / weekly caps; then it goes out;
3. ``consent_changed``: an opt-out acts at once on what is held: triggers held for a channel the customer left
   are cancelled (not moved to another channel).

Every trigger held back is counted in ``suppressed`` by reason.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from crm_stream.config.settings import GovernanceSettings
from crm_stream.operators.events.timeutil import to_rfc3339
from crm_stream.operators.io import jsonutil
from crm_stream.operators.io.interface import MARKETING, Effect
from crm_stream.operators.policy import governance
from crm_stream.operators.profile import state as profiles

SEND = "send"  # the timer kind of held triggers


def held_channel(profile: profiles.Profile, held: list[Any], gov: GovernanceSettings) -> str | None:
    """The channel a held trigger may still go out on: the one it was held for, if still consented
    (triggers held before channels were recorded take the preferred channel at send time)."""
    if len(held) < 3:
        return governance.channel_for(profile, gov)
    return held[2] if profile["consent"].get(held[2]) is True else None


class TriggerBook:
    """Held triggers of the profiles a shard owns; ``arm(profile, SEND, deadline)`` sets the profile's send timer."""

    def __init__(
        self, gov: GovernanceSettings, suppressed: Counter[str], arm: Callable[[profiles.Profile, str, int | None], None]
    ) -> None:
        self.gov, self.suppressed, self._arm = gov, suppressed, arm

    def hold(self, profile: profiles.Profile, alert: dict[str, Any], now: int) -> None:
        channel = governance.channel_for(profile, self.gov)
        if channel is None:
            self.suppressed[governance.NO_CONSENT] += 1
            return
        send_at = governance.send_time(profile, now, self.gov)
        scheduled = profile["scheduled"]
        scheduled[alert["alert_id"]] = [send_at, alert, channel]  # held for this channel: an opt-out of it cancels it
        # Always through the timer, even when due now: sends then happen in send-time order at the
        # watermark, the same live and in replay, so caps count the same triggers either way.
        self._arm(profile, SEND, min(held[0] for held in scheduled.values()))

    def send_due(self, profile: profiles.Profile, now: int, out: list[Effect]) -> None:
        scheduled = profile["scheduled"]
        for aid, held in sorted(scheduled.items(), key=lambda kv: (kv[1][0], kv[0])):
            send_at, alert = held[0], held[1]
            if send_at > now:
                continue
            del scheduled[aid]
            channel = held_channel(profile, held, self.gov)
            if channel is None:
                self.suppressed[governance.NO_CONSENT] += 1
                continue
            cap = governance.cap_reason(profile, send_at, self.gov)
            if cap is not None:
                self.suppressed[cap] += 1
                continue
            governance.record_sent(profile, send_at)
            sent = dict(alert, send_at=to_rfc3339(send_at), payload=dict(alert["payload"], channel=channel))
            out.append(Effect(MARKETING, profile["customer_id"], jsonutil.dumps(sent)))
        self._rearm(profile)

    def consent_changed(self, profile: profiles.Profile) -> None:
        """Cancel, now, the triggers held for a channel the customer no longer consents to, whatever their send time."""
        scheduled = profile["scheduled"]
        if not scheduled:
            return
        cancelled = [aid for aid, held in scheduled.items() if held_channel(profile, held, self.gov) is None]
        if not cancelled:
            return
        self.suppressed[governance.NO_CONSENT] += len(cancelled)
        for aid in cancelled:
            del scheduled[aid]
        self._rearm(profile)

    def _rearm(self, profile: profiles.Profile) -> None:
        scheduled = profile["scheduled"]
        if scheduled:
            self._arm(profile, SEND, min(held[0] for held in scheduled.values()))
        else:
            profile["timers"].pop(SEND, None)
