"""``crm-stream``: run the engine, replay a file, simulate a shop, look at a profile."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
import traceback
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

from crm_stream.config import settings as config
from crm_stream.errors import CrmStreamError
from crm_stream.flows.shutdown import EXIT_INTERRUPTED
from crm_stream.operators.io import jsonutil
from crm_stream.operators.privacy import log_redaction

if TYPE_CHECKING:  # the engine's modules load only for the commands that run it
    from crm_stream.flows import terminal
    from crm_stream.flows.runtime import RunResult
    from crm_stream.operators.io.files import TerminalOutputs

EXIT_USAGE = 2
"""Also what an expected failure at start exits with: a setting, a missing file, a server that does not answer."""
EXIT_BROKEN_PIPE = 141
"""128 + SIGPIPE: what a shell reports for a writer whose reader went away."""


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    level = "DEBUG" if args.debug else args.log_level
    logging.basicConfig(level=getattr(logging, level), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log_redaction.install()  # secrets and personal data never reach a log line
    if not getattr(args, "command", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:  # stdout piped into `head` or a pager that quit: nothing left to say, and nowhere to say it
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the interpreter's final flush is silent too
        return EXIT_BROKEN_PIPE
    except (CrmStreamError, config.ConfigError, OSError) as exc:
        # Expected failures (a setting, a file missing or not writable, a server that does not answer at start,
        # anything raised on purpose): one line that says what to check. --debug (or --log-level DEBUG) shows the traceback as well.
        if level == "DEBUG":
            traceback.print_exc()
        kind = "configuration error: " if isinstance(exc, config.ConfigError) else ""
        print(f"crm-stream: {kind}{_one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:  # Ctrl-C outside the engine's drain (flows/shutdown.py): starting up, or a summary
        if level == "DEBUG":
            traceback.print_exc()
        print("crm-stream: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _one_line(exc: BaseException) -> str:
    """An error's message on one line (a path or a server's reply may carry newlines).

    >>> _one_line(FileNotFoundError("events file x.jsonl does not exist:\\n  pass a file"))
    'events file x.jsonl does not exist: pass a file'
    """
    return " ".join(str(exc).split())


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="crm-stream",
        description="Real-time customer profiles, alerts and marketing triggers from customer events.",
    )
    parser.add_argument(
        "--log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="log detail on stderr"
    )
    parser.add_argument(
        "--debug", action="store_true", help="log at DEBUG and show tracebacks of expected failures (normally one line)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser(
        "run",
        help="run the engine (no config: the embedded demo shop)",
        description="Run the engine. With no --config: a simulated shop flows through the dataflow into an "
        "in-process store, and alerts and profile changes are printed live. With --config (see "
        "config/production.toml): Kafka in, Redis as the store, Kafka out; the broker and Redis are asked one "
        "short question first, and if one does not answer the command says which and exits 2. Ctrl-C (or SIGTERM) "
        "drains: the batches in flight are written, the summary printed, exit 0; a second Ctrl-C stops at once (130).",
    )
    run.add_argument("--config", help="TOML settings file (environment overrides still apply)")
    run.add_argument("--workers", type=int, default=1, help="worker threads in this process")
    run.add_argument("--process-id", type=int, help="this process's index in a cluster (with --addresses)")
    run.add_argument("--addresses", help="host:port of every process in the cluster, comma-separated, same order everywhere")
    run.add_argument(
        "--quiet",
        action="store_true",
        help="the demo: show only the status line and the summary (no alert, reject or profile lines)",
    )
    run.add_argument(
        "--console", action="store_true", help="also serve the agents' web console (alerts live, profiles, feedback)"
    )
    run.add_argument(
        "--console-port", type=int, help="port of the console (default: console.port, 8080; 0: any free port, printed at start)"
    )
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
    rep.add_argument(
        "--deadletter-out", help="where to write rejected lines with their reasons and line numbers (default: counted, not kept)"
    )
    rep.add_argument("--churn-horizon-days", type=float, help="churn horizon N in days (default from config)")
    rep.add_argument("--config", help="TOML settings file (defaults: config/default.toml)")
    rep.set_defaults(func=_cmd_replay)

    d = config.load(None, env={}).simulator  # the defaults shown are config/default.toml's
    sim = sub.add_parser(
        "simulate",
        help="write the simulated shop's events (and ground truth) to a file or Kafka",
        description="Simulate a shop: customers with personas (loyal, bargain hunters, lapsing, angry...) browse, buy, "
        "return and write to support, in event-time order, with the situations the alert rules should find "
        "written to --truth. Unset options come from [simulator] of --config (defaults shown: config/default.toml).",
        epilog="example: crm-stream simulate --out shop.jsonl --truth truth.jsonl --customers 300 --days 180",
    )
    sim.add_argument("--out", metavar="FILE", help="JSON-lines file for the events (or --to-kafka)")
    sim.add_argument(
        "--truth", metavar="FILE", help="JSON-lines file for the ground truth: personas and situations (default: not written)"
    )
    sim.add_argument(
        "--to-kafka", action="store_true", help="produce to the input topics of the config instead (creates missing topics)"
    )
    sim.add_argument("--customers", type=int, metavar="N", help=f"number of customers (default: {d.customers})")
    sim.add_argument(
        "--days", type=int, metavar="N", help=f"days of history, from simulator.start (default: {d.days}, from {d.start[:10]})"
    )
    sim.add_argument("--seed", type=int, help=f"random seed: the same seed writes the same file (default: {d.seed})")
    sim.add_argument(
        "--bad-rate",
        type=float,
        metavar="FRACTION",
        help=f"fraction of deliberately malformed records, for the dead-letter path (default: {d.bad_rate:g})",
    )
    sim.add_argument("--config", help="TOML settings file (default: config/default.toml)")
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
    ev.add_argument("--seed", type=int, default=0, help="seed of the models' initial state (default: 0)")
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
    from crm_stream.flows import terminal
    from crm_stream.flows.runtime import RunOptions, run
    from crm_stream.operators.events.router import Router
    from crm_stream.operators.io.files import TerminalOutputs

    settings = _settings(args)
    addresses = args.addresses.split(",") if args.addresses else None
    if (addresses is None) != (args.process_id is None):
        raise config.ConfigError("--process-id and --addresses go together (a cluster), or neither (one process)")
    demo = settings.source.kind == "simulator" and settings.sink.kind == "terminal"
    screen = terminal.Screen(quiet=args.quiet) if demo else None
    expected = None
    if screen is not None:
        expected = terminal.estimate_records(settings)
        screen.say(terminal.intro_lines(settings, expected))
        screen.say([""])
    console = None
    kwargs = {}
    if args.console:
        from crm_stream.flows.console.backends import EmbeddedConsole

        console = EmbeddedConsole(
            settings, settings.console.host, settings.console.port if args.console_port is None else args.console_port
        )
        console.start()
        kwargs = console.run_kwargs()
        login = f"; sign in as demo / {console.demo_password}" if console.demo_password else ""
        _say(screen, [f"agent console: {console.url}{login}", ""])
    shown = TerminalOutputs(show=screen.event_line, quiet=args.quiet) if screen is not None else None
    if shown is not None:
        if console is not None:  # the console's copy of every alert, beside the terminal's lines
            from crm_stream.flows.console.feed import TeeOutputs

            ring = console.ring
            kwargs["outputs_factory"] = lambda worker: TeeOutputs(shown, ring)
        else:
            kwargs["outputs_factory"] = lambda worker: shown
    routers: list[Router] = []
    started = time.monotonic()

    def progress() -> terminal.Progress:
        router = routers[0] if routers else None
        decoded, dead = (router.decoded, router.dead) if router else (0, 0)
        rate = settings.simulator.rate
        return terminal.Progress(
            decoded + dead,
            dead,
            time.monotonic() - started,
            router.max_ts if router else 0,
            dict(shown.kinds) if shown else {},
            expected,
            expected / rate if expected and rate > 0 else None,
        )

    options = RunOptions(
        args.workers,
        args.process_id,
        addresses,
        emit_changes=demo and not args.quiet,
        watch=routers.append,
        notify=screen.notice if screen is not None else _stderr_notice,
        on_abort=screen.abort if screen is not None else None,
    )
    if screen is not None:
        screen.start(progress)
    try:
        result = run(settings, options, **kwargs)
    finally:
        if screen is not None:
            screen.stop()
    summary = _run_summary(result, time.monotonic() - started, shown, expected, demo)
    _say(screen, ["", *terminal.summary_lines(summary)])
    if console is not None and result.stopped_by is None:
        _say(screen, ["", f"The input has ended; the agent console stays up at {console.url} (Ctrl-C stops it)."])
        try:
            console.wait()
        except KeyboardInterrupt:  # how this wait is meant to end
            _say(screen, ["console stopped"])
    elif console is not None:
        console.server.stop()
    return 0


def _run_summary(
    result: RunResult, elapsed: float, shown: TerminalOutputs | None, expected: int | None, demo: bool
) -> terminal.RunSummary:
    from crm_stream.flows import terminal

    as_of = result.router.max_ts  # segments as of the stream's event time at the end, not each customer's last event
    segments = Counter(shard.segment(p, as_of) for shard in result.shards.values() for p in shard.held_profiles())
    suppressed = sum((shard.suppressed for shard in result.shards.values()), Counter())
    return terminal.RunSummary(
        result.router.decoded + result.router.dead,
        result.router.dead,
        elapsed,
        dict(segments),
        dict(shown.kinds) if shown is not None else None,
        dict(suppressed),
        result.stopped_by,
        expected,
        result.committed,
        demo=demo,
    )


def _say(screen: terminal.Screen | None, lines: list[str]) -> None:
    """Lines for the user: through the demo's screen (width-fitted), or plain on stdout."""
    if screen is not None:
        screen.say(lines)
    else:
        for line in lines:
            print(line, flush=True)


def _stderr_notice(message: str) -> None:
    """A first Ctrl-C outside the demo: one line on stderr (a raw write: this runs in a signal handler)."""
    os.write(2, f"crm-stream: {message}\n".encode())


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
    if args.deadletter_out:
        rejects = f"{summary.dead:,} rejected -> {args.deadletter_out} (each with its reason and line number)"
    else:
        rejects = f"{summary.dead:,} rejected" + (
            " (not kept: add --deadletter-out FILE to see each one with its reason)" if summary.dead else ""
        )
    print(
        f"replayed {summary.events + summary.dead:,} records from {args.events}: {summary.events:,} events applied, {rejects}\n"
        f"  {summary.alerts:,} alerts and triggers -> {args.alerts_out}\n"
        f"  {summary.profiles:,} customer profiles -> {args.profiles_out}",
        file=sys.stderr,
    )
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from crm_stream.operators.stages.evaluate import evaluate_file, no_labels_reason

    result = evaluate_file(args.events, args.churn_horizon_days, args.seed, settings=_settings(args))
    reason = no_labels_reason(result)
    if args.json:
        sys.stdout.write(jsonutil.dumps(result["metrics"]).decode() + "\n")
        if reason:
            print(f"crm-stream: no labels yet: {reason}", file=sys.stderr)
    elif reason:  # a table of zeros would read as a model that predicts nothing
        print(
            f"{result['events']:,} events, {result['dead']:,} rejected, {result['customers']:,} customers, {result['seconds']:.1f}s"
        )
        print(f"no labels yet: {reason}")
    else:
        print(
            f"{result['events']:,} events, {result['dead']:,} rejected, {result['customers']:,} customers, "
            f"{result['seconds']:.1f}s\n"
        )
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
    try:
        shop = Shop(replace(settings.simulator, **overrides), currency_rates=settings.currency_rates)
    except ValueError as exc:  # out-of-range sizes and rates: a setting to fix
        raise config.ConfigError(f"{exc} (--customers, --days, --bad-rate or [simulator] of the config)") from None
    if args.to_kafka:
        from crm_stream.operators.io.kafka import ensure_topics, produce_records

        topics = settings.kafka.topics
        ensure_topics(settings.kafka)
        count = produce_records(settings.kafka, ((getattr(topics, role), key, value) for role, key, value in shop.records()))
        print(
            f"produced {count} records to {settings.kafka.bootstrap_servers} (topics {', '.join(topics.inputs())}): "
            f"{_shop_words(shop.settings)}\nnext: crm-stream run --config <your config> reads them",
            file=sys.stderr,
        )
        return 0
    if not args.out:
        raise config.ConfigError("simulate needs --out FILE (or --to-kafka): where to write the events")
    counts = shop.write_files(args.out, args.truth)
    print("\n".join(simulate_summary(counts, shop.settings, args.out, args.truth)), file=sys.stderr)
    return 0


def _shop_words(s: config.SimulatorSettings) -> str:
    return f"{s.customers:,} customers over {s.days} days from {s.start[:10]}, seed {s.seed}"


def simulate_summary(counts: dict[str, int], s: config.SimulatorSettings, out: str, truth: str | None) -> list[str]:
    """What ``simulate`` wrote, in words, and what to do with it.

    >>> counts = {"customers": 50, "events": 2788, "duplicates": 17, "malformed": 26, "records": 2831, "situations": 41}
    >>> for line in simulate_summary(counts, config.SimulatorSettings(customers=50, days=40), "shop.jsonl", None):
    ...     print(line)
    wrote 2,831 records to shop.jsonl: 50 customers over 40 days from 2026-01-01, seed 7
      2,788 events; 17 delivered twice (at least once, as real streams do); 26 malformed on purpose (--bad-rate)
      no ground truth written (add --truth FILE to score the alerts against the 41 situations simulated)
    next: crm-stream replay shop.jsonl --alerts-out alerts.jsonl --profiles-out profiles.jsonl --deadletter-out rejects.jsonl
          crm-stream evaluate shop.jsonl
    """
    lines = [
        f"wrote {counts['records']:,} records to {out}: {_shop_words(s)}",
        f"  {counts['events']:,} events; "
        + (f"{counts['duplicates']:,} delivered twice (at least once, as real streams do); " if counts["duplicates"] else "")
        + (
            f"{counts['malformed']:,} malformed on purpose (--bad-rate)"
            if counts["malformed"]
            else "none malformed (--bad-rate 0)"
        ),
    ]
    if truth:
        lines.append(
            f"  ground truth -> {truth}: {counts['customers']:,} customers' personas and {counts['situations']:,} situations"
        )
    else:
        lines.append(
            f"  no ground truth written (add --truth FILE to score the alerts against the {counts['situations']:,} situations simulated)"
        )
    lines.append(
        f"next: crm-stream replay {out} --alerts-out alerts.jsonl --profiles-out profiles.jsonl --deadletter-out rejects.jsonl"
    )
    lines.append(f"      crm-stream evaluate {out}")
    return lines


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
    server = ConsoleServer(backend, args.host or settings.console.host, settings.console.port if args.port is None else args.port)
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
