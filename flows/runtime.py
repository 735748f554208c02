"""Turning settings into a running engine: pick the reader, outputs and store, then run.

The only module that decides *which* implementations run; everything it
picks implements the small interfaces of operators/io/interface.py.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from crm_stream.config.settings import Settings
from crm_stream.flows.dataflow import build_flow, epoch_interval
from crm_stream.flows.placement import NO_PLACEMENT, Placement, locality, plan
from crm_stream.flows.preflight import check_services
from crm_stream.flows.shutdown import GracefulStop
from crm_stream.operators.events.router import Router
from crm_stream.operators.events.schema import Decoder
from crm_stream.operators.io import jsonutil
from crm_stream.operators.io.files import CollectingOutputs, FileOutputs, FileReader, TerminalOutputs
from crm_stream.operators.io.interface import DEADLETTER, MARKETING, SERVICE, Outputs, Reader, Store
from crm_stream.operators.io.keys import KeySpace
from crm_stream.operators.io.metrics import EngineMetrics
from crm_stream.operators.io.stores import MemoryStore, open_store
from crm_stream.operators.privacy.audit import AuditLog
from crm_stream.operators.profile.segments import merge_stats
from crm_stream.operators.profile.state import stored_profile
from crm_stream.operators.profile.views import contract_view
from crm_stream.operators.stages.gc_pacing import engine_gc, paced_gc
from crm_stream.operators.stages.shard import ProfileShard

log = logging.getLogger(__name__)


class NullOutputs:
    def send(self, destination: str, key: str | None, value: bytes | None) -> None:
        pass

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def make_reader(settings: Settings) -> Reader:
    kind, batch = settings.source.kind, settings.engine.batch_size
    if kind == "file":
        return FileReader(settings.source.path, batch)
    if kind == "kafka":
        from crm_stream.operators.io.kafka import KafkaReader

        return KafkaReader(settings.kafka, settings.kafka.topics.inputs(), batch, settings.engine.batch_max_wait_ms)
    from crm_stream.operators.events.simulator import SimulatorReader

    return SimulatorReader(settings.simulator, currency_rates=settings.currency_rates, batch_size=batch)


def make_outputs_factory(settings: Settings) -> Callable[[int], Outputs]:
    kind = settings.sink.kind
    if kind == "kafka":
        from crm_stream.operators.io.kafka import KafkaOutputs

        return lambda worker: KafkaOutputs(settings.kafka)
    if kind == "file":
        return lambda worker: FileOutputs(Path(settings.sink.path) / f"worker-{worker}")
    if kind == "null":
        return lambda worker: NullOutputs()
    terminal = TerminalOutputs()
    return lambda worker: terminal


class SharedStore:
    """One store client per process, created on first use (never at import)."""

    def __init__(self, settings: Settings, store: Store | None = None, metrics: EngineMetrics | None = None) -> None:
        self.settings = settings
        self._store = store
        self._metrics = metrics
        self._lock = threading.Lock()

    def __call__(self) -> Store:
        with self._lock:
            if self._store is None:
                self._store = open_store(self.settings.store)
                if self._metrics is not None and hasattr(self._store, "on_retry"):
                    metrics = self._metrics
                    self._store.on_retry = metrics.store_failed
            return self._store


@dataclass
class RunOptions:
    workers_per_process: int = 1
    process_id: int | None = None
    addresses: list[str] | None = None
    emit_changes: bool = False
    watch: Callable[[Router], None] | None = None
    """Called with the router before the dataflow starts, to follow progress (events, rejects, event time)."""
    notify: Callable[[str], None] | None = None
    """Says what a first Ctrl-C does (flows/shutdown.py; default: a log warning). Runs in a signal handler."""
    on_abort: Callable[[], None] | None = None
    """Runs just before a second Ctrl-C exits at once (e.g. to give the terminal its cursor back)."""
    check_services: bool = True
    """Ask the broker and Redis one short question before building the dataflow (flows/preflight.py)."""


@dataclass
class RunResult:
    router: Router
    store: Store
    shards: dict[int, ProfileShard] = field(default_factory=dict)
    stopped_by: str | None = None
    """``"SIGTERM"`` or ``"SIGINT"`` when a signal ended the run (drained); None when the input ended."""
    committed: int | None = None
    """Partition positions committed to the consumer group after a drained stop (a reader that commits); else None."""


def run(
    settings: Settings,
    options: RunOptions | None = None,
    *,
    reader: Reader | None = None,
    outputs_factory: Callable[[int], Outputs] | None = None,
    store: Store | None = None,
) -> RunResult:
    """Run the engine until its input ends (never, for Kafka) or a signal drains it. Blocks.

    Raises ``flows.preflight.StartupError`` (before anything runs) when a configured broker or Redis does not answer.
    """
    from bytewax.run import cli_main

    options = options or RunOptions()
    if options.check_services:
        check_services(settings)
    engine_gc()
    metrics = EngineMetrics()
    shared = SharedStore(settings, store, metrics)
    reader = reader or make_reader(settings)
    placement = _placement(settings, options, reader)
    router = Router(
        _decoder(settings),
        settings.engine.shards,
        metrics,
        redact_deadletters=settings.privacy.redact_deadletters,
        shard_keys=placement.shard_keys,
    )
    shards: dict[int, ProfileShard] = {}
    metrics.watch_shards(lambda: list(shards.values()))
    metrics.watch_models(lambda: next((s.models.report() for s in list(shards.values())), None))  # one hub per process
    if hasattr(reader, "lags"):
        metrics.watch_lag(reader.lags)
    stop = GracefulStop(options.notify, options.on_abort)
    if options.watch is not None:
        options.watch(router)
    if settings.metrics.port:
        from crm_stream.flows.health import serve

        server = serve(metrics, settings.metrics.port, ready=lambda: metrics.last_batch is not None, host=settings.metrics.host)
        log.info("metrics and health on http://%s:%s/metrics, /healthz, /readyz", *server.server_address[:2])
    audit = AuditLog(settings)  # erasures carried out by the engine (written by the sink, in batches)
    flow = build_flow(
        settings,
        reader=reader,
        outputs_factory=outputs_factory or make_outputs_factory(settings),
        store_provider=shared,
        router=router,
        emit_changes=options.emit_changes,
        shard_registry=shards,
        metrics=metrics,
        stop=stop.event,
        audit=audit,
        placement=placement,
    )
    with stop, contextlib.closing(audit):
        cli_main(
            flow,
            workers_per_process=options.workers_per_process,
            process_id=options.process_id,
            addresses=options.addresses,
            epoch_interval=epoch_interval(settings),
            recovery_config=_recovery(settings),
        )
    committed = None
    if stop.requested:  # drained: everything read is written, so the positions can be committed
        committed = reader.commit_positions() if hasattr(reader, "commit_positions") else None
        version = next((s.models.report()["version"] for s in shards.values()), 0)
        # Ctrl-C is someone at a terminal: the command's summary says this to them; SIGTERM is a platform: the log.
        log.log(
            logging.INFO if stop.signal_name == "SIGINT" else logging.WARNING,
            "%s: drained; state written, models snapshotted at model version %d, %d partition position(s) committed; exiting",
            stop.signal_name,
            version,
            committed or 0,
        )
    return RunResult(router, shared(), shards, stop.signal_name, committed)


def _placement(settings: Settings, options: RunOptions, reader: Reader) -> Placement:
    """Partition-local placement for this process of the cluster (engine.partition_local), or none."""
    processes = len(options.addresses or [])
    if not settings.engine.partition_local or processes < 2:
        return NO_PLACEMENT
    process = options.process_id or 0
    try:
        why = locality(reader.partitions(), settings.engine.shards, processes)
    except Exception as exc:  # only a warning depends on it; the source lists them again, and says what is wrong
        why = f"could not list the input partitions ({exc})"
    if why:
        log.warning("partition-local: %s; customer events will cross processes (correct, slower)", why)
    log.info("partition-local: process %d of %d reads input partitions p %% %d == %d", process, processes, processes, process)
    return plan(settings.engine.shards, process, processes, options.workers_per_process)


def _decoder(settings: Settings) -> Decoder:
    return Decoder(settings.currency_rates, settings.engine.base_currency, settings.kafka.max_message_bytes)


def _recovery(settings: Settings) -> Any:
    if not settings.recovery.dir:
        return None
    from bytewax.recovery import RecoveryConfig, init_db_dir

    path = Path(settings.recovery.dir)
    if not path.exists() or not any(path.iterdir()):
        path.mkdir(parents=True, exist_ok=True)
        init_db_dir(path, 1)
    return RecoveryConfig(path)


# -- replay ----------------------------------------------------------------------------


REPLAY_GC_EVERY_S = 10.0
"""Replay's cyclic-GC interval (operators/stages/gc_pacing.py): no latency to keep short, so fewer, larger passes."""


@dataclass
class ReplaySummary:
    events: int
    dead: int
    alerts: int
    profiles: int
    timers_fired: dict[str, int] = field(default_factory=dict)
    """Timers fired, by kind (absence rules, segment checks, held triggers' sends)."""
    prediction_points: int = 0
    """Prediction points the models took (0: models off); each is learned from and scored once its labels resolve."""


def replay(
    settings: Settings,
    events_path: str | Path,
    *,
    alerts_out: str | Path,
    profiles_out: str | Path,
    deadletter_out: str | Path | None = None,
    churn_horizon_days: float | None = None,
) -> ReplaySummary:
    """The contract's replay: the same dataflow on a file, in event time, in memory, byte-for-byte repeatable."""
    with paced_gc(every_s=REPLAY_GC_EVERY_S):
        return _replay(settings, events_path, alerts_out, profiles_out, deadletter_out, churn_horizon_days)


def _replay(
    settings: Settings,
    events_path: str | Path,
    alerts_out: str | Path,
    profiles_out: str | Path,
    deadletter_out: str | Path | None,
    churn_horizon_days: float | None,
) -> ReplaySummary:
    from bytewax.testing import run_main

    # The store is this run's memory, read back only for the profiles: a periodic model snapshot (a pickle of the
    # whole hub, seconds each at 100 k customers, on a wall-clock schedule) has no reader here. The one at the end
    # of input stays.
    settings = dataclasses.replace(settings, models=dataclasses.replace(settings.models, snapshot_every_s=math.inf))
    store = MemoryStore()
    outputs = CollectingOutputs()
    router = Router(_decoder(settings), settings.engine.shards, redact_deadletters=settings.privacy.redact_deadletters)
    shards: dict[int, ProfileShard] = {}
    flow = build_flow(
        settings,
        reader=FileReader(events_path, settings.engine.batch_size),
        outputs_factory=lambda worker: outputs,
        store_provider=lambda: store,
        router=router,
        shard_registry=shards,
    )
    run_main(flow, epoch_interval=timedelta(hours=1))

    alerts: dict[str, dict[str, Any]] = {}
    for destination in (SERVICE, MARKETING):
        for value in outputs.records.get(destination, []):
            alert = jsonutil.loads(value)
            alerts.setdefault(alert["alert_id"], alert)
    with open(alerts_out, "wb") as fh:
        for alert in sorted(alerts.values(), key=lambda a: (a["ts"], a["alert_id"])):
            fh.write(jsonutil.dumps_line(alert))
    dead = [jsonutil.loads(v) for v in outputs.records.get(DEADLETTER, [])]
    if deadletter_out is not None:
        with open(deadletter_out, "wb") as fh:
            for record in sorted(dead, key=lambda d: d.get("line") or 0):
                fh.write(jsonutil.dumps_line(record))
    keys = KeySpace.of(settings.store)
    profiles = write_profiles(settings, store, keys, shards, profiles_out, router.max_ts, churn_horizon_days)
    fired = sum((shard.fired for shard in shards.values()), Counter())
    models = next(iter(shards.values())).models if shards else None
    points = models.hub.points if models is not None and models.hub is not None else 0
    return ReplaySummary(router.decoded, router.dead, len(alerts), profiles, dict(sorted(fired.items())), points)


def write_profiles(
    settings: Settings,
    store: Store,
    keys: KeySpace,
    shards: dict[int, ProfileShard],
    path: str | Path,
    as_of: int,
    horizon_days: float | None,
) -> int:
    count = 0
    thresholds = merge_stats([shard.stats for _, shard in sorted(shards.items())]).thresholds(settings.segments)
    models = next(iter(shards.values())).models if shards else None
    served = models is not None and models.hub is not None and horizon_days in (None, models.hub.horizon_days)

    def predictor(profile: dict[str, Any], at: int, gap: float) -> tuple[float, float]:
        return models.churn_risk(profile, at, gap), models.next_purchase_in_days(profile, at, gap)  # type: ignore[union-attr,return-value]

    with open(path, "wb") as fh:
        for _key, blob in store.scan(keys.profile_prefix):
            view = contract_view(
                stored_profile(store.decode(blob)), as_of, thresholds, settings, horizon_days, predictor if served else None
            )
            fh.write(jsonutil.dumps_line(view))
            count += 1
    return count
