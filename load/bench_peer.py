"""A peer measured side by side: the same events, on the same topics, through a Quix Streams app and ``crm-stream run``.

    python -m load.bench_peer                     # 300,000 events over 100,000 customers, 2 rounds (~4 min on 2 cores)
    python -m load.bench_peer --events 100000 --rounds 1   # shorter

One run starts its own redis-server and Tansu broker on loopback, produces N
generated events (``load.generator``, the clickstream-heavy mix) to the 4
input topics (4 partitions each, keyed by customer id), and then drains that
backlog, one drain at a time, each from the beginning: the bare stack once, then
``--rounds`` (2) rounds of Quix and crm-stream, who goes first alternating:

1. **bare stack**: a consumer per partition + ``orjson.loads`` (the ceiling; ``load.bench_spine``);
2. **Quix Streams**: ``load/peer_quix_app.py`` in its own virtual environment
   (``~/.cache/crm-stream/quix-venv``, made here on first use with ``python -m venv`` and
   ``pip install quixstreams``: Quix pins ``confluent-kafka<2.13``, so it never enters the project's
   environment). Per event: decode, validate, dedup on event id, a per-customer profile in Quix's state
   store (RocksDB + changelog topic: counts, RFM, decayed interests, support), an alert to a topic for an
   angry inbound support message (a keyword list);
3. **crm-stream**: ``crm-stream run``, one process, Kafka in, Redis as the store of record, Kafka out:
   decode, validate and dead-letter, dedup, identity stitching, the profile (RFM, decayed interests,
   sentiment, segments), every alert rule with consent, caps, cooldowns and budgets, event-time timers,
   online models (training on a 10% sample of customers, as ``config/production.toml``), the profile blob
   and the outputs written durably per batch.

Each rate is taken from the first event processed to the last (start-up and the consumer group join left
out), and printed with the CPU its process used over that span and how busy the rest of the machine was
(on a shared machine another tenant's load lowers a wall-clock rate; the per-CPU-second rate moves
less). The ratio crm-stream / Quix, per wall second and per CPU second, is the median over the rounds.
crm-stream does more per event than the Quix app, so the ratio understates it. Results go to
``~/.cache/crm-stream/peer-<date>.json`` unless ``--out`` names a file.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from load import bench_e2e as e2e
from load import bench_spine as spine
from load.generator import EventGenerator
from load.outputs import results_dir, write_results
from load.proc import CpuShare, memory_kib

ROOT = Path(__file__).resolve().parents[1]
QUIX_REQUIREMENT = "quixstreams==3.28.*"  # the version measured in issue 16; pinned so runs compare
QUIX_APP = ROOT / "load" / "peer_quix_app.py"
log = spine.log


def quix_python(venv: Path) -> tuple[Path, str]:
    """The Quix venv's interpreter and Quix's version; the venv is made (a few hundred MB, once) if missing."""
    python = venv / "bin" / "python"
    probe = [str(python), "-c", "import importlib.metadata as m; print(m.version('quixstreams'))"]
    if python.exists():
        done = subprocess.run(probe, capture_output=True, text=True)
        if done.returncode == 0:
            return python, done.stdout.strip()
    log(f"making the Quix Streams environment in {venv} (python -m venv; pip install {QUIX_REQUIREMENT})")
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    pip = subprocess.run([str(python), "-m", "pip", "install", "--quiet", QUIX_REQUIREMENT], capture_output=True, text=True)
    if pip.returncode != 0:
        raise spine.BenchError(
            f"pip install {QUIX_REQUIREMENT} into {venv} failed: {pip.stderr.strip()[-600:]}; "
            "check the package index is reachable, or pass --quix-venv with an environment that has it"
        )
    return python, subprocess.run(probe, capture_output=True, text=True, check=True).stdout.strip()


def create_input_topics(kafka: Any, partitions: int) -> None:
    """The input topics, created with an explicit retention: Quix reads ``retention.ms`` of its input topics to
    configure its changelog topics, and Tansu describes only the settings a topic was created with."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": kafka.bootstrap_servers})
    config = {"retention.ms": "-1", "retention.bytes": "-1"}
    futures = admin.create_topics([NewTopic(t, partitions, 1, config=config) for t in kafka.topics.inputs()])
    for future in futures.values():
        future.result(timeout=10)


def quix_phase(
    python: Path, bootstrap: str, topics: list[str], alerts_topic: str, expected: int, work: Path, timeout_s: float,
    others: dict[str, int], round_no: int = 0,
) -> dict[str, Any]:  # fmt: skip
    """Run the Quix app (a fresh group and state) until it has seen ``expected`` events; its own first/last
    timestamps give the rate."""
    result = work / f"quix-result-{round_no}.json"
    command = [
        str(python), str(QUIX_APP), "--broker", bootstrap, "--topics", ",".join(topics), "--alerts-topic", alerts_topic,
        "--expected", str(expected), "--result", str(result), "--state-dir", str(work / f"quix-state-{round_no}"),
        "--group", f"bench-quix-{round_no}",
    ]  # fmt: skip
    started = time.time()
    with open(work / "quix.log", "ab") as out:
        proc = subprocess.Popen(command, cwd=work, stdout=out, stderr=subprocess.STDOUT)
    share: CpuShare | None = None
    peak_kib = 0
    try:
        while not result.exists():
            if share is None and Path(f"{result}.started").exists():
                share = CpuShare({"quix": proc.pid, "bench": os.getpid(), **others})
            if proc.poll() is not None:
                tail = (work / "quix.log").read_text(errors="replace")[-1500:]
                raise spine.BenchError(f"the Quix app exited with {proc.returncode} before the end: {tail}")
            if time.time() - started > timeout_s:
                raise spine.BenchError(f"the Quix app did not see {expected:,} events within {timeout_s:.0f}s")
            peak_kib = max(peak_kib, memory_kib(proc.pid).get("VmHWM", 0))
            time.sleep(0.1)
        cores = share.stop() if share else {}
        time.sleep(0.2)  # the result is written before the file closes: read it whole
        got = orjson.loads(result.read_bytes())
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
    span = got["last_at"] - got["first_at"]
    return {
        **got,
        "startup_s": round(got["first_at"] - started, 2),
        "seconds": round(span, 2),
        "events_per_s": (got["events"] - 1) / span if span > 0 else 0.0,
        "process_cores": round(got["cpu_s"] / span, 2) if span > 0 else None,
        "events_per_cpu_s": got["events"] / got["cpu_s"] if got["cpu_s"] else None,
        "peak_rss_mib": round(peak_kib / 1024, 1),
        "cpu_cores": cores,
    }


def outputs_of(kafka: Any) -> list[str]:
    t = kafka.topics
    return [t.service_alerts, t.marketing_triggers, t.deadletter]


def engine_phase(
    kafka: Any, redis_url: str, expected: int, work: Path, engine_env: list[str], timeout_s: float, others: dict[str, int],
    round_no: int = 0,
) -> dict[str, Any]:  # fmt: skip
    """``crm-stream run`` (a fresh store, recovery directory and group) until it has applied ``expected`` events."""
    from crm_stream.config import settings as config
    from crm_stream.flows.runtime import _recovery
    from tests.integration.engine_process import engine_env as make_env

    store = e2e.Store(redis_url)
    store.flush()
    recovery = work / f"recovery-{round_no}"
    _recovery(config.load(None, env={"CRM_STREAM__RECOVERY__DIR": str(recovery)}))
    overrides = {
        "CRM_STREAM__ENGINE__EPOCH_INTERVAL_MS": "500",
        "CRM_STREAM__KAFKA__GROUP_ID": f"{kafka.group_id}.engine{round_no}",
    }
    overrides.update(item.split("=", 1) for item in engine_env)
    before = spine.topic_counts(kafka, outputs_of(kafka))
    engines = e2e.EngineCluster(1, make_env(kafka, redis_url, recovery, **overrides), work)
    try:
        tp = e2e.throughput_phase(engines, store, expected, timeout_s, others)
    finally:
        engines.kill()
        store.close()
    after = spine.topic_counts(kafka, outputs_of(kafka))
    outputs = {topic: after[topic] - before.get(topic, 0) for topic in after}  # this drain's, not earlier rounds'
    return {
        **tp,
        "process_cores": tp["engine_cpu_cores"],
        "events_per_cpu_s": tp["events_per_s"] / tp["engine_cpu_cores"] if tp.get("engine_cpu_cores") else None,
        "outputs": outputs,
    }


# ----------------------------------------------------------------------------- report


def render(r: dict[str, Any]) -> str:
    m = r["machine"]
    bare = r.get("bare_stack") or {}
    lines = [
        "",
        f"crm-stream vs Quix Streams, the same events on the same topics  {r['started_at']}",
        f"machine: {m['nproc']} cores ({m['cpu_model']}), {m['mem_total_gib']} GiB; load average at start "
        f"{', '.join(f'{x:.1f}' for x in r['load_average_at_start'])}; Python {r['versions']['python']}; "
        f"quixstreams {r.get('quix_version', '?')} (own venv); bytewax {r['versions']['bytewax']}",
        f"command: {r['command']}",
        f"engine code: sha256 {r['code']['sha256'][:12]}, newest change {r['code']['newest_change']}",
        f"events: {r['config']['events']:,} (clickstream-heavy) to 4 topics x 4 partitions, keyed by customer; "
        f"{r.get('generator', {}).get('distinct_customers', 0):,} distinct customers",
        "",
        f"{'backlog drained, one process':<44}{'events/s':>10}{'vs bare':>9}{'ev/CPU s':>10}{'alerts':>9}"
        f"   cores: it / other tenants / of",
    ]

    def row(name: str, phase: dict[str, Any], alerts: Any) -> None:
        rate, c = phase.get("events_per_s") or 0.0, phase.get("cpu_cores") or {}
        per_cpu = phase.get("events_per_cpu_s")
        lines.append(
            f"{name:<44}{rate:>10,.0f}{spine._ratio(rate, bare.get('events_per_s'))}"
            f"{(f'{per_cpu:,.0f}' if per_cpu else '-'):>10}{alerts:>9}"
            + (f"   {phase.get('process_cores') or 0:.2f} / {c.get('other_processes_cores', 0):.2f} / {c.get('cores', '?')}")
        )

    if bare:
        bare_c = bare.get("cpu_cores") or {}
        lines.append(
            f"{'bare stack (consume + orjson.loads)':<44}{bare['events_per_s']:>10,.0f}{'1.00x':>9}{'-':>10}{'-':>9}"
            f"   {bare_c.get('bench_cores', 0):.2f} / {bare_c.get('other_processes_cores', 0):.2f} / {bare_c.get('cores', '?')}"
        )
    wall, cpu = [], []
    for n, done in enumerate(r.get("rounds", []), 1):
        quix, engine = done.get("quix") or {}, done.get("engine") or {}
        if quix:
            row(f"round {n}: Quix Streams app", quix, quix.get("alerts", "-"))
        if engine:
            service = next((v for k, v in (engine.get("outputs") or {}).items() if "service" in k), "-")
            row(f"round {n}: crm-stream run", engine, service)
        if quix.get("events_per_s") and engine.get("events_per_s"):
            wall.append(engine["events_per_s"] / quix["events_per_s"])
        if quix.get("events_per_cpu_s") and engine.get("events_per_cpu_s"):
            cpu.append(engine["events_per_cpu_s"] / quix["events_per_cpu_s"])
    if wall:
        lines += [
            "",
            f"crm-stream / Quix: {statistics.median(wall):.2f}x per wall second"
            + (f", {statistics.median(cpu):.2f}x per CPU second of its process while draining" if cpu else "")
            + f" (median of {len(wall)} round(s): {', '.join(f'{x:.2f}' for x in wall)}"
            + (f" / {', '.join(f'{x:.2f}' for x in cpu)}" if cpu else "")
            + ")",
        ]
    lines += [
        "",
        "per event, Quix: decode (orjson), validate, dedup on event_id, a profile in Quix's state store (RocksDB +",
        "  changelog topic): counts, RFM, decayed interests, support; an alert for an angry inbound message (keywords).",
        "per event, crm-stream: the same, plus dead letters, identity stitching, segments, sentiment, every alert rule",
        "  with consent / caps / cooldowns / budgets, event-time timers, online models (10% training sample), the",
        "  profile in Redis and the outputs made durable per batch.",
    ]
    if r.get("errors"):
        lines += ["", "errors:"] + [f"  {e}" for e in r["errors"]]
    lines.append(f"\nresults: {r.get('results_file', '-')}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m load.bench_peer", description=__doc__.split("\n\n")[0])
    p.add_argument("--events", type=int, default=300_000, help="events to produce and drain (default 300,000)")
    p.add_argument("--customers", type=int, default=100_000, help="customer ids to draw from (default 100,000)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--rounds", type=int, default=2, help="Quix and crm-stream drains each, in alternating order (default 2)")
    p.add_argument("--timeout", type=float, default=600.0, help="limit for each side to drain the backlog (default 600 s)")
    p.add_argument("--quix-venv", type=Path, default=results_dir() / "quix-venv", help="the Quix environment (made if missing)")
    p.add_argument(
        "--engine-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="engine settings (default CRM_STREAM__MODELS__TRAIN_FRACTION=0.1, as config/production.toml)",
    )
    p.add_argument("--out", help="results file (default ~/.cache/crm-stream/peer-<date>.json)")
    args = p.parse_args(argv)
    if not 1 <= args.rounds <= 10:
        p.error("--rounds must be between 1 and 10")
    if not 1_000 <= args.events <= 5_000_000:
        p.error("--events must be between 1,000 and 5,000,000")
    args.engine_env = args.engine_env or ["CRM_STREAM__MODELS__TRAIN_FRACTION=0.1"]
    spine.check_engine_env(p, args.engine_env)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from crm_stream.config import settings as config
    from crm_stream.operators.io.kafka import ensure_topics
    from load.servers import running_servers
    from tests.integration.conftest import make_kafka_settings

    started_at = datetime.now(UTC)
    out_path = Path(args.out) if args.out else results_dir() / f"peer-{started_at:%Y-%m-%d}.json"
    results: dict[str, Any] = {
        **spine.run_header("load.bench_peer", argv, started_at),
        "config": {
            "events": args.events,
            "customers": args.customers,
            "seed": args.seed,
            "rounds": args.rounds,
            "engine_env": args.engine_env,
        },
        "rounds": [],
        "errors": [],
    }
    work = Path(tempfile.mkdtemp(prefix="crm-bench-peer-"))
    log(f"{results['command']}: work dir {work}")
    try:
        python, results["quix_version"] = quix_python(args.quix_venv)
        spine.check_generator(args.customers, args.seed, "uniform", config.load(None, env={}))
        gen = EventGenerator(args.customers, seed=args.seed)
        records, results["generator"] = spine.generate(gen, args.events, work / "events.jsonl")
        (work / "events.jsonl").unlink()
        with running_servers(str(work)) as (redis_server, broker):
            others = {"redis": redis_server.process.pid, "tansu": broker.process.pid}
            kafka = make_kafka_settings(broker.bootstrap)
            spine.PARTITIONS = 4
            create_input_topics(kafka, partitions=4)
            ensure_topics(kafka, partitions=4)  # the outputs
            results["produce"] = spine.produce(kafka, records)
            del records
            gc.collect()
            log(f"produced {args.events:,} at {results['produce']['events_per_s']:,.0f}/s")
            results["bare_stack"] = spine.bare_stack(kafka, args.events, 120, others)
            log(f"bare stack {results['bare_stack']['events_per_s']:,.0f}/s")
            for n in range(args.rounds):
                # Alternate who goes first, so a drift in the machine's load does not favour one side.
                order = ("quix", "engine") if n % 2 == 0 else ("engine", "quix")
                done: dict[str, Any] = {}
                for side in order:
                    log(f"round {n + 1} of {args.rounds}: {side} draining the backlog")
                    if side == "quix":
                        done[side] = quix_phase(
                            python, broker.bootstrap, list(kafka.topics.inputs()), f"{kafka.topics.service_alerts}.quix",
                            args.events, work, args.timeout, others, n,
                        )  # fmt: skip
                    else:
                        done[side] = engine_phase(
                            kafka, redis_server.url, args.events, work, args.engine_env, args.timeout, others, n
                        )
                    log(f"round {n + 1}: {side} {done[side]['events_per_s']:,.0f}/s")
                results["rounds"].append(done)
    except spine.BenchError as exc:
        results["errors"].append(str(exc))
        log(f"error: {exc}")
    write_results(results, out_path)
    print(render(results))
    return 1 if results["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
