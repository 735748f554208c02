"""The dataflow: the same wiring for the live engine, the embedded demo and replay.

    input batches ──decode+route──┬── dead letters ─────────────────────────────┐
                                  └─(identity shard)── identity ──(profile shard)── profiles ──┴── effects sink
                                                         │ visitor buffers ─────────────────────┘

Shards are a fixed number of Bytewax keys (``engine.shards``), each a
``stateful_batch`` holding plain dicts: Bytewax spreads shards over workers,
and moves lists per shard rather than single events. Durable state lives in
the store (operators/io/stores.py); Bytewax recovery only keeps source positions
per epoch. See the README's "State, time and guarantees".
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import Source
from bytewax.operators import StatefulBatchLogic

from crm_stream.config.settings import Settings
from crm_stream.flows.bytewax_io import EffectsSink, ReaderSource
from crm_stream.flows.placement import NO_PLACEMENT, Placement
from crm_stream.operators.events.router import DEAD, Routed, Router, process_tag, shard_number
from crm_stream.operators.events.schema import Decoder
from crm_stream.operators.io.effects import INGESTED, AuditWriter
from crm_stream.operators.io.interface import Effect, Outputs, Reader, Store
from crm_stream.operators.io.keys import KeySpace
from crm_stream.operators.io.metrics import INGESTED_AT, EngineMetrics
from crm_stream.operators.profile.segments import ThresholdBoard
from crm_stream.operators.stages.learning import SharedModels
from crm_stream.operators.stages.pipeline import Stages, ToProfiles, crossing
from crm_stream.operators.stages.shard import ProfileShard


class _IdentityLogic(StatefulBatchLogic):
    """Identity shard n: ``Stages.identify`` on what the router sent it."""

    def __init__(self, stages: Stages, metrics: EngineMetrics | None = None) -> None:
        self.stages = stages
        self.metrics = metrics

    def on_batch(self, values: list[Routed]) -> tuple[Iterable[Any], bool]:
        if self.metrics is not None:
            self.metrics.crossed("identity", *crossing(values, process_tag()))
        return self.stages.identify(values), StatefulBatchLogic.RETAIN

    def snapshot(self) -> None:
        return None  # durable state is in the store, written through the effects sink


def build_flow(
    settings: Settings,
    *,
    reader: Reader | Source,
    outputs_factory: Callable[[int], Outputs],
    store_provider: Callable[[], Store],
    router: Router | None = None,
    emit_changes: bool = False,
    shard_registry: dict[int, ProfileShard] | None = None,
    board: ThresholdBoard | None = None,
    metrics: EngineMetrics | None = None,
    stop: threading.Event | None = None,
    audit: AuditWriter | None = None,
    placement: Placement = NO_PLACEMENT,
) -> Dataflow:
    """Wire the engine.

    ``reader`` is one of ours (operators/io/interface.py) or any Bytewax source whose items are lists of ``Raw``
    records (tests use Bytewax's ``TestingSource``). ``shard_registry``, when given, collects the
    profile shards (replay reads them at the end). ``stop``, once set, ends our readers' input as if it
    were exhausted: the dataflow drains, writes everything, snapshots the models, and returns (SIGTERM).
    ``audit`` receives the engine's erasure records, written by the sink (none: they are dropped, as in replay).
    ``placement`` (flows/placement.py) names the shards' keys and picks this process's input partitions so that
    a customer's events stay in the process that reads them; a given ``router`` must use its ``shard_keys``.
    """
    e = settings.engine
    keys = KeySpace.of(settings.store)
    models = _Once(
        lambda: SharedModels(store_provider(), keys, settings.models, e.churn_horizon_days, e.shards)
    )  # online models, shared by the shards of this process
    # A live source's partitions are known from the start: the event-time clock waits for each (EventClock.expect).
    expected = reader.partitions if hasattr(reader, "lags") and not isinstance(reader, Source) else None
    stages = Stages(
        settings,
        store_provider,
        keys,
        models=models,
        board=board,
        emit_changes=emit_changes,
        registry=shard_registry,
        expected_sources=expected,
        shard_keys=placement.shard_keys,
    )
    router = router or Router(
        Decoder(settings.currency_rates, e.base_currency, settings.kafka.max_message_bytes),
        e.shards,
        redact_deadletters=settings.privacy.redact_deadletters,
        shard_keys=placement.shard_keys,
    )

    flow = Dataflow("crm_stream")
    batches = op.input("input", flow, reader if isinstance(reader, Source) else ReaderSource(reader, stop, placement.reads))
    routed = op.flat_map("decode_route", batches, router.route if metrics is None else _stamped(router.route))
    split = op.branch("split_dead", routed, lambda kv: kv[0] != DEAD)
    dead = op.map("dead_effects", split.falses, lambda kv: kv[1])

    identified = op.stateful_batch("identity", split.trues, lambda resume: _IdentityLogic(stages, metrics))
    parts = op.branch("split_identity", identified, lambda kv: type(kv[1]) is ToProfiles)
    to_profiles = op.map("rekey_profiles", parts.trues, lambda kv: (kv[1].shard_key, kv[1]))
    visitor_effects = op.map("visitor_effects", parts.falses, lambda kv: kv[1].effects)

    profiles = op.stateful_batch("profiles", to_profiles, lambda resume: _ProfileLogic(stages, metrics, stop=stop))
    profile_effects = op.map("profile_effects", profiles, lambda kv: kv[1])
    effects = op.merge("all_effects", dead, visitor_effects, profile_effects)
    op.output("effects", effects, EffectsSink(outputs_factory, store_provider, metrics, audit))
    return flow


def _stamped(route: Callable[[Any], list[tuple[str, Any]]]) -> Callable[[Any], list[tuple[str, Any]]]:
    """Routing that also stamps the batch's read time on the first customer event of each shard's group (for
    latency metrics): once per shard and batch, never per event, and only in the live engine, so replay stays
    pure. Not on an anonymous visitor's event: the identity stage may buffer it, stamp and all, in the store."""

    def stamped(batch: Any) -> list[tuple[str, Any]]:
        read_at = time.time()
        out = route(batch)
        for key, value in out:
            if key != DEAD and value[1]:  # (shard, events, clocks)
                first = next((e for e in value[1] if e.get("customer_id") is not None), None)
                if first is not None:
                    first[INGESTED_AT] = read_at
        return out

    return stamped


class _Once:
    """A value built on first use, once per process, however many worker threads ask."""

    def __init__(self, build: Callable[[], Any]) -> None:
        self.build = build
        self.value: Any = None
        self.lock = threading.Lock()

    def __call__(self) -> Any:
        with self.lock:
            if self.value is None:
                self.value = self.build()
            return self.value


class _ProfileLogic(StatefulBatchLogic):
    """Profile shard n: ``Stages.apply``. Bytewax builders get only the resume state, so the shard number comes
    with the first batch (in ``ToProfiles.shard_key``)."""

    def __init__(self, stages: Stages, metrics: EngineMetrics | None = None, stop: threading.Event | None = None) -> None:
        self.stages = stages
        self.metrics = metrics
        self.mark_ingest = metrics is not None  # the live engine's latency metrics; replay stays pure
        self.stop = stop
        self.shard: ProfileShard | None = None

    def on_batch(self, values: list[ToProfiles]) -> tuple[Iterable[Any], bool]:
        if self.metrics is not None:
            self.metrics.crossed("profiles", *crossing(values, process_tag()))
        if self.shard is None:
            self.shard = self.stages.profiles(shard_number(values[0].shard_key))
        effects = self.stages.apply(self.shard.shard, values)
        if self.mark_ingest and effects:
            # The first event, as a rule: the router stamps one per shard and batch.
            read_at = next((e[INGESTED_AT] for part in values for e in part.events if INGESTED_AT in e), None)
            if read_at is not None:
                effects.append(Effect(INGESTED, None, read_at))
        return ([effects] if effects else []), StatefulBatchLogic.RETAIN

    def notify_at(self) -> datetime | None:
        # A wall-clock wake-up, only so that partitions that went quiet stop holding the event-time
        # clock back (timers of a caught-up stream must still fire). What fires is decided in event time.
        if self.shard is None:
            return None
        return datetime.now(UTC) + timedelta(seconds=self.stages.settings.engine.idle_partition_s / 2)

    def on_notify(self) -> tuple[Iterable[Any], bool]:
        effects = self.shard.process([], None) if self.shard is not None else []
        return ([effects] if effects else []), StatefulBatchLogic.RETAIN

    def on_eof(self) -> tuple[Iterable[Any], bool]:
        # The input ended (a file, a bounded simulation): fire what is due by its last event, then keep what the
        # models learned since the last snapshot. After a stop the input goes on at the restart: a partition
        # still behind may hold an event that cancels a timer, so the clock stays where the partitions put it.
        if self.shard is None:
            return [], StatefulBatchLogic.RETAIN
        stopped = self.stop is not None and self.stop.is_set()
        effects = ([] if stopped else self.stages.end(self.shard.shard)) + self.shard.models.flush()
        return ([effects] if effects else []), StatefulBatchLogic.RETAIN

    def snapshot(self) -> None:
        return None


def epoch_interval(settings: Settings) -> timedelta:
    return timedelta(milliseconds=settings.engine.epoch_interval_ms)
