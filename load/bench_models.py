"""The models benchmark: do the online models beat the baselines, and what do they cost?

    python -m load.bench_models                     # 2,000 customers x 365 days (~1 M events, ~4 min)
    python -m load.bench_models --customers 400     # ~200 k events (~1 min)
    python -m load.bench_models --events FILE.jsonl # an existing file of contract events

It simulates a shop (operators/events/simulator.py) unless given a file, then runs
``operators.stages.evaluate.evaluate_file`` twice on the same events: without models
and with them (the engine's logic without Bytewax in both), and reports:

1. the progressive (test-then-train) metrics of the models and the baselines
   on the same prediction points: churn AUC / Brier / log loss, next-purchase
   MAE, cumulative, over the last ``window`` labels, and over the second half
   of the labels (``second_half``: after the models had time to learn);
2. events/s with and without models, and their ratio;
3. the hub's own costs: a served prediction (features + two models), the
   snapshot's size and the time to write and restore it, pending buffers.

Absolute rates drift between machines and runs on a shared VM; read the
ratios. Results go to ``load/results/models-<date>[-<customers>].json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from crm_stream.config.settings import SimulatorSettings
from crm_stream.models.evaluation import ProgressiveValidation, format_table
from crm_stream.models.hub import ModelHub
from crm_stream.operators.events.simulator import Shop
from crm_stream.operators.events.timeutil import parse_ts
from crm_stream.operators.io.jsonutil import loads
from crm_stream.operators.stages.evaluate import evaluate_file
from load.outputs import results_dir

RESULTS = results_dir()  # not the source tree: --out load/results/... keeps a result with the project


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", help="JSON-lines file of contract events (default: simulate one)")
    parser.add_argument("--customers", type=int, default=2000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--horizon-days", type=float, default=30.0)
    parser.add_argument("--out", help="result JSON (default: load/results/models-<date>[-<customers>].json)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(args.events) if args.events else Path(tmp) / "events.jsonl"
        simulated: dict[str, Any] | None = None
        if not args.events:
            started = time.perf_counter()
            counts = Shop(SimulatorSettings(customers=args.customers, days=args.days, seed=args.seed)).write_files(path)
            simulated = {
                "customers": args.customers,
                "days": args.days,
                "seed": args.seed,
                "counts": counts,
                "seconds": round(time.perf_counter() - started, 1),
            }
            print(f"simulated {counts['records']} records in {simulated['seconds']} s", flush=True)

        off = evaluate_file(path, args.horizon_days, seed=1, with_models=False)
        print(f"without models: {off['events']} events in {off['seconds']} s = {off['events_per_second']:.0f}/s", flush=True)
        hub = _HalfwayHub(args.horizon_days, seed=1)
        hub.midpoint_ms = _event_time_midpoint(path)
        shards: dict[int, Any] = {}
        on = evaluate_file(path, args.horizon_days, seed=1, hub=hub, shards_out=shards)
        print(f"with models:    {on['events']} events in {on['seconds']} s = {on['events_per_second']:.0f}/s", flush=True)

    second_half = hub.split()
    report = hub.metrics()
    table = format_table(report)
    print(table)
    print("second half of the labels:")
    print(format_table(second_half) if second_half else "(none: the clock never passed the midpoint)")
    costs = _hub_costs(hub, shards)
    print(json.dumps(costs, indent=1))
    result = {
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python -m load.bench_models", *(argv if argv is not None else sys.argv[1:])]),
        "machine": {"python": platform.python_version(), "platform": platform.platform(), "processor": platform.processor()},
        "simulated": simulated,
        "events": on["events"],
        "throughput": {
            "without_models_events_per_s": off["events_per_second"],
            "with_models_events_per_s": on["events_per_second"],
            "ratio": round(on["events_per_second"] / off["events_per_second"], 3) if off["events_per_second"] else None,
        },
        "metrics": report,
        "second_half": second_half,
        "costs": costs,
        "table": table,
    }
    out = (
        Path(args.out)
        if args.out
        else RESULTS / f"models-{dt.date.today().isoformat()}{'' if args.customers == 2000 else f'-{args.customers}'}.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    print(f"wrote {out}")
    return 0


class _Tee:
    """Scores into two validations: the whole run's, and one started halfway."""

    def __init__(self, whole: ProgressiveValidation, second: ProgressiveValidation) -> None:
        self.whole, self.second = whole, second

    def __getattr__(self, name: str) -> Any:
        if not name.startswith("score_"):
            return getattr(self.whole, name)
        return lambda *args: (getattr(self.whole, name)(*args), getattr(self.second, name)(*args))


class _HalfwayHub(ModelHub):
    """Also keeps metrics from ``midpoint_ms`` of event time on: the second half, after the models had time to learn."""

    midpoint_ms = 0
    tee: _Tee | None = None

    def advance(self, watermark_ms: int) -> int:
        resolved = super().advance(watermark_ms)
        if self.tee is None and watermark_ms >= self.midpoint_ms:
            self.tee = self.evaluation = _Tee(self.evaluation, ProgressiveValidation(self.evaluation.window))  # type: ignore[assignment]
        return resolved

    def split(self) -> dict[str, Any]:
        """The second half's report; puts the whole run's validation back (so the hub pickles as usual)."""
        tee = self.__dict__.pop("tee", None)
        self.midpoint_ms = 2**62  # never again
        if tee is None:
            return {}
        self.evaluation = tee.whole
        return tee.second.report()


def _event_time_midpoint(path: Path) -> int:
    """Halfway between the first and the last event time of a time-ordered JSON-lines file."""
    with open(path, "rb") as fh:
        first = parse_ts(loads(fh.readline())["ts"])
        fh.seek(0, 2)
        fh.seek(max(0, fh.tell() - 65536))
        last = parse_ts(loads(fh.read().rstrip(b"\n").rsplit(b"\n", 1)[-1])["ts"])
    return (first + last) // 2


def _hub_costs(hub: ModelHub, shards: dict[int, Any]) -> dict[str, Any]:
    profiles = [p for s in shards.values() for p in s.held_profiles()]
    as_of = hub.pending.watermark
    gap = 20.0
    started = time.perf_counter()
    for profile in profiles:
        hub.predict(profile, as_of, gap)
    predict_us = (time.perf_counter() - started) / max(1, len(profiles)) * 1e6
    timings, blob = [], b""
    for _ in range(3):
        started = time.perf_counter()
        blob = hub.snapshot()
        timings.append(time.perf_counter() - started)
    started = time.perf_counter()
    ModelHub.restore(blob)
    restore_s = time.perf_counter() - started
    return {
        "served_prediction_us": round(predict_us, 1),
        "snapshot_bytes": len(blob),
        "snapshot_bytes_per_customer_with_pending": round(len(blob) / max(1, hub.pending.customers())),
        "snapshot_s": round(statistics.median(timings), 4),
        "restore_s": round(restore_s, 4),
        "pending_open": len(hub.pending),
        "pending_customers": hub.pending.customers(),
        "prediction_points": hub.points,
        "labels_learned": hub.n_learned,
    }


if __name__ == "__main__":
    raise SystemExit(main())
