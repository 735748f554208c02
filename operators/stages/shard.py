"""One shard of live profiles: the in-memory working set in front of the store of record.

A shard owns every customer whose id hashes to it (operators/io/keys.py), so it
is the only writer of those profiles. It processes a batch at a time:

1. hydrate: customers of the batch not in memory are fetched with one MGET
   (after a restart, or after eviction, the store is the truth);
2. apply each event in order (operators/profile/state.py), keeping the adaptive
   segment statistics current, and let the rules react (operators/rules/);
3. advance the event-time clock and fire the timers it passed
   (operators/profile/timers.py): absence rules and scheduled marketing triggers;
4. return effects: alerts and triggers, the changed profiles (one value each,
   coalesced per batch), timer buckets and shard statistics.

It never writes itself: effects go to the sink, which makes outputs durable
before state (operators/io/effects.py), so state in the store never runs ahead of
the alerts it implies.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

from crm_stream.config.settings import Settings
from crm_stream.models import rhythm
from crm_stream.operators.events.timeutil import MS_PER_DAY, to_rfc3339
from crm_stream.operators.io import jsonutil
from crm_stream.operators.io.interface import AUDIT, DEADLETTER, MARKETING, SERVICE, Store
from crm_stream.operators.io.keys import KeySpace
from crm_stream.operators.policy import governance
from crm_stream.operators.privacy.redact import redact
from crm_stream.operators.profile import state as profiles
from crm_stream.operators.profile.segments import SegmentStats, ThresholdBoard, Thresholds, segment_of
from crm_stream.operators.profile.state import TIMER_HOURS
from crm_stream.operators.profile.timers import EventClock, TimerWheel, bucket_of
from crm_stream.operators.rules import RULES, TIMED_RULES, Candidate, RuleContext, segment_change
from crm_stream.operators.rules.return_spike import ReturnWatch
from crm_stream.operators.stages.identity import RELEASED
from crm_stream.operators.stages.learning import SharedModels

log = logging.getLogger(__name__)
Effect = tuple[str, str | None, Any]
CHANGES = "changes"  # a display-only destination: profile changes for the terminal
RESEGMENT_EVERY_MS = 3_600_000  # without new purchases a segment moves with time only: check hourly
SEND = "send"  # the timer kind of scheduled marketing triggers
MAX_ALERTED = 100
MAX_FIRINGS_PER_ADVANCE = 200
EVICT_EVERY_S = 60.0
ERASURE_GUARD_S = 120.0

# Which event types can change what each rule looks at: the rest skip the rule entirely.
_ON_EVENT = {
    "angry_customer": frozenset({"support_message"}),
    "return_spike": frozenset({"purchase", "refund"}),
}
_REARM = {
    "abandoned_interest": frozenset({"product_view", "add_to_cart", "purchase", "identify"}),
    "churn_risk": frozenset({"purchase", "identify"}),
    "win_back": frozenset({"purchase", "identify"}),
    "replenishment": frozenset({"purchase", "identify"}),
}
# Event types some rule reacts to; for the rest (page views, searches...) no rule context is built at all.
_RULE_TYPES = frozenset().union(*_ON_EVENT.values(), *_REARM.values())


def _rules_for(kind: str) -> tuple[tuple[Any, bool, bool, bool], ...]:
    """(rule, reacts to this kind, reacts to a segment change, re-arms on this kind), in ``RULES`` order: the
    per-event loop then visits only the rules an event type can concern."""
    entries = []
    for rule in RULES:
        reacts = kind in _ON_EVENT.get(rule.KIND, ())
        on_segment = rule.KIND == "segment_change"
        rearms = kind in _REARM.get(rule.KIND, ())
        if reacts or on_segment or rearms:
            entries.append((rule, reacts, on_segment, rearms))
    return tuple(entries)


_RULES_BY_TYPE = {kind: _rules_for(kind) for kind in _RULE_TYPES | {"*"}}


def _thaw(blob: bytes) -> profiles.Profile:
    """A held blob as the profile object a batch works on."""
    return profiles.stored_profile(jsonutil.loads(blob))


def _freeze(profile: dict[str, Any]) -> bytes:
    """A profile as a held blob: a right-sized copy, because orjson's bytes keep the capacity of its output
    buffer (~8 KB each in RSS when kept, measured), and a million of those would cost more than the profiles."""
    return memoryview(jsonutil.dumps_state(profile)).tobytes()


def _held_channel(profile: profiles.Profile, held: list[Any], gov: Any) -> str | None:
    """The channel a held trigger may still go out on: the one it was scheduled for, if still consented
    (held triggers from before channels were recorded take the preferred channel at send time)."""
    if len(held) < 3:
        return governance.channel_for(profile, gov)
    return held[2] if profile["consent"].get(held[2]) is True else None


def _erasure_token(customer_id: str) -> str:
    """What the shard record keeps of an erased customer for a short while: a hash, never the id."""
    return hashlib.blake2b(customer_id.encode(), digest_size=12, person=b"crm-erasure").hexdigest()


def _guarded_source(source: str) -> str:
    """An input path as an erasure guard keeps it: a visitor's path (``source|anonymous_id``) with the id hashed."""
    if "|" not in source:
        return source
    base, anonymous_id = source.split("|", 1)
    return f"{base}|{_erasure_token(anonymous_id)}"


def internal_error(event: dict[str, Any], exc: Exception) -> Effect:
    """A dead letter for an event that passed validation but could not be applied (a bug): kept, with the reason."""
    record = {
        "reason": f"internal error applying {event.get('type')} event {event.get('event_id')}: {type(exc).__name__}: {exc}; "
        "please report it with this record",
        "topic": None,
        "partition": None,
        "offset": None,
        # Always redacted (operators/privacy/redact.py): a bug report needs the event's shape, not the customer's e-mail.
        "raw": redact(jsonutil.dumps({k: v for k, v in event.items() if not k.startswith("_")}).decode()),
    }
    return (DEADLETTER, event.get("customer_id"), jsonutil.dumps(record))


class ProfileShard:
    def __init__(
        self,
        shard: int,
        settings: Settings,
        store: Store,
        keys: KeySpace,
        *,
        emit_changes: bool = False,
        board: ThresholdBoard | None = None,
        returns: ReturnWatch | None = None,
        models: SharedModels | None = None,
        hold_encoded: bool | None = None,
    ) -> None:
        self.shard = shard
        self.settings = settings
        self.segment_cfg = settings.segments
        self.store = store
        self.keys = keys
        self.emit_changes = emit_changes
        e = settings.engine
        self.rules = profiles.ProfileRules.from_settings(e, settings.rules)
        self.profiles: dict[str, profiles.Profile | bytes] = {}
        self.hold_encoded = type(store.encode({})) is bytes if hold_encoded is None else hold_encoded
        """Keep customers between batches as their JSON blob (the bytes written to the store anyway), decoded when
        an event or timer touches them. A store that encodes to bytes (Redis) gets it by default; the memory store
        keeps objects. Blobs are a fraction of a profile's memory, and the garbage collector never walks them
        (it walked every profile once: ~10% of the engine's time)."""
        self._working: dict[str, profiles.Profile] = {} if self.hold_encoded else self.profiles
        """The customers this batch touches, as objects. Holding blobs, a dict apart, emptied at the end of the batch:
        ``profiles`` then only ever holds bytes, so the collector untracks it for good (a tracked object put in it
        would make each pass walk every entry: measured ~130 ms a pass at 630k customers)."""
        self._last_seen: dict[str, int] = {}
        """With eviction, each held blob's newest event time (eviction must not decode everyone)."""
        blob = store.get_many([keys.shard(shard)])[0]
        saved = store.decode(blob) if blob else {}
        self.complete = blob is None
        """True while memory holds every profile of this shard: the shard record is written with the first
        profiles, so a shard without one has none in the store, and a miss needs no MGET (a fresh start at a
        million customers spends a tenth of its time on MGETs of keys that do not exist otherwise)."""
        self.stats = SegmentStats.from_dict(saved) if saved else SegmentStats()
        self._stats_dirty = False
        self.board = board or ThresholdBoard(settings.segments)
        self.board.register(shard, self.stats)
        self.returns = returns or ReturnWatch()
        self.models = models or SharedModels(store, keys, settings.models, e.churn_horizon_days)
        self.anger = self.models.anger_score
        self._churn_risk = self.churn_risk  # bound once: a rule context is built for most events
        self._rule_cfg, self._horizon_days = settings.rules, e.churn_horizon_days
        self.clock: int = saved.get("clock", 0)
        """The newest event time this shard has seen (persisted with the stats)."""
        self.applied: int = saved.get("applied", 0)
        """Events applied by this shard since the store was new (redeliveries excluded): progress for operators and benchmarks."""
        self.suppressed: Counter[str] = Counter(saved.get("suppressed", {}))
        """Marketing triggers held back, by governance reason."""
        self.event_clock = EventClock(e.allowed_lateness_ms, e.idle_partition_s)
        self.wheel = TimerWheel(self._load_buckets, saved.get("fired_through"), complete=self.complete)
        self.retention_ms = e.retention_days * MS_PER_DAY
        self.evict_every_s = EVICT_EVERY_S
        self._last_evict = time.monotonic()
        self._touched: set[str] = set()
        self.evicted = 0
        self.erasure_guard_s = ERASURE_GUARD_S
        self._erased: dict[str, dict[str, int]] = dict(saved.get("erasures", {}))
        """Recent erasures: a hash of the customer id -> the input positions the erasure covers (see ``_erase``)."""
        self._erased_at = dict.fromkeys(self._erased, time.monotonic())
        self._deleting: set[str] = set()
        """Erased by this process, no new profile since: the store may not have the delete yet, so never read it back."""

    # -- batch processing ------------------------------------------------------------

    def process(self, events: list[dict[str, Any]], clocks: dict[str, int] | None = None) -> list[Effect]:
        self._hydrate(events)
        before = (self.clock, self.applied, self.wheel.fired_through, sum(self.suppressed.values()))
        dirty: dict[str, profiles.Profile] = {}
        out: list[Effect] = []
        if self._erased:
            self._expire_erasures()
        working, hold = self._working, self.hold_encoded
        apply, new_profile = self._apply, profiles.new_profile
        clock, applied = self.clock, 0
        for event in events:
            customer_id: str = event["customer_id"]
            ts = event["ts"]
            if ts > clock:
                clock = self.clock = ts
            if event["type"] == "erasure_request":
                if self._erase(event, out):  # its deletes go before this batch's puts: a later event's new profile wins
                    dirty.pop(customer_id, None)
                continue
            if self._erased and self._before_erasure(customer_id, event):
                continue  # a visitor's event from before an erasure, read again after a restart
            profile = working.get(customer_id)
            if profile is None and hold:
                profile = self._profile(customer_id)
            if profile is None:
                profile = working[customer_id] = new_profile(customer_id, ts)
                if self._erased:
                    self._after_erasure(profile)
            try:
                changed = apply(profile, event, out)
            except Exception as exc:  # a bug must cost one event, never the engine; the event is kept
                log.exception("could not apply event %s to customer %s", event.get("event_id"), customer_id)
                out.append(internal_error(event, exc))
                dirty[customer_id] = profile
                continue
            if changed:
                dirty[customer_id] = profile
                applied += 1
        self.applied += applied
        if clocks:
            self.event_clock.observe(clocks)
        self._fire_timers(dirty, out)
        out.extend(self.models.advance(self.event_clock.watermark()))
        encode, key_of = self.store.encode, self.keys.profile
        effects: list[Effect] = out
        if self.hold_encoded:
            self._close(dirty, effects)
        else:
            effects.extend(("put", key_of(c), encode(p)) for c, p in dirty.items())
        puts, drops = self.wheel.take_changes()
        effects.extend(("put", self.keys.timers(self.shard, h), encode(b)) for h, b in puts.items())
        effects.extend(("del", self.keys.timers(self.shard, h), None) for h in drops)
        after = (self.clock, self.applied, self.wheel.fired_through, sum(self.suppressed.values()))
        if self._stats_dirty or after != before:
            effects.append(("put", self.keys.shard(self.shard), encode(self._shard_record())))
            self._stats_dirty = False
        if self.retention_ms:
            self._touched.update(dirty)
            self._evict()
        return effects

    def _profile(self, customer_id: str) -> profiles.Profile | None:
        """The customer as an object for this batch (a held blob decoded on first touch), or None if unknown."""
        profile = self._working.get(customer_id)
        if profile is None and self.hold_encoded:
            blob = self.profiles.get(customer_id)
            if blob is not None:
                profile = self._working[customer_id] = _thaw(blob)  # type: ignore[arg-type]
        return profile

    def _close(self, dirty: dict[str, profiles.Profile], effects: list[Effect]) -> None:
        """End of batch when holding blobs: each changed profile encoded once, for the store and for memory."""
        known, encode, key_of = self.profiles, self.store.encode, self.keys.profile
        last_seen = self._last_seen if self.retention_ms else None
        for customer_id, profile in dirty.items():
            blob = known[customer_id] = _freeze(profile)
            effects.append(("put", key_of(customer_id), encode(blob)))
            if last_seen is not None:
                last_seen[customer_id] = profile["last_seen"]
        for customer_id, profile in self._working.items():
            if customer_id in dirty:
                continue
            # Read but not changed in a way the store must see (a redelivery, a timer that found nothing to do):
            # memory still keeps it as it now stands, as when holding objects (a duplicate event id at a new
            # offset records that offset, which an erasure's guard must cover). Rare: re-encode, no put.
            blob = _freeze(profile)
            if blob != known.get(customer_id):
                known[customer_id] = blob
            if last_seen is not None:
                last_seen[customer_id] = profile["last_seen"]
        self._working.clear()

    def _evict(self) -> None:
        """Drop customers inactive beyond the retention from memory (bounded state; the store keeps them).

        A pass runs every ``evict_every_s`` of wall time and spares anyone changed since the previous pass,
        so the sink has long written their latest state before it could be read back.
        """
        if not self.retention_ms or time.monotonic() - self._last_evict < self.evict_every_s:
            return
        self._last_evict = time.monotonic()
        horizon = self.event_clock.watermark() - self.retention_ms
        touched, self._touched = self._touched, set()
        stale = [c for c, p in self.profiles.items() if c not in touched and self._seen_at(c, p) < horizon]
        for customer_id in stale:
            del self.profiles[customer_id]
            self._last_seen.pop(customer_id, None)
        if stale:
            self.complete = False  # memory no longer holds everyone: misses must read the store
            self.evicted += len(stale)

    def held_profiles(self) -> Iterator[profiles.Profile]:
        """Every customer in memory, decoded: for a summary at the end of a run, not for the hot path."""
        for profile in list(self.profiles.values()):
            yield _thaw(profile) if type(profile) is bytes else profile

    def _seen_at(self, customer_id: str, profile: profiles.Profile | bytes) -> int:
        if type(profile) is not bytes:
            return profile["last_seen"]  # type: ignore[index]
        seen = self._last_seen.get(customer_id)
        return seen if seen is not None else jsonutil.loads(profile)["last_seen"]

    def _shard_record(self) -> dict[str, Any]:
        record = dict(
            self.stats.to_dict(),
            clock=self.clock,
            applied=self.applied,
            fired_through=self.wheel.fired_through,
            suppressed=dict(self.suppressed),
        )
        if self._erased:
            record["erasures"] = dict(self._erased)
        return record

    def _hydrate(self, events: list[dict[str, Any]]) -> None:
        if not self.complete:
            self._hydrate_ids({e["customer_id"] for e in events})

    def _hydrate_ids(self, ids: set[str]) -> None:
        if self.complete:
            return
        known, working = self.profiles, self._working
        missing = sorted(c for c in ids if c not in known and c not in working)
        if self._deleting:  # erased moments ago: the store may not have the delete yet, and nothing may come back
            missing = [c for c in missing if _erasure_token(c) not in self._deleting]
        if not missing:
            return
        decode, hold = self.store.decode, self.hold_encoded
        for customer_id, blob in zip(missing, self.store.get_many([self.keys.profile(c) for c in missing])):
            if blob:
                if not hold:
                    self.profiles[customer_id] = profiles.stored_profile(decode(blob))
                else:  # held as read (the store's plain JSON), decoded when the batch touches it; bytes only, ever
                    self.profiles[customer_id] = blob if type(blob) is bytes else _freeze(decode(blob))

    def _load_buckets(self, hours: list[int]) -> list[dict[str, int] | None]:
        blobs = self.store.get_many([self.keys.timers(self.shard, h) for h in hours])
        return [self.store.decode(b) if b else None for b in blobs]

    # -- erasure -------------------------------------------------------------------------

    def _erase(self, event: dict[str, Any], out: list[Effect]) -> bool:
        """Forget the customer everywhere this shard keeps them, and say so downstream.

        Memory: the profile (with its dedup window, timers, held triggers), its timer-wheel entries,
        eviction bookkeeping, the model's pending predictions. Store: deletes of the profile, its
        visitors' keys and its timer entries. Outputs: a tombstone on both output topics. Audit: one
        record. Exactly once across restarts: the input positions it covers (every position the
        profile had applied, and its own) are kept for ``erasure_guard_s`` under a hash of the id
        (memory and shard record, never the id itself). A re-read of any of them is skipped, and a
        later event starts a fresh profile carrying them, never hydrated from the store.
        """
        customer_id: str = event["customer_id"]
        source, offset = event.get(profiles.SOURCE), event.get(profiles.SOURCE_OFFSET)
        token = _erasure_token(customer_id)
        profile = self._working.pop(customer_id, None)
        blob = self.profiles.pop(customer_id, None) if self.hold_encoded else None
        if profile is None and blob is not None:
            profile = _thaw(blob)  # type: ignore[arg-type]
        self._last_seen.pop(customer_id, None)
        covered = profile["offsets"] if profile is not None else self._erased.get(token, {})
        if offset is not None and covered.get(source, -1) >= offset:  # type: ignore[arg-type]
            if profile is not None:
                self._working[customer_id] = profile
                if blob is not None:
                    self.profiles[customer_id] = blob
            return False  # carried out before a restart: its deletes, tombstones and record are already durable
        guard = dict(self._erased.get(token, {}))
        anonymous_ids: set[str] = {event["anonymous_id"]} if event.get("anonymous_id") else set()
        hours: set[int] = set()
        detail: dict[str, Any] = {"event_id": event["event_id"], "profile": profile is not None}
        if profile is not None:
            for src, off in profile["offsets"].items():
                src = _guarded_source(src)
                if off > guard.get(src, -1):
                    guard[src] = off
            anonymous_ids.update(profile["anonymous_ids"], profile.get("merged_anonymous_ids", ()))
            hours.update(profile.get(TIMER_HOURS, ()))
            hours.update(bucket_of(d) for d in profile["timers"].values())
            detail["scheduled_triggers"] = len(profile["scheduled"])
            if profile["frequency"]:
                self.stats.monetary.move(profile["monetary"], None)
                if profile["gap_mean_days"] is not None:
                    self.stats.gap_days.move(profile["gap_mean_days"], None)
        if offset is not None:
            guard[source] = max(guard.get(source, -1), offset)  # type: ignore[index]
        self._erased[token] = guard
        self._erased_at[token] = time.monotonic()
        self._deleting.add(token)
        self._stats_dirty = True
        self._touched.discard(customer_id)
        fired = self.wheel.fired_through
        detail["timer_entries"] = self.wheel.forget(customer_id, {h for h in hours if fired is None or h > fired})
        detail["pending_predictions"] = self.models.forget(customer_id)
        detail["visitor_links"] = len(anonymous_ids)
        out.append((SERVICE, customer_id, None))
        out.append((MARKETING, customer_id, None))
        out.append(("del", self.keys.profile(customer_id), None))
        out.append(("del", self.keys.claim(customer_id), None))  # an agent's claim in the console names them too
        out.extend(("del", self.keys.anon(a), None) for a in sorted(anonymous_ids))
        out.append((AUDIT, customer_id, detail))
        if self.emit_changes:
            out.append(
                (
                    CHANGES,
                    customer_id,
                    f"erased: profile, {len(anonymous_ids)} visitor links, "
                    f"{detail['timer_entries']} timers, {detail['pending_predictions']} pending predictions".encode(),
                )
            )
        return True

    def _after_erasure(self, profile: profiles.Profile) -> None:
        """A new profile of a customer erased moments ago starts past every input position the erasure covered."""
        token = _erasure_token(profile["customer_id"])
        covered = self._erased.get(token)
        if covered is not None:  # visitor paths stay out: the new profile must not name the old visitors
            profile["offsets"] = {src: off for src, off in covered.items() if "|" not in src}
            self._deleting.discard(token)  # memory holds the customer again: no read-back until it is written

    def _before_erasure(self, customer_id: str, event: dict[str, Any]) -> bool:
        """Was this event, arriving by a visitor's path (``source|anonymous_id``), covered by a recent erasure?"""
        source = event.get(profiles.SOURCE) or ""
        if "|" not in source:
            return False  # the customer's own paths are in the new profile's offsets (``_after_erasure``)
        covered = self._erased.get(_erasure_token(customer_id))
        return covered is not None and covered.get(_guarded_source(source), -1) >= event[profiles.SOURCE_OFFSET]

    def _expire_erasures(self) -> None:
        """Drop erasure guards older than ``erasure_guard_s`` of running time: by then the epochs holding the erased
        positions are long committed, so a restart cannot read them again (README, "Erasure and access")."""
        horizon = time.monotonic() - self.erasure_guard_s
        for token in [t for t, at in self._erased_at.items() if at <= horizon]:
            del self._erased[token], self._erased_at[token]
            self._deleting.discard(token)
            self._stats_dirty = True

    def _schedule(self, profile: profiles.Profile, deadline: int) -> bool:
        """Index a deadline, remembering its hour in the profile, so that an erasure finds every bucket naming
        the customer; True when that hour is new to the profile."""
        hour = self.wheel.schedule(profile["customer_id"], deadline)
        hours = profile.get(TIMER_HOURS)
        if hours is None:
            profile[TIMER_HOURS] = [hour]
            return True
        if hour in hours:
            return False
        fired = self.wheel.fired_through
        if fired is not None:
            hours[:] = [h for h in hours if h > fired]  # buckets already fired hold nothing any more
        hours.append(hour)
        return True

    # -- events ------------------------------------------------------------------------

    def _apply(self, profile: profiles.Profile, event: dict[str, Any], out: list[Effect]) -> bool:
        before = (profile["frequency"], profile["monetary"], profile["gap_mean_days"])
        segment_before = profile["segment"]
        changed = profiles.apply(profile, event, self.rules)
        if not changed:
            return False
        kind = event["type"]
        if kind == "identify":
            self._merge_visitor(profile, event, out)
        gap_days = self.board.thresholds().population_gap_days  # called for every event: it paces the board's refresh
        if self.models.hub is not None:
            self.models.on_event(profile, event, gap_days)
        if (profile["frequency"], profile["monetary"], profile["gap_mean_days"]) != before:
            self._track_stats(before, profile)
            self._resegment(profile, event["ts"], out)
        elif profile["frequency"] and profile["last_seen"] - profile["segment_checked_at"] >= RESEGMENT_EVERY_MS:
            self._resegment(profile, event["ts"], out)  # only the passing of time can have moved it (never a prospect's)
        if kind == "consent":
            self._consent_changed(profile, event["ts"], out)
        elif kind == "alert_feedback":
            out.extend(self.models.learn_feedback(profile, event))
        if kind not in _RULE_TYPES and segment_before == profile["segment"]:
            return True
        ctx = self._context(profile, event, event["ts"], segment_before)
        candidates: list[Candidate] = []
        segment_moved = segment_before != profile["segment"]
        for rule, reacts, on_segment, rearms in _RULES_BY_TYPE.get(kind) or _RULES_BY_TYPE["*"]:
            if reacts or on_segment and segment_moved:
                candidates.extend(rule.on_event(ctx))
            if rearms:
                self._arm(profile, rule.KIND, rule.deadline(ctx), passed_by=profile["last_seen"])
        for _destination, alert in candidates:
            if alert["kind"] == "angry_customer":  # kept so that an agent's feedback on it can teach the model
                self.models.remember_escalation(profile, alert["alert_id"], event["text"])
        self._emit(profile, candidates, event["ts"], out)
        return True

    def _context(self, profile: profiles.Profile, event: dict[str, Any] | None, now: int, segment_before: str) -> RuleContext:
        return RuleContext(
            profile,
            event,
            now,
            self._rule_cfg,
            self.board.thresholds(),
            self._churn_risk,
            self.anger,
            self.returns,
            segment_before,
            profile["segment"],
            self._horizon_days,
        )

    def churn_risk(self, profile: profiles.Profile, as_of: int) -> float:
        thresholds = self.thresholds()
        modelled = self.models.churn_risk(profile, as_of, thresholds.population_gap_days)
        if modelled is not None:
            return modelled
        last = profile["last_purchase_at"]
        recency = max(0.0, (as_of - last) / MS_PER_DAY) if last is not None else None
        return rhythm.churn_risk(
            profile["frequency"],
            profile["gap_mean_days"],
            recency,
            self.settings.engine.churn_horizon_days,
            thresholds.population_gap_days,
        )

    def _merge_visitor(self, profile: profiles.Profile, event: dict[str, Any], out: list[Effect]) -> None:
        merged = profile.setdefault("merged_anonymous_ids", [])
        if event["anonymous_id"] in merged:
            return  # an identify replayed after a crash: its events are already in
        merged.append(event["anonymous_id"])
        profiles.link_anonymous_id(profile, event["anonymous_id"])
        # The segment statistics move once, in ``_apply``, from before the identify to after the merge (moving
        # them here per released event as well counted the change twice).
        for earlier in event.get(RELEASED, ()):
            if profiles.apply(profile, earlier, self.rules):
                self.applied += 1
        if self.emit_changes:
            released = len(event.get(RELEASED, ()))
            out.append(
                (
                    CHANGES,
                    profile["customer_id"],
                    f"identified visitor {event['anonymous_id']}: {released} earlier events merged".encode(),
                )
            )

    # -- timers ----------------------------------------------------------------------------

    def _arm(self, profile: profiles.Profile, kind: str, deadline: int | None, passed_by: int | None = None) -> None:
        """Set the customer's ``kind`` deadline. From an event, ``passed_by`` is the customer's newest event time:
        a pending deadline older than that stays (or the new one if earlier). In event time that deadline came
        before the event, so the timer must still judge it; only a watermark held back by a slower partition (or
        the batch the event arrived in) kept it from firing yet, and an event read early must not cancel it. The
        timer judges as of its deadline, and arms the rule's following deadline from the whole history."""
        timers = profile.get("timers")
        if timers is None:
            if deadline is None:
                return  # nothing pending, nothing to set: no empty container materialised
            timers = profile["timers"]
        pending = timers.get(kind)
        if passed_by is not None and pending is not None and pending < passed_by and (deadline is None or pending <= deadline):
            return
        if deadline is None:
            timers.pop(kind, None)
            return
        if pending == deadline:
            return
        timers[kind] = deadline
        self._schedule(profile, deadline)

    def _fire_timers(self, dirty: dict[str, profiles.Profile], out: list[Effect]) -> None:
        watermark = self.event_clock.watermark()
        due = self.wheel.due(watermark)
        if not due:
            return
        self._hydrate_ids({c for c, _ in due})
        for customer_id, _ in due:
            profile = self._profile(customer_id)
            if profile is None:
                continue  # erased, or a stale entry: the profile is the truth
            # One at a time, earliest first: firing one may arm another that is also already due
            # (the next abandoned category, a trigger's send time), and they must run in event-time order.
            for _ in range(MAX_FIRINGS_PER_ADVANCE):
                timers = profile["timers"]
                if not timers:
                    break
                deadline, kind = min((d, k) for k, d in timers.items())
                if deadline > watermark:
                    break
                del timers[kind]
                try:
                    self._on_timer(profile, kind, deadline, out)
                except Exception:
                    log.exception("timer %s of customer %s failed", kind, customer_id)
                dirty[customer_id] = profile
            pending = [d for d in profile["timers"].values()]
            if pending and self._schedule(profile, min(pending)):
                dirty[customer_id] = profile  # the profile now names one more timer bucket: persist it

    def _on_timer(self, profile: profiles.Profile, kind: str, now: int, out: list[Effect]) -> None:
        if kind == SEND:
            self._send_due(profile, now, out)
            return
        rule = TIMED_RULES.get(kind)
        if rule is None:
            return
        segment_before = profile["segment"]
        self._resegment(profile, now, out)
        ctx = self._context(profile, None, now, segment_before)
        candidates = rule.on_timer(ctx)
        if segment_before != profile["segment"]:
            candidates.extend(segment_change.on_event(ctx))
        self._emit(profile, candidates, now, out)
        following = rule.deadline(ctx)
        if following is not None and following > now:
            self._arm(profile, kind, following)

    # -- alerts, triggers, governance -------------------------------------------------

    def _emit(self, profile: profiles.Profile, candidates: list[Candidate], now: int, out: list[Effect]) -> None:
        for destination, alert in candidates:
            alerted = profile["alerted"]
            if alert["alert_id"] in alerted:
                self.suppressed[governance.DUPLICATE] += destination == MARKETING
                continue
            alerted[alert["alert_id"]] = now
            if len(alerted) > MAX_ALERTED:
                del alerted[next(iter(alerted))]
            if destination == SERVICE:
                out.append((SERVICE, profile["customer_id"], jsonutil.dumps(alert)))
            else:
                self._schedule_trigger(profile, alert, now, out)

    def _schedule_trigger(self, profile: profiles.Profile, alert: dict[str, Any], now: int, out: list[Effect]) -> None:
        gov = self.settings.governance
        channel = governance.channel_for(profile, gov)
        if channel is None:
            self.suppressed[governance.NO_CONSENT] += 1
            return
        send_at = governance.send_time(profile, now, gov)
        scheduled = profile["scheduled"]
        scheduled[alert["alert_id"]] = [send_at, alert, channel]  # held for this channel: an opt-out of it cancels it
        # Always through the timer, even when due now: sends then happen in send-time order at the
        # watermark, the same live and in replay, so caps count the same triggers either way.
        self._arm(profile, SEND, min(held[0] for held in scheduled.values()))

    def _send_due(self, profile: profiles.Profile, now: int, out: list[Effect]) -> None:
        gov = self.settings.governance
        scheduled = profile["scheduled"]
        for aid, held in sorted(scheduled.items(), key=lambda kv: (kv[1][0], kv[0])):
            send_at, alert = held[0], held[1]
            if send_at > now:
                continue
            del scheduled[aid]
            channel = _held_channel(profile, held, gov)
            if channel is None:
                self.suppressed[governance.NO_CONSENT] += 1
                continue
            cap = governance.cap_reason(profile, send_at, gov)
            if cap is not None:
                self.suppressed[cap] += 1
                continue
            governance.record_sent(profile, send_at)
            sent = dict(alert, send_at=to_rfc3339(send_at), payload=dict(alert["payload"], channel=channel))
            out.append((MARKETING, profile["customer_id"], jsonutil.dumps(sent)))
        if scheduled:
            self._arm(profile, SEND, min(held[0] for held in scheduled.values()))
        else:
            profile["timers"].pop(SEND, None)

    def _consent_changed(self, profile: profiles.Profile, now: int, out: list[Effect]) -> None:
        """An opt-out acts at once on what is already scheduled: triggers held for a channel the customer
        left are cancelled now (not moved to another channel), whatever their send time."""
        scheduled = profile["scheduled"]
        if not scheduled:
            return
        gov = self.settings.governance
        cancelled = [aid for aid, held in scheduled.items() if _held_channel(profile, held, gov) is None]
        if not cancelled:
            return
        self.suppressed[governance.NO_CONSENT] += len(cancelled)
        for aid in cancelled:
            del scheduled[aid]
        if scheduled:
            self._arm(profile, SEND, min(held[0] for held in scheduled.values()))
        else:
            profile["timers"].pop(SEND, None)

    # -- segments ----------------------------------------------------------------------

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

    def _resegment(self, profile: profiles.Profile, ts: int, out: list[Effect]) -> None:
        as_of = max(ts, profile["last_seen"])
        profile["segment_checked_at"] = as_of
        segment = self.segment(profile, as_of)
        if segment == profile["segment"]:
            return
        if self.emit_changes:
            out.append((CHANGES, profile["customer_id"], f"segment {profile['segment']} -> {segment}".encode()))
        profile["segment"] = segment
        profile["segment_since"] = as_of
