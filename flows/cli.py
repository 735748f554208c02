"""``crm-stream``: run the engine, replay a file, simulate a shop, look at a profile."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections import Counter
from pathlib import Path

from crm_stream.config import settings as config
from crm_stream.operators.io import jsonutil
from crm_stream.operators.privacy import log_redaction

EXIT_USAGE = 2


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=getattr(logging, args.log_level), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log_redaction.install()  # secrets and personal data never reach a log line
    if not getattr(args, "command", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args.func(args) or 0)
    except config.ConfigError as exc:
        print(f"crm-stream: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except FileNotFoundError as exc:
        print(f"crm-stream: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="crm-stream",
        description="Real-time customer profiles, alerts and marketing triggers from customer events.",
    )
    parser.add_argument("--log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser(
        "run",
        help="run the engine (no config: the embedded demo shop)",
        description="Run the engine. With no --config: a simulated shop flows through the dataflow into an "
        "in-process store, and alerts and profile changes are printed live. With --config (see "
        "config/production.toml): Kafka in, Redis as the store, Kafka out.",
    )
    run.add_argument("--config", help="TOML settings file (environment overrides still apply)")
    run.add_argument("--workers", type=int, default=1, help="worker threads in this process")
    run.add_argument("--process-id", type=int, help="this process's index in a cluster (with --addresses)")
    run.add_argument("--addresses", help="host:port of every process in the cluster, comma-separated, same order everywhere")
    run.add_argument("--quiet", action="store_true", help="do not print profile changes (alerts and rejects still print)")
    run.add_argument(
        "--console", action="store_true", help="also serve the agents' web console (alerts live, profiles, feedback)"
    )
    run.add_argument("--console-port", type=int, help="port of the console (default: console.port, 8080)")
    run.set_defaults(func=_cmd_run)

    rep = sub.add_parser(
        "replay",
        help="run the same dataflow on a JSON-lines file, in event time",
        description="Replay a file of contract events through the engine, with no Kafka or Redis. "
        "Outputs are byte-identical run after run.",
    )
    rep.add_argument("events", help="JSON-lines file of input events, in time order")
    rep.add_argument("--alerts-out", required=True, help="where to write every alert and trigger")
    rep.add_argument("--profiles-out", required=True, help="where to write one profile per known customer")
    rep.add_argument("--deadletter-out", help="where to write rejected lines with their reasons")
    rep.add_argument("--churn-horizon-days", type=float, help="churn horizon N in days (default from config)")
    rep.add_argument("--config", help="TOML settings file (defaults: config/default.toml)")
    rep.set_defaults(func=_cmd_replay)

    sim = sub.add_parser("simulate", help="write the simulated shop's events (and ground truth) to a file or Kafka")
    sim.add_argument("--out", help="JSON-lines file for the events")
    sim.add_argument("--truth", help="JSON-lines file for the ground truth (personas, situations)")
    sim.add_argument("--to-kafka", action="store_true", help="produce to the input topics named in the config instead")
    sim.add_argument("--customers", type=int, help="number of customers")
    sim.add_argument("--days", type=int, help="days of history")
    sim.add_argument("--seed", type=int, help="random seed")
    sim.add_argument("--bad-rate", type=float, help="fraction of deliberately malformed records")
    sim.add_argument("--config", help="TOML settings file")
    sim.set_defaults(func=_cmd_simulate)

    ev = sub.add_parser(
        "evaluate",
        help="progressive (test-then-train) metrics of the online models vs baselines on a file",
        description="Run a JSON-lines file of contract events through the engine's logic with the online "
        "churn and next-purchase models learning in event time; every prediction is scored when its "
        "label arrives, before the model learns from it, beside simple baselines scored on the same predictions.",
    )
    ev.add_argument("events", help="JSON-lines file of input events, in time order (e.g. from `crm-stream simulate`)")
    ev.add_argument("--churn-horizon-days", type=float, help="churn horizon N in days (default from config)")
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--json", action="store_true", help="print the metrics as JSON instead of a table")
    ev.add_argument("--config", help="TOML settings file")
    ev.set_defaults(func=_cmd_evaluate)

    prof = sub.add_parser("profile", help="print a customer's live profile from Redis")
    prof.add_argument("customer_id")
    prof.add_argument("--config", help="TOML settings file whose [store] points at Redis (default: config/production.toml)")
    prof.add_argument("--actor", help="who is reading, for the audit record (default: audit.actor, else the OS user)")
    prof.set_defaults(func=_cmd_profile)

    exp = sub.add_parser(
        "export-customer",
        help="print everything held on a customer as JSON (right of access)",
        description="Print, as one JSON object, everything the engine's store holds on a customer: the "
        "full stored profile, the derived view, visitor links, pending timers, held marketing triggers "
        "and model features waiting for labels. The access is recorded to the audit stream first.",
    )
    exp.add_argument("customer_id")
    exp.add_argument("--config", help="TOML settings file whose [store] points at Redis (default: config/production.toml)")
    exp.add_argument("--actor", help="who asks, for the audit record (default: audit.actor, else the OS user)")
    exp.set_defaults(func=_cmd_export_customer)

    con = sub.add_parser(
        "console",
        help="serve the agents' web console: live service alerts, profiles, feedback, claims",
        description="Follow the service-alert topic and serve the agents' console and its JSON API "
        "(flows/console/). Profiles and claims come from Redis; feedback goes to the control topic; "
        "agents sign in with the passwords hashed in [console.password_hashes].",
    )
    con.add_argument(
        "--config", help="TOML settings file with Kafka, a Redis [store] and [console] (default: config/production.toml)"
    )
    con.add_argument("--host", help="address to listen on (default: console.host)")
    con.add_argument("--port", type=int, help="port to listen on (default: console.port)")
    con.set_defaults(func=_cmd_console)

    cpw = sub.add_parser(
        "console-password",
        help="hash an agent's console password for [console.password_hashes]",
        description="Reads the password (prompted, or one line on standard input) and prints the "
        "TOML line to put under [console.password_hashes].",
    )
    cpw.add_argument("agent", help="the agent's name (letters, digits, _ . @ -)")
    cpw.set_defaults(func=_cmd_console_password)
    return parser


def _settings(args: argparse.Namespace, fallback: Path | None = None) -> config.Settings:
    path = getattr(args, "config", None) or fallback
    settings = config.load(path)
    log_redaction.add_secrets(config.secret_values(settings))
    return settings


def _cmd_run(args: argparse.Namespace) -> int:
    from crm_stream.flows.runtime import RunOptions, run

    settings = _settings(args)
    addresses = args.addresses.split(",") if args.addresses else None
    if (addresses is None) != (args.process_id is None):
        raise config.ConfigError("--process-id and --addresses go together (a cluster), or neither (one process)")
    demo = settings.source.kind == "simulator" and settings.sink.kind == "terminal"
    if demo:
        s = settings.simulator
        print(
            f"crm-stream demo: a simulated shop of {s.customers} customers over {s.days} days, "
            f"{'as fast as possible' if not s.rate else f'{s.rate:g} events/s'}; store: {settings.store.kind}; "
            f"{settings.engine.shards} shards. Ctrl-C stops.\n",
            flush=True,
        )
    console = None
    if args.console:
        from crm_stream.flows.console.backends import EmbeddedConsole

        console = EmbeddedConsole(settings, settings.console.host, args.console_port or settings.console.port)
        console.start()
        login = f"; sign in as demo / {console.demo_password}" if console.demo_password else ""
        print(f"agent console: {console.url}{login}\n", flush=True)
    started = time.monotonic()
    result = run(
        settings,
        RunOptions(args.workers, args.process_id, addresses, emit_changes=demo and not args.quiet),
        **(console.run_kwargs() if console else {}),
    )
    elapsed = time.monotonic() - started
    as_of = result.router.max_ts  # segments as of the stream's event time at the end, not each customer's last event
    segments = Counter(shard.segment(p, as_of) for shard in result.shards.values() for p in shard.held_profiles())
    print(
        f"\n{result.router.decoded} events in {elapsed:.1f}s ({result.router.decoded / max(elapsed, 1e-9):,.0f}/s), "
        f"{result.router.dead} rejected to the dead-letter output; {sum(segments.values())} customer profiles by segment:"
    )
    for segment, count in sorted(segments.items(), key=lambda kv: -kv[1]):
        print(f"  {segment:<11} {count}")
    suppressed = sum((shard.suppressed for shard in result.shards.values()), Counter())
    if suppressed:
        print("marketing triggers held back by governance: " + ", ".join(f"{k} {v}" for k, v in sorted(suppressed.items())))
    if console is not None:
        print(f"\nthe input has ended; the agent console stays up at {console.url} (Ctrl-C stops)", flush=True)
        console.wait()
    return 0


def _cmd_replay(args: argparse.Namespace) -> int:
    from crm_stream.flows.runtime import replay

    settings = _settings(args)
    summary = replay(
        settings,
        args.events,
        alerts_out=args.alerts_out,
        profiles_out=args.profiles_out,
        deadletter_out=args.deadletter_out,
        churn_horizon_days=args.churn_horizon_days,
    )
    print(
        f"replayed {summary.events + summary.dead} records: {summary.events} events, {summary.dead} rejected, "
        f"{summary.alerts} alerts, {summary.profiles} profiles",
        file=sys.stderr,
    )
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from crm_stream.operators.stages.evaluate import evaluate_file

    result = evaluate_file(args.events, args.churn_horizon_days, args.seed, settings=_settings(args))
    if args.json:
        sys.stdout.write(jsonutil.dumps(result["metrics"]).decode() + "\n")
    else:
        print(f"{result['events']} events, {result['customers']} customers, {result['seconds']:.1f}s\n")
        print(result["table"])
    return 0


def _cmd_simulate(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from crm_stream.operators.events.simulator import Shop

    settings = _settings(args)
    overrides = {
        k: v
        for k, v in {"customers": args.customers, "days": args.days, "seed": args.seed, "bad_rate": args.bad_rate}.items()
        if v is not None
    }
    shop = Shop(replace(settings.simulator, **overrides), currency_rates=settings.currency_rates)
    if args.to_kafka:
        from crm_stream.operators.io.kafka import ensure_topics, produce_records

        topics = settings.kafka.topics
        ensure_topics(settings.kafka)
        count = produce_records(settings.kafka, ((getattr(topics, role), key, value) for role, key, value in shop.records()))
        print(f"produced {count} records to {settings.kafka.bootstrap_servers}", file=sys.stderr)
        return 0
    if not args.out:
        raise config.ConfigError("simulate needs --out FILE or --to-kafka")
    counts = shop.write_files(args.out, args.truth)
    print(f"wrote {args.out}" + (f" and {args.truth}" if args.truth else "") + f": {counts}", file=sys.stderr)
    return 0


def _cmd_profile(args: argparse.Namespace) -> int:
    from crm_stream.flows.console.profiles import customer_view
    from crm_stream.operators.io.keys import KeySpace
    from crm_stream.operators.io.stores import StoreUnavailable, open_store

    settings = _settings(args, config.CONFIG_DIR / "production.toml")
    if settings.store.kind not in ("redis", "redis-cluster"):
        raise config.ConfigError(
            "profile reads Redis, but store.kind is 'memory' (the demo's store lives inside "
            "`crm-stream run`): use a config whose [store] kind is 'redis'"
        )
    keys = KeySpace.of(settings.store)
    store = open_store(settings.store, interactive=True)
    try:
        view = customer_view(store, keys, settings, args.customer_id)  # the same view as the agents' console
    except StoreUnavailable as exc:
        print(f"crm-stream: {exc}", file=sys.stderr)
        return 1
    if view is None:
        _audited(settings, args, "profile_read", {"found": False})
        print(
            f"crm-stream: no profile for customer {args.customer_id!r} in {config._mask_url(settings.store.url)} "
            f"(key {keys.profile(args.customer_id)})",
            file=sys.stderr,
        )
        return 1
    if not _audited(settings, args, "profile_read", {"found": True}):
        return 1
    sys.stdout.write(jsonutil.dumps(view).decode() + "\n")
    return 0


def _audited(settings: config.Settings, args: argparse.Namespace, action: str, detail: dict) -> bool:
    """Record an access to a customer's data before showing it; False (and why, on stderr) if it cannot be recorded."""
    from crm_stream.operators.privacy.audit import AuditLog, AuditUnavailable, default_actor

    audit = AuditLog(settings)
    try:
        audit.record(args.actor or default_actor(settings), action, args.customer_id, via="cli", detail=detail)
    except AuditUnavailable as exc:
        print(f"crm-stream: {exc}; nothing was shown", file=sys.stderr)
        return False
    finally:
        audit.close()
    return True


def _cmd_export_customer(args: argparse.Namespace) -> int:
    from crm_stream.operators.io.keys import KeySpace
    from crm_stream.operators.io.stores import StoreUnavailable, open_store
    from crm_stream.operators.privacy.access import export_customer

    settings = _settings(args, config.CONFIG_DIR / "production.toml")
    if settings.store.kind == "memory":
        raise config.ConfigError(
            "export-customer reads Redis, but store.kind is 'memory' (the demo's store lives inside "
            "`crm-stream run`): use a config whose [store] kind is 'redis'"
        )
    store = open_store(settings.store, interactive=True)
    try:
        export = export_customer(store, KeySpace.of(settings.store), settings, args.customer_id)
    except StoreUnavailable as exc:
        print(f"crm-stream: {exc}", file=sys.stderr)
        return 1
    held = {
        "profile": export["profile"] is not None,
        "visitor_links": len(export["visitor_links"]),
        "timers": len(export["timers"]["index"]),
        "scheduled_triggers": len(export["scheduled_triggers"]),
        "pending_predictions": len(export["pending_predictions"]),
    }
    if not _audited(settings, args, "export", held):
        return 1
    sys.stdout.write(jsonutil.dumps(export).decode() + "\n")
    return 0


def _cmd_console(args: argparse.Namespace) -> int:
    from crm_stream.flows.console.backends import ConsoleServer, kafka_backend

    settings = _settings(args, config.CONFIG_DIR / "production.toml")
    backend, feed = kafka_backend(settings)
    server = ConsoleServer(backend, args.host or settings.console.host, args.port or settings.console.port)
    feed.start()
    print(
        f"crm-stream console: following {settings.kafka.topics.service_alerts} on {settings.kafka.bootstrap_servers}; "
        f"serving http://{server.server.config.host}:{server.server.config.port}/ (Ctrl-C stops)",
        file=sys.stderr,
        flush=True,
    )
    server.run()
    return 0


def _cmd_console_password(args: argparse.Namespace) -> int:
    import getpass

    from crm_stream.flows.console.auth import AGENT_NAME, hash_password

    if not AGENT_NAME.match(args.agent):
        raise config.ConfigError(f"agent name {args.agent!r} may use only letters, digits and _ . @ - (at most 64)")
    password = getpass.getpass(f"password for {args.agent}: ") if sys.stdin.isatty() else sys.stdin.readline().rstrip("\n")
    if len(password) < 8:
        raise config.ConfigError("the password must be at least 8 characters")
    print("# under [console.password_hashes]")
    print(f'"{args.agent}" = "{hash_password(password)}"')
    return 0


if __name__ == "__main__":
    sys.exit(main())
