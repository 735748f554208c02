"""One shard of live profiles: the in-memory working set in front of the store of record.

A shard owns every customer whose id hashes to it (operators/keys.py), so it
is the only writer of those profiles. It processes a batch at a time:

1. hydrate: customers of the batch not in memory are fetched with one MGET
   (after a restart, or after eviction, the store is the truth);
2. apply each event in order (operators/profile.py), keeping the adaptive
   segment statistics current;
3. return effects: the changed profiles (one blob each, coalesced per batch)
   and, when asked, human-readable change notes for the terminal.

It never writes itself: effects go to the sink, which makes outputs durable
before state (operators/effects.py), so state in the store never runs ahead of
the alerts it implies.
"""

from __future__ import annotations

import logging
from typing import Any

from config.settings import Settings
from operators import jsonutil, profile as profiles
from operators.io import DEADLETTER
from operators.identity import RELEASED
from operators.io import Store
from operators.keys import KeySpace
from operators.segments import SegmentStats, ThresholdBoard, Thresholds, segment_of
from operators.timeutil import MS_PER_DAY

log = logging.getLogger(__name__)
Effect = tuple[str, str | None, bytes | None]
CHANGES = "changes"  # a display-only destination: profile changes for the terminal
RESEGMENT_EVERY_MS = 3_600_000  # without new purchases a segment moves with time only: check hourly


def internal_error(event: dict[str, Any], exc: Exception) -> Effect:
    """A dead letter for an event that passed validation but could not be applied (a bug): kept, with the reason."""
    record = {
        "reason": f"internal error applying {event.get('type')} event {event.get('event_id')}: {type(exc).__name__}: {exc}; "
                  "please report it with this record",
        "topic": None, "partition": None, "offset": None,
        "raw": jsonutil.dumps({k: v for k, v in event.items() if not k.startswith("_")}).decode(),
    }
    return (DEADLETTER, event.get("customer_id"), jsonutil.dumps(record))


class ProfileShard:
    def __init__(self, shard: int, settings: Settings, store: Store, keys: KeySpace, *, emit_changes: bool = False,
                 board: ThresholdBoard | None = None) -> None:
        self.shard = shard
        self.settings = settings
        self.segment_cfg = settings.segments
        self.store = store
        self.keys = keys
        self.emit_changes = emit_changes
        e = settings.engine
        self.rules = profiles.ProfileRules.from_settings(e)
        self.profiles: dict[str, profiles.Profile] = {}
        blob = store.get_many([keys.shard(shard)])[0]
        saved = store.decode(blob) if blob else None
        self.stats = SegmentStats.from_dict(saved) if saved else SegmentStats()
        self._stats_dirty = False
        self.board = board or ThresholdBoard(settings.segments)
        self.board.register(shard, self.stats)
        self.clock: int = saved.get("clock", 0) if saved else 0
        """The shard's event-time clock: the newest event time it has seen (persisted with the stats)."""
        self.applied: int = saved.get("applied", 0) if saved else 0
        """Events applied by this shard since the store was new (redeliveries excluded): progress for operators and benchmarks."""

    # -- batch processing ------------------------------------------------------------

    def process(self, events: list[dict[str, Any]]) -> list[Effect]:
        self._hydrate(events)
        clock_before, applied_before = self.clock, self.applied
        dirty: dict[str, profiles.Profile] = {}
        deleted: list[str] = []
        notes: list[Effect] = []
        for event in events:
            customer_id: str = event["customer_id"]
            if event["ts"] > self.clock:
                self.clock = event["ts"]
            if event["type"] == "erasure_request":
                self._erase(customer_id)
                dirty.pop(customer_id, None)
                deleted.append(self.keys.profile(customer_id))
                continue
            profile = self.profiles.get(customer_id)
            if profile is None:
                profile = self.profiles[customer_id] = profiles.new_profile(customer_id, event["ts"])
            try:
                changed = self._apply(profile, event, notes)
            except Exception as exc:  # a bug must cost one event, never the engine; the event is kept
                log.exception("could not apply event %s to customer %s", event.get("event_id"), customer_id)
                notes.append(internal_error(event, exc))
                dirty[customer_id] = profile
                continue
            if changed:
                dirty[customer_id] = profile
                self.applied += 1
        encode, key_of = self.store.encode, self.keys.profile
        effects: list[Effect] = [("put", key_of(c), encode(p)) for c, p in dirty.items()]
        effects.extend(("del", key, None) for key in deleted)
        if self._stats_dirty or self.clock != clock_before or self.applied != applied_before:
            effects.append(("put", self.keys.shard(self.shard), self.store.encode(dict(self.stats.to_dict(), clock=self.clock, applied=self.applied))))
            self._stats_dirty = False
        effects.extend(notes)
        return effects

    def _hydrate(self, events: list[dict[str, Any]]) -> None:
        known = self.profiles
        missing = sorted({c for c in [e["customer_id"] for e in events] if c not in known})
        if not missing:
            return
        decode = self.store.decode
        for customer_id, blob in zip(missing, self.store.get_many([self.keys.profile(c) for c in missing])):
            if blob:
                self.profiles[customer_id] = decode(blob)

    def _erase(self, customer_id: str) -> None:
        profile = self.profiles.pop(customer_id, None)
        if profile is not None and profile["frequency"]:
            self.stats.monetary.move(profile["monetary"], None)
            if profile["gap_mean_days"] is not None:
                self.stats.gap_days.move(profile["gap_mean_days"], None)
            self._stats_dirty = True

    def _apply(self, profile: profiles.Profile, event: dict[str, Any], notes: list[Effect]) -> bool:
        before = (profile["frequency"], profile["monetary"], profile["gap_mean_days"])
        changed = profiles.apply(profile, event, self.rules)
        if not changed:
            return False
        if event["type"] == "identify":
            self._merge_visitor(profile, event, notes)
        if (profile["frequency"], profile["monetary"], profile["gap_mean_days"]) != before:
            self._track_stats(before, profile)
            self._resegment(profile, event["ts"], notes)
        elif profile["last_seen"] - profile.get("segment_checked_at", 0) >= RESEGMENT_EVERY_MS:
            self._resegment(profile, event["ts"], notes)  # only the passing of time can have moved it
        return True

    def _merge_visitor(self, profile: profiles.Profile, event: dict[str, Any], notes: list[Effect]) -> None:
        merged = profile.setdefault("merged_anonymous_ids", [])
        if event["anonymous_id"] in merged:
            return  # an identify replayed after a crash: its events are already in
        merged.append(event["anonymous_id"])
        profiles.link_anonymous_id(profile, event["anonymous_id"])
        for earlier in event.get(RELEASED, ()):
            before = (profile["frequency"], profile["monetary"], profile["gap_mean_days"])
            if profiles.apply(profile, earlier, self.rules):
                self.applied += 1
                if (profile["frequency"], profile["monetary"], profile["gap_mean_days"]) != before:
                    self._track_stats(before, profile)
        if self.emit_changes:
            released = len(event.get(RELEASED, ()))
            notes.append((CHANGES, profile["customer_id"], f"identified visitor {event['anonymous_id']}: {released} earlier events merged".encode()))

    def _track_stats(self, before: tuple[int, float, float | None], profile: profiles.Profile) -> None:
        old_freq, old_monetary, old_gap = before
        self.stats.monetary.move(old_monetary if old_freq else None, profile["monetary"] if profile["frequency"] else None)
        self.stats.gap_days.move(old_gap, profile["gap_mean_days"])
        self._stats_dirty = True
        self.board.note_update()

    def thresholds(self) -> Thresholds:
        return self.board.thresholds()

    def segment(self, profile: profiles.Profile, as_of: int) -> str:
        high_value, active_days, _ = self.thresholds()
        first, last = profile["first_purchase_at"], profile["last_purchase_at"]
        return segment_of(
            profile["frequency"],
            profile["monetary"],
            (as_of - first) / MS_PER_DAY if first is not None else None,
            max(0.0, (as_of - last) / MS_PER_DAY) if last is not None else None,
            profile["gap_mean_days"],
            high_value,
            active_days,
            self.segment_cfg,
        )

    def _resegment(self, profile: profiles.Profile, ts: int, notes: list[Effect]) -> None:
        as_of = max(ts, profile["last_seen"])
        profile["segment_checked_at"] = as_of
        segment = self.segment(profile, as_of)
        if segment == profile["segment"]:
            return
        if self.emit_changes:
            notes.append((CHANGES, profile["customer_id"], f"segment {profile['segment']} -> {segment}".encode()))
        profile["segment"] = segment
        profile["segment_since"] = as_of
