"""The real-shaped replay: a backfill of a real purchase history, beside a bare loop over the same file.

    python -m load.bench_realshape                   # 4 interleaved CDNOW copies (~270 k purchases, ~94 k customers)
    python -m load.bench_realshape --limit 40000     # a prefix only (the cost per event grows with event time)
    python -m load.bench_realshape --copies 1        # one copy
    python -m load.bench_realshape --variants off    # the engine without models only

Why: the simulated mix keeps every customer active, while in a real history most customers buy once and then
fall silent. A backfill of such a history (the first thing a new user runs) spends its time on the deadlines of
silent customers (absence rules), not on the events; this benchmark keeps that shape in view.

The input: the CDNOW log (load/cdnow.py; it ships in the ``lifetimes`` package, a dev extra) as contract
``purchase`` events, ``--copies`` disjoint copies (customer ids suffixed ``-k``, event ids likewise), interleaved
in time (copy k's events a few minutes after copy 0's on the same day, so the copies stay in step). The file is
written once under ``--workdir`` and reused.

What it prints: the bare loop's rate (``orjson.loads`` of every line and a dict update per customer: the ceiling
of any Python engine reading this file), then for each ``--variants`` engine configuration its rate
(``flows.runtime.replay``: the whole dataflow, in memory, timed to the end of the profile file), its ratio to the
bare loop, and where the work goes: timers fired per event, by kind, and the models' prediction points per event.
The variants: ``default`` (the demo's settings: the models learn from every customer), ``sample`` (the models
learn from the customer sample ``config/production.toml`` sets for production scale, ``models.train_fraction``)
and ``off`` (no models: the spine, rules and timers alone). All run in the same process, one after the other, so
they see the same machine. Absolute rates on a shared 2-core VM drift run to run; read the ratios, and on a busy
machine the per-CPU-second figures (``time.process_time``: what this process itself spent), which other
tenants' load moves much less. ``--out``
writes the figures as JSON (``load/results/realshape-<date>.json`` when kept).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from load import cdnow

COPY_OFFSET_MS = 5 * 60_000
"""Copy k's events come k x 5 minutes after copy 0's (all within the same day, before the next day's)."""


def realshape_lines(purchases: list[cdnow.Purchase], copies: int) -> list[bytes]:
    """The copies as JSON lines, in event-time order (ties: copy, then customer).

    >>> p = [cdnow.Purchase("c1", 9862, 11.77, 1)]
    >>> [orjson.loads(x)["customer_id"] for x in realshape_lines(p, 2)]
    ['c1-0', 'c1-1']
    >>> [orjson.loads(x)["ts"] for x in realshape_lines(p, 2)]
    ['1997-01-01T12:00:00Z', '1997-01-01T12:05:00Z']
    """
    rows: list[tuple[int, int, str, bytes]] = []
    for p in purchases:
        base = cdnow.purchase_event(p)
        for k in range(copies):
            ts = cdnow.ts_ms(p) + k * COPY_OFFSET_MS
            event = dict(
                base,
                event_id=f"{base['event_id']}-{k}",
                customer_id=f"{p.customer_id}-{k}",
                order_id=f"{base['order_id']}-{k}",
                ts=dt.datetime.fromtimestamp(ts / 1000, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            )
            rows.append((ts, k, p.customer_id, orjson.dumps(event)))
    rows.sort(key=lambda r: r[:3])
    return [r[3] for r in rows]


def write_input(path: Path, copies: int, cdnow_path: str | None) -> int:
    purchases = cdnow.parse_lines(cdnow.read_lines(cdnow_path))
    lines = realshape_lines(purchases, copies)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(b"\n".join(lines) + b"\n")
    tmp.replace(path)
    return len(lines)


def bare_loop(path: Path) -> tuple[int, float, float]:
    """orjson.loads of every line and a dict update per customer: events, wall seconds, CPU seconds."""
    t0, c0 = time.perf_counter(), time.process_time()
    totals: dict[str, list[float]] = {}
    n = 0
    with open(path, "rb") as fh:
        for line in fh:
            event = orjson.loads(line)
            cell = totals.get(event["customer_id"])
            if cell is None:
                cell = totals[event["customer_id"]] = [0.0, 0.0]
            cell[0] += 1
            cell[1] += event["amount"]
            n += 1
    return n, time.perf_counter() - t0, time.process_time() - c0


VARIANTS = ("default", "sample", "off")


def variant_settings(variant: str) -> Any:
    """The engine's settings for a variant (see the module doc)."""
    from crm_stream.config import settings as config

    settings = config.load(None, env={})
    if variant == "default":
        return settings
    if variant == "sample":
        production = config.load(str(Path(config.__file__).with_name("production.toml")), env={})
        return dataclasses.replace(
            settings, models=dataclasses.replace(settings.models, train_fraction=production.models.train_fraction)
        )
    if variant == "off":
        return dataclasses.replace(settings, models=dataclasses.replace(settings.models, enabled=False))
    raise SystemExit(f"unknown variant {variant!r}: use any of {', '.join(VARIANTS)}")


def engine_replay(path: Path, workdir: Path, variant: str = "default") -> dict[str, Any]:
    """``flows.runtime.replay`` of the file under a variant's settings: what it did and what it cost."""
    from crm_stream.flows.runtime import replay

    settings = variant_settings(variant)
    t0, c0 = time.perf_counter(), time.process_time()
    summary = replay(
        settings,
        path,
        alerts_out=workdir / f"realshape-{variant}.alerts",
        profiles_out=workdir / f"realshape-{variant}.profiles",
        deadletter_out=workdir / f"realshape-{variant}.dl",
    )
    return {
        "train_fraction": settings.models.train_fraction if settings.models.enabled else 0.0,
        "events_applied": summary.events,
        "alerts": summary.alerts,
        "seconds": round(time.perf_counter() - t0, 2),
        "cpu_seconds": round(time.process_time() - c0, 2),
        "timers_fired": summary.timers_fired,
        "prediction_points": summary.prediction_points,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--copies", type=int, default=4, help="disjoint CDNOW copies interleaved in time (default 4)")
    ap.add_argument("--limit", type=int, default=0, help="replay only the first N events (0: all)")
    ap.add_argument("--cdnow", default=None, help="CDNOW_master.txt or a Lifetimes wheel (default: the installed package's)")
    ap.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "crm-realshape"), help="input and outputs go here")
    ap.add_argument(
        "--variants", default=",".join(VARIANTS), help=f"engine settings to run, comma-separated (default: {','.join(VARIANTS)})"
    )
    ap.add_argument("--out", default=None, help="write the figures as JSON to this file")
    args = ap.parse_args(argv)

    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    full = workdir / f"cdnow-x{args.copies}.jsonl"
    if not full.exists():
        print(f"writing {full} ...", file=sys.stderr)
        write_input(full, args.copies, args.cdnow)
    path = full
    if args.limit:
        path = workdir / f"cdnow-x{args.copies}-first{args.limit}.jsonl"
        with open(full, "rb") as src, open(path, "wb") as dst:
            for i, line in enumerate(src):
                if i >= args.limit:
                    break
                dst.write(line)
    customers = len({orjson.loads(line)["customer_id"] for line in open(path, "rb")})

    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    for variant in variants:
        variant_settings(variant)  # an unknown name stops here, before minutes of work
    bare_n, bare_s, bare_cpu = bare_loop(path)
    bare_rate, bare_cpu_rate = bare_n / bare_s, bare_n / bare_cpu
    figures: dict[str, Any] = {
        "benchmark": "realshape",
        "command": "python -m load.bench_realshape " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "copies": args.copies,
        "events": bare_n,
        "customers": customers,
        "bare_events_per_s": round(bare_rate),
        "bare_events_per_cpu_s": round(bare_cpu_rate),
        "engines": {},
    }
    print(f"real-shaped replay: {bare_n:,} purchases over {customers:,} customers ({args.copies} CDNOW copies)")
    print(f"  bare orjson.loads + dict loop  {bare_rate:>10,.0f} events/s   {bare_cpu_rate:>10,.0f} per CPU s")
    for variant in variants:
        run = engine_replay(path, workdir, variant)
        rate, cpu_rate = run["events_applied"] / run["seconds"], run["events_applied"] / run["cpu_seconds"]
        run.update(
            events_per_s=round(rate),
            ratio=round(rate / bare_rate, 4),
            events_per_cpu_s=round(cpu_rate),
            ratio_cpu=round(cpu_rate / bare_cpu_rate, 4),
        )
        figures["engines"][variant] = run
        fired = run["timers_fired"]
        per_event = ", ".join(f"{kind} {n / bare_n:.2f}" for kind, n in sorted(fired.items(), key=lambda kv: -kv[1]))
        print(
            f"  engine, {variant:<7} {rate:>10,.0f} events/s ({rate / bare_rate:.2%} of bare)   "
            f"{cpu_rate:>7,.0f} per CPU s ({cpu_rate / bare_cpu_rate:.2%})   {run['seconds']:.0f} s, {run['alerts']:,} alerts"
        )
        print(
            f"      per event: timers fired {sum(fired.values()) / bare_n:.2f} ({per_event}); "
            f"model prediction points {run['prediction_points'] / bare_n:.2f} (train fraction {run['train_fraction']:g})"
        )
    if args.out:
        Path(args.out).write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
