"""One shard of live profiles: the batch loop.

A shard owns every customer whose id hashes to it (operators/io/keys.py), so it is the only writer of those
profiles. It processes a batch at a time:

1. hydrate: customers of the batch not in memory are fetched with one MGET (stages/working_set.py);
2. apply each event in order (operators/profile/state.py), keeping the adaptive segment statistics current,
   and let the rules react: the rules an event type concerns come from the rules' own declarations
   (operators/rules/, ``plan_for``);
3. advance the event-time clock and fire the timers it passed (operators/profile/timers.py): absence rules and
   held marketing triggers (operators/policy/triggers.py);
4. return effects: alerts and triggers, the changed profiles (one value each, coalesced per batch), timer
   buckets and the shard record. Erasure requests are carried out by operators/privacy/erasure.py.

It never writes itself: effects go to the sink, which makes outputs durable before state
(operators/io/effects.py), so state in the store never runs ahead of the alerts it implies.
"""

from __future__ import annotations

import bisect
import logging
from collections import Counter
from collections.abc import Iterator
from typing import Any

from crm_stream.config.settings import Settings
from crm_stream.operators.events.timeutil import MS_PER_DAY
from crm_stream.operators.io import jsonutil
from crm_stream.operators.io.interface import CHANGES, DEL, MARKETING, PUT, SERVICE, Effect, Store
from crm_stream.operators.io.keys import KeySpace
from crm_stream.operators.policy import governance
from crm_stream.operators.policy.triggers import SEND, TriggerBook
from crm_stream.operators.privacy.erasure import ErasureGuard
from crm_stream.operators.profile import segments, state
from crm_stream.operators.profile.segments import (
    EVENT_LINES_LAG_MS,
    SEGMENT_TIMER,
    SegmentStats,
    ThresholdBoard,
    Thresholds,
    profile_segment,
)
from crm_stream.operators.profile.timers import EventClock, TimerWheel
from crm_stream.operators.rules import RULE_EVENT_TYPES, SEGMENT_RULES, TIMED_RULES, Candidate, RuleContext, churn_risk, plan_for
from crm_stream.operators.rules.churn_risk import KIND as CHURN_CHECK
from crm_stream.operators.rules.return_spike import ReturnWatch
from crm_stream.operators.stages.failures import internal_error
from crm_stream.operators.stages.identity import RELEASED
from crm_stream.operators.stages.learning import SharedModels
from crm_stream.operators.stages.serving import Serving
from crm_stream.operators.stages.working_set import WorkingSet

log = logging.getLogger(__name__)
MAX_ALERTED = 100
MAX_FIRINGS_PER_ADVANCE = 200


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
        expected_sources: list[str] | None = None,
    ) -> None:
        """``expected_sources``: the input partitions of a live source, known from the start (``EventClock.expect``)."""
        self.shard, self.settings, self.store, self.keys = shard, settings, store, keys
        self.segment_cfg = settings.segments
        self.emit_changes = emit_changes
        e = settings.engine
        self.rules = state.ProfileRules.from_settings(e, settings.rules)
        blob = store.get_many([keys.shard(shard)])[0]
        saved = store.decode(blob) if blob else {}
        # The shard record is written with the first profiles: a shard without one has none in the store.
        self.working_set = WorkingSet(
            store, keys, hold_encoded=hold_encoded, complete=blob is None, retention_ms=int(e.retention_days * MS_PER_DAY)
        )
        self.stats = SegmentStats.from_dict(saved) if saved else SegmentStats()
        self._stats_dirty = False
        self.board = board or ThresholdBoard(settings.segments, settle_reports=1)  # its own: no other shard to wait for
        self.board.register(shard, self.stats)
        self.returns = returns or ReturnWatch()
        self.models = models or SharedModels(store, keys, settings.models, e.churn_horizon_days)
        self.anger = self.models.anger_score
        # Bound once: a rule context is built for most events. Refunds logged through it are judged for this shard.
        self.serving = Serving(self.models, self._lines, settings)
        self._served = (self.serving.churn_risk, self.anger, self.returns.for_shard(shard))
        self._rule_cfg, self._horizon_days = settings.rules, e.churn_horizon_days
        self.clock: int = saved.get("clock", 0)
        """The newest event time this shard has seen (persisted with the stats)."""
        self.applied: int = saved.get("applied", 0)
        """Events applied by this shard since the store was new (redeliveries excluded): progress for operators and benchmarks."""
        self.suppressed: Counter[str] = Counter(saved.get("suppressed", {}))
        """Marketing triggers held back, by governance reason."""
        self.fired: Counter[str] = Counter()
        """Timers fired since this shard started, by kind: where a backfill's time goes (load/bench_realshape.py)."""
        self.event_clock = EventClock(e.allowed_lateness_ms, e.idle_partition_s)
        if expected_sources:
            self.event_clock.expect(expected_sources)
        self.wheel = TimerWheel(self._load_buckets, saved.get("fired_through"), complete=blob is None)
        self.triggers = TriggerBook(settings.governance, self.suppressed, self.wheel.arm)
        self.erasures = ErasureGuard(saved.get("erasures"))

    # The working set's state, under the names tests, benchmarks and metrics read.
    @property
    def profiles(self) -> dict[str, state.Profile | bytes]:
        return self.working_set.held

    @property
    def hold_encoded(self) -> bool:
        return self.working_set.hold_encoded

    @property
    def evicted(self) -> int:
        return self.working_set.evicted

    def held_profiles(self) -> Iterator[state.Profile]:
        """Every customer in memory, decoded: for a summary at the end of a run, not for the hot path."""
        return self.working_set.decoded()

    # -- batch processing ------------------------------------------------------------

    def process(self, events: list[dict[str, Any]], clocks: dict[str, int] | None = None) -> list[Effect]:
        ws, erasures = self.working_set, self.erasures
        if not ws.complete:
            ws.hydrate((e["customer_id"] for e in events), erasures.blocks_read)
        before = (self.clock, self.applied, self.wheel.fired_through, sum(self.suppressed.values()))
        dirty: dict[str, state.Profile] = {}
        out: list[Effect] = []
        if erasures and erasures.expire():
            self._stats_dirty = True
        batch, hold, get = ws.batch, ws.hold_encoded, ws.get
        apply, new_profile = self._apply, state.new_profile
        checks_ahead = self.models.hub is not None  # _check_before only feeds the models
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
            if erasures and erasures.covers(customer_id, event):
                continue  # a visitor's event from before an erasure, read again after a restart
            profile = batch.get(customer_id)
            if profile is None and hold:
                profile = get(customer_id)
            if profile is None:
                profile = batch[customer_id] = new_profile(customer_id, ts)
                if erasures:
                    erasures.start_after(profile)
            if checks_ahead:
                self._check_before(profile, ts)
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
        watermark = self.event_clock.watermark()
        self.board.advance(self.shard, watermark)  # this shard has applied all it got up to there
        self.returns.advance(self.shard, watermark, self._rule_cfg)
        self._judged_returns(dirty, out)
        self._fire_timers(dirty, out)
        # Labels are learned as every shard's watermark passes them, the same live and in replay (models/hub.py).
        out.extend(self.models.advance(self.board.safe))
        effects: list[Effect] = out
        ws.close(dirty, effects)
        encode = self.store.encode
        puts, drops = self.wheel.take_changes()
        effects.extend(Effect(PUT, self.keys.timers(self.shard, h), encode(b)) for h, b in puts.items())
        effects.extend(Effect(DEL, self.keys.timers(self.shard, h), None) for h in drops)
        after = (self.clock, self.applied, self.wheel.fired_through, sum(self.suppressed.values()))
        if self._stats_dirty or after != before:
            effects.append(Effect(PUT, self.keys.shard(self.shard), encode(self._shard_record())))
            self._stats_dirty = False
        if ws.retention_ms:
            ws.evict(self.event_clock.watermark())
        return effects

    def finish(self) -> list[Effect]:
        """The input has ended (not a stop: a restart would go on reading): release the event-time clock to the
        newest event any partition delivered and fire what is due by then, so a bounded run's end does not
        depend on how quickly a silent partition was found idle."""
        if not self.event_clock.partitions:
            return []
        self.event_clock.end()
        return self.process([], None)

    def _shard_record(self) -> dict[str, Any]:
        record = dict(
            self.stats.to_dict(),
            clock=self.clock,
            applied=self.applied,
            fired_through=self.wheel.fired_through,
            suppressed=dict(self.suppressed),
        )
        if self.erasures:
            record["erasures"] = dict(self.erasures.erased)
        return record

    def _load_buckets(self, hours: list[int]) -> list[dict[str, int] | None]:
        blobs = self.store.get_many([self.keys.timers(self.shard, h) for h in hours])
        return [self.store.decode(b) if b else None for b in blobs]

    def _erase(self, event: dict[str, Any], out: list[Effect]) -> bool:
        def forget_stats(profile: state.Profile) -> None:
            self.stats.forget(profile)
            self.board.forget(profile, event["ts"])

        done = self.erasures.carry_out(
            event,
            out,
            memory=self.working_set,
            wheel=self.wheel,
            models=self.models,
            keys=self.keys,
            forget_stats=forget_stats,
            emit_changes=self.emit_changes,
        )
        self._stats_dirty |= done
        return done

    # -- events ------------------------------------------------------------------------

    def _apply(self, profile: state.Profile, event: dict[str, Any], out: list[Effect]) -> bool:
        before = (profile["frequency"], profile["monetary"], profile["gap_mean_days"])
        seen_before = profile["last_seen"]
        segment_before = profile["segment"]
        changed = state.apply(profile, event, self.rules)
        if not changed:
            return False
        kind = event["type"]
        if kind == "identify":
            self._merge_visitor(profile, event, out)
        gap_days = self._lines(event["ts"] - EVENT_LINES_LAG_MS).population_gap_days
        if self.models.hub is not None:
            self.models.on_event(profile, event, gap_days)
        if (profile["frequency"], profile["monetary"], profile["gap_mean_days"]) != before:
            self.stats.track(before, profile)
            self.board.track(event["ts"], before, profile)
            self._stats_dirty = True
            # Judged at a timer in event time, with the shop's lines of that day (operators/profile/segments.py).
            self.wheel.arm(profile, SEGMENT_TIMER, segments.mark(profile, event["ts"]))
        if kind == "consent":
            self.triggers.consent_changed(profile)
        elif kind == "alert_feedback":
            out.extend(self.models.learn_feedback(profile, event))
        if kind not in RULE_EVENT_TYPES and segment_before == profile["segment"]:
            return True
        ctx = self._context(profile, event, event["ts"], segment_before)
        arm_ctx: RuleContext | None = None
        candidates: list[Candidate] = []
        segment_moved = segment_before != profile["segment"]
        for rule, reacts, on_segment, rearms, teaches_anger in plan_for(kind):
            if reacts or on_segment and segment_moved:
                proposed = rule.on_event(ctx)
                if teaches_anger:  # kept so that an agent's feedback on it can teach the model
                    for _destination, alert in proposed:
                        self.models.remember_escalation(profile, alert["alert_id"], event["text"])
                candidates.extend(proposed)
            if rearms:
                if (
                    kind == "identify"
                    and event["ts"] < seen_before
                    and (profile["frequency"], profile["monetary"], profile["gap_mean_days"]) == before
                    and rule.KIND in (profile.get("timers") or ())
                ):
                    # An identify read behind the customer's later events (a purchases partition ahead of the clickstream)
                    # that brought no purchase: in time order those events re-armed the rule after it, so what they
                    # armed stands. Asked as of the identify, a rule that needs a purchase by then (churn_risk) found
                    # none and cancelled the check (live lacked 3 of replay's 60 churn_risk alerts on the test shop).
                    continue
                if arm_ctx is None:  # deadlines from the lines of EVENT_LINES_LAG_MS before: complete live and in replay
                    arm_ctx = self._context(profile, event, event["ts"], segment_before, event["ts"] - EVENT_LINES_LAG_MS)
                self.wheel.arm(profile, rule.KIND, rule.deadline(arm_ctx), passed_by=profile["last_seen"])
        self._emit(profile, candidates, event["ts"], out)
        return True

    def _check_before(self, profile: state.Profile, ts: int) -> None:
        """Churn checks due before this event, not fired yet (the watermark trails: a purchases partition read ahead,
        or the batch the event came in), see the customer here as they stood at each check: the models take their
        prediction points now, at the pending check and at the ones its timer will arm after it in the silence (the
        deadlines ``_on_timer`` arms, from the lagged lines). Fired later, after the event, the checks find the
        customer seen since and take none (``Serving.look``). So the points the models learn from, and hence what
        they serve, do not depend on how reading and batching interleaved events and checks (live agreed with
        replay on 95-100% of churn_risk ids)."""
        timers = profile.get("timers")
        check = timers.get(CHURN_CHECK) if timers else None
        seen = profile["last_seen"]
        for _ in range(churn_risk.MAX_CHECKS):
            if check is None or not seen <= check < ts:
                return
            ctx = self._context(profile, None, check, profile["segment"], check - EVENT_LINES_LAG_MS)
            if ctx.last_purchase_by_now() is not None:  # as the check's own on_timer: it judges a purchase by then
                self.serving.look(profile, check)
            check = churn_risk.deadline(ctx)

    def _context(
        self, profile: state.Profile, event: dict[str, Any] | None, now: int, segment_before: str, lines_at: int | None = None
    ) -> RuleContext:
        """The rules' view of a profile at ``now``, with the segment lines in force at ``lines_at`` (default ``now``).
        Built directly: ``dataclasses.replace`` cost ~20 us an event here."""
        thresholds = self._lines(now if lines_at is None else lines_at)
        after, risk, anger, returns = profile["segment"], *self._served
        return RuleContext(
            profile,
            event,
            now,
            self._rule_cfg,
            thresholds,
            risk,
            anger,
            returns,
            segment_before,
            after,
            self._horizon_days,
            self.models.churn_budget,
            reachable=self.serving.reachable,
            look=self.serving.look,
        )

    def _lines(self, ts: int) -> Thresholds:
        """The shop's segment lines in force at event time ``ts``; the newest complete ones while those are not."""
        return self.board.thresholds_at(ts) or self.board.thresholds()

    def churn_risk(self, profile: dict[str, Any], as_of: int) -> float:
        """The churn risk served at ``as_of`` (tools and tests read it; the rules get it through their context)."""
        return self.serving.churn_risk(profile, as_of)

    def _merge_visitor(self, profile: state.Profile, event: dict[str, Any], out: list[Effect]) -> None:
        # The segment statistics move once, in ``_apply``, from before the identify to after the merge (moving
        # them here per released event as well counted the change twice).
        released = event.get(RELEASED, [])
        applied = state.merge_visitor(profile, event["anonymous_id"], released, self.rules)
        if applied is None:
            return
        self.applied += applied
        if self.emit_changes:
            line = f"identified visitor {event['anonymous_id']}: {len(released)} earlier events merged"
            out.append(Effect(CHANGES, profile["customer_id"], line.encode()))

    # -- timers ----------------------------------------------------------------------------

    def _judged_returns(self, dirty: dict[str, state.Profile], out: list[Effect]) -> None:
        """Refund spikes judged in event time (operators/rules/return_spike.py) for customers of this shard."""
        judged = self.returns.take(self.shard)
        if not judged:
            return
        self.working_set.hydrate((c for c, _, _ in judged), self.erasures.blocks_read)
        for customer_id, candidate, ts in judged:
            profile = self.working_set.get(customer_id)
            if profile is not None:  # else erased since
                self._emit(profile, [candidate], ts, out)
                dirty[customer_id] = profile

    def _fire_timers(self, dirty: dict[str, state.Profile], out: list[Effect]) -> None:
        watermark = self.event_clock.watermark()
        if not self.event_clock.ended:
            # A timer judges with the shop's lines of its own day, complete once every shard has passed that day.
            # Fired before (a slower shard of this process still behind), it read the newest complete ones instead:
            # lines of an earlier day, chosen by how far the other shards happened to be (live differed from replay).
            watermark = min(watermark, self.board.complete_until())
        due = self.wheel.due(watermark)
        if not due:
            return
        self.working_set.hydrate((c for c, _ in due), self.erasures.blocks_read)
        for customer_id, _ in due:
            profile = self.working_set.get(customer_id)
            if profile is None:
                continue  # erased, or a stale entry: the profile is the truth
            # One at a time, earliest first: firing one may arm another that is also already due
            # (the next abandoned category, a trigger's send time), and they must run in event-time order.
            held = ""  # a segment check whose day's lines wait for a slower shard: it fires at a next advance
            for _ in range(MAX_FIRINGS_PER_ADVANCE):
                timers = profile["timers"]
                if not timers:
                    break
                if held:
                    deadline, kind = min(((d, k) for k, d in timers.items() if k != held), default=(watermark + 1, ""))
                else:  # the usual case: the same minimum (deadline, then kind), paired in C
                    deadline, kind = min(zip(timers.values(), timers.keys()))
                if deadline > watermark:
                    break
                if kind == SEGMENT_TIMER and self.board.thresholds_at(deadline) is None:
                    held = kind
                    continue
                del timers[kind]
                self.fired[kind] += 1
                try:
                    self._on_timer(profile, kind, deadline, out)
                except Exception:
                    log.exception("timer %s of customer %s failed", kind, customer_id)
                dirty[customer_id] = profile
            pending = profile["timers"]
            if pending and self.wheel.index(profile, min(pending.values())):
                dirty[customer_id] = profile  # the profile now names one more timer bucket: persist it

    def _on_timer(self, profile: state.Profile, kind: str, now: int, out: list[Effect]) -> None:
        if kind == SEND:
            self.triggers.send_due(profile, now, out)
            return
        if kind == SEGMENT_TIMER:
            self._segment_check(profile, now, out)
            return
        rule = TIMED_RULES.get(kind)
        if rule is None:
            return
        ctx = self._context(profile, None, now, profile["segment"])
        candidates = rule.on_timer(ctx)
        self._emit(profile, candidates, now, out)
        # The next deadline from the lines of EVENT_LINES_LAG_MS before, as an event arms one: complete whenever it is
        # asked, so a chain of checks can be followed ahead of the watermark the same way (``_check_before``).
        following = rule.deadline(self._context(profile, None, now, profile["segment"], now - EVENT_LINES_LAG_MS))
        if "purchase" in getattr(rule, "REARMS_ON", ()):
            following = self._rearmed_by_purchases(profile, rule, now, following)
        if following is not None and following > now:
            self.wheel.arm(profile, kind, following)

    def _rearmed_by_purchases(self, profile: state.Profile, rule: Any, now: int, following: int | None) -> int | None:
        """The rule's next deadline as time order leaves it: a purchase after ``now`` and before ``following``,
        already applied (read ahead of the watermark), re-armed the rule when it came, before this check fired;
        in time order it comes after, and its re-arm replaces ``following``. So ask again as of each such purchase,
        with the context its event gave (``_apply``)."""
        times = profile["purchase_times"]
        i = bisect.bisect_right(times, now)
        while following is not None and i < len(times) and times[i] <= following:
            at = times[i]
            following = rule.deadline(self._context(profile, None, at, profile["segment"], at - EVENT_LINES_LAG_MS))
            i = bisect.bisect_right(times, at)
        return following

    # -- alerts and segments ---------------------------------------------------------------

    def _emit(self, profile: state.Profile, candidates: list[Candidate], now: int, out: list[Effect]) -> None:
        """Each proposed alert once per customer (by id): service alerts go out, marketing triggers are held."""
        for destination, alert in candidates:
            alerted = profile["alerted"]
            if alert["alert_id"] in alerted:
                self.suppressed[governance.DUPLICATE] += destination == MARKETING
                continue
            alerted[alert["alert_id"]] = now
            if len(alerted) > MAX_ALERTED:
                del alerted[next(iter(alerted))]
            if destination == SERVICE:
                out.append(Effect(SERVICE, profile["customer_id"], jsonutil.dumps(alert)))
            else:
                self.triggers.hold(profile, alert, now)

    def thresholds(self) -> Thresholds:
        return self.board.thresholds()

    def segment(self, profile: state.Profile, as_of: int) -> str:
        return profile_segment(profile, as_of, self.thresholds(), self.segment_cfg)

    def _segment_check(self, profile: state.Profile, now: int, out: list[Effect]) -> None:
        """The segment as of ``now`` (a purchase's time, or when time alone can move it); segment rules on a move."""
        segment, following = segments.check(profile, now, self._lines(now), self.segment_cfg)
        if following is not None:
            self.wheel.arm(profile, SEGMENT_TIMER, following)
        before = profile["segment"]
        if segment == before:
            return
        if self.emit_changes:
            out.append(Effect(CHANGES, profile["customer_id"], f"segment {before} -> {segment}".encode()))
        profile["segment"], profile["segment_since"] = segment, now
        ctx = self._context(profile, None, now, before)
        self._emit(profile, [c for rule in SEGMENT_RULES for c in rule.on_event(ctx)], now, out)
