"""``crm-stream evaluate``: how well the online models predict, on a file of events, against the baselines.

The engine's own path without Bytewax: the replay's reader (operators/io/files.py), the router, and the
dataflow's stages (operators/stages/pipeline.py ``Stages``: identity stitching, then profile shards) run in
one thread.
The shards feed one ``ModelHub`` through ``operators.stages.learning.SharedModels``
exactly as in the live engine (every applied event; labels resolved as each
shard's watermark advances; the churn rule served from the hub), so what is
measured here is what the engine does.
Durable-state writes (effects) are dropped: nothing here outlives the process.

Anonymous visitors' events reach the models only once the visitor identifies
(they are then merged into the customer's profile, as in the engine);
erasure requests drop the customer's pending predictions.

Throughput: ``with_models=False`` runs the same loop without the hub, so
``events_per_second`` of the two runs is the models' cost.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from crm_stream.config import settings as config
from crm_stream.models.evaluation import format_table
from crm_stream.models.hub import ModelHub
from crm_stream.operators.events.router import Router
from crm_stream.operators.events.schema import Decoder
from crm_stream.operators.io.files import FileReader
from crm_stream.operators.io.keys import KeySpace
from crm_stream.operators.io.stores import MemoryStore
from crm_stream.operators.stages.gc_pacing import GC_PACER, paced_gc
from crm_stream.operators.stages.learning import SharedModels
from crm_stream.operators.stages.pipeline import Stages
from crm_stream.operators.stages.shard import ProfileShard


def evaluate_file(
    events_path: str | Path,
    horizon_days: float | None = None,
    seed: int = 0,
    *,
    settings: config.Settings | None = None,
    with_models: bool = True,
    hub: ModelHub | None = None,
    shards_out: dict[int, ProfileShard] | None = None,
) -> dict[str, Any]:
    """Run the events through the engine's logic with a ``ModelHub`` fed in event time; return its metrics.

    ``horizon_days`` defaults to the engine's ``churn_horizon_days``. The result holds ``metrics``
    (``ModelHub.metrics()``; None without models), ``table`` (the same as text), ``events``,
    ``dead``, ``seconds`` and ``events_per_second``. ``hub``: feed this hub instead of a new one;
    ``shards_out``: collects the profile shards (their ``profiles``), as replay's registry does.
    """
    settings = settings or config.load(None, env={})
    e = settings.engine
    horizon = float(horizon_days if horizon_days is not None else e.churn_horizon_days)
    if horizon != e.churn_horizon_days:
        # The rules' horizon (churn_risk's lapse risk and reasons) must be the models': one horizon for the whole run.
        e = replace(e, churn_horizon_days=horizon)  # type: ignore[arg-type]  # a float horizon is as valid as an int one
        settings = replace(settings, engine=e)
    if with_models and hub is None:
        hub = ModelHub(horizon, seed, interest_half_life_days=e.interest_half_life_days)
    elif not with_models:
        hub = None
    store = MemoryStore()
    keys = KeySpace(settings.store.key_prefix)
    models = SharedModels(store, keys, replace(settings.models, enabled=False), horizon)
    models.hub = hub
    router = Router(Decoder(settings.currency_rates, e.base_currency, settings.kafka.max_message_bytes), e.shards)
    shards: dict[int, ProfileShard] = {} if shards_out is None else shards_out
    stages = Stages(settings, lambda: store, keys, models=lambda: models, registry=shards)
    reader = FileReader(events_path, e.batch_size)
    partition = reader.open(reader.partitions()[0], None)
    started = time.perf_counter()
    with paced_gc():
        try:
            while not partition.done():
                batch = partition.read_batch()
                if batch:
                    stages.run(router.route(batch))  # the dataflow's stages, in this thread; effects are dropped
                    GC_PACER.tick()
        finally:
            partition.close()
    seconds = time.perf_counter() - started
    metrics = hub.metrics() if hub is not None else None
    return {
        "events": router.decoded,
        "dead": router.dead,
        "customers": sum(len(s.profiles) for s in shards.values()),
        "seconds": round(seconds, 3),
        "events_per_second": round(router.decoded / seconds, 1) if seconds > 0 else 0.0,
        "metrics": metrics,
        "table": format_table(metrics) if metrics is not None else "",
        "horizon_days": horizon,
    }


def no_labels_reason(result: dict[str, Any]) -> str | None:
    """Why ``evaluate_file``'s result holds no label to score (a table of zeros would read as a useless model); None if it has some.

    >>> no_labels_reason({"events": 0, "dead": 0, "metrics": None})
    'the file holds no records'
    >>> no_labels_reason({"events": 0, "dead": 2, "metrics": None})[:50]
    'all 2 records were rejected (none is a contract ev'
    """
    metrics = result.get("metrics")
    if metrics is not None and (
        metrics["churn"]["labels"]
        or metrics["next_purchase"]["observed"]
        or metrics["next_purchase"]["censored"]
        or metrics["category"]["scored"]
    ):
        return None
    if not result["events"] and not result["dead"]:
        return "the file holds no records"
    if not result["events"]:
        return (
            f"all {result['dead']:,} records were rejected (none is a contract event): "
            "`crm-stream replay FILE --alerts-out a.jsonl --profiles-out p.jsonl --deadletter-out rejects.jsonl` writes each reason"
        )
    if metrics is None:
        return "the models were off (with_models=False)"
    return (
        f"{result['events']:,} events gave no label: a churn label needs a purchase followed by the churn horizon "
        f"({result.get('horizon_days', '?'):g} days) of later events, a next-purchase label a second purchase; "
        "try a longer file, e.g. `crm-stream simulate --out shop.jsonl --days 180`"
    )
