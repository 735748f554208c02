"""Score every alert rule against the simulated shop's ground truth: precision and recall per kind.

    python -m load.score_alerts [--customers 300] [--days 180] [--seed 7] [--out FILE]

The table is printed; the result is also written as JSON to ``--out``, by default
under the user's cache directory (``$XDG_CACHE_HOME/crm-stream``, else
``~/.cache/crm-stream``), never into the source tree. To record a result in the
repository's history, name it: ``--out load/results/alerts-DATE.json``.

Simulates the shop (operators/events/simulator.py), replays its events through the
engine (the contract's replay, i.e. the live dataflow), and matches alerts to
the situations the simulator decided to create:

| kind | an alert counts as correct when the truth has, for the same customer, |
|---|---|
| angry_customer | an angry ticket with the same ticket_id |
| abandoned_interest | an abandoned category, alert within 30 days after the interest began |
| churn_risk | a churn (the customer stopped buying), alert after it (within 120 days) |
| win_back | a lapsed customer (churn or win_back situation), alert within 120 days after it |
| replenishment | a due date in the same category, alert within 7 days of it |
| return_spike | a spike of the same product, alert after it began |
| segment_change | to at_risk / lost: a churn (the customer stopped buying) before the alert; to high_value: a loyal or replenishment persona |

Precision = correct alerts / alerts; recall = situations with at least one
correct alert / situations. The simulator does not decide segments, so for
``segment_change`` the "situations" are the lapses and the valuable personas
it did decide, and recall says how many of those the segment moves caught.
"""

from __future__ import annotations

import argparse
import tempfile
from collections import defaultdict
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

from crm_stream.config import settings as config
from crm_stream.flows.runtime import replay
from crm_stream.operators.events.simulator import Shop
from crm_stream.operators.events.timeutil import MS_PER_DAY, parse_ts
from crm_stream.operators.io import jsonutil
from load.outputs import results_dir

DAY = MS_PER_DAY
Matcher = Callable[[dict[str, Any], dict[str, Any]], bool]

# truth situations each alert kind is judged against, and when an alert matches one
MATCHERS: dict[str, tuple[tuple[str, ...], Matcher]] = {
    "angry_customer": (("angry_customer",), lambda a, t: a["payload"].get("ticket_id") == t.get("ticket_id")),
    "abandoned_interest": (
        ("abandoned_interest",),
        lambda a, t: a["payload"].get("category") == t.get("category") and t["_ts"] <= a["_ts"] <= t["_ts"] + 30 * DAY,
    ),
    "churn_risk": (("churn",), lambda a, t: t["_ts"] <= a["_ts"] <= t["_ts"] + 120 * DAY),
    "win_back": (("churn", "win_back"), lambda a, t: t["_ts"] - 30 * DAY <= a["_ts"] <= t["_ts"] + 120 * DAY),
    "replenishment": (
        ("replenishment",),
        lambda a, t: a["payload"].get("category") == t.get("category") and abs(a["_ts"] - t["_ts"]) <= 7 * DAY,
    ),
    "return_spike": (
        ("return_spike",),
        lambda a, t: a["payload"].get("product_id") == t.get("product_id") and a["_ts"] >= t["_ts"],
    ),
    "segment_change": (
        ("churn", "valuable"),
        lambda a, t: (
            a["payload"].get("to") in ("at_risk", "lost")
            and t["situation"] == "churn"
            and t["_ts"] <= a["_ts"]
            or a["payload"].get("to") == "high_value"
            and t["situation"] == "valuable"
        ),
    ),
}
VALUABLE_PERSONAS = ("loyal", "replenishment")


def score(alerts: list[dict[str, Any]], truth: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    situations: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for t in truth:
        if t.get("kind") == "situation":
            t["_ts"] = parse_ts(t["ts"])
            situations[t["situation"]].append(t)
        elif t.get("kind") == "customer" and t.get("persona") in VALUABLE_PERSONAS:
            situations["valuable"].append({"situation": "valuable", "customer_id": t["customer_id"], "_ts": 0})
    by_kind: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for a in alerts:
        a["_ts"] = parse_ts(a["ts"])
        by_kind[a["kind"]].append(a)
    table: dict[str, dict[str, Any]] = {}
    for kind in sorted(set(by_kind) | set(MATCHERS)):
        raised = by_kind.get(kind, [])
        if kind not in MATCHERS:
            table[kind] = {"alerts": len(raised), "situations": None, "precision": None, "recall": None}
            continue
        truth_kinds, match = MATCHERS[kind]
        candidates = [t for k in truth_kinds for t in situations.get(k, [])]
        per_customer: dict[str | None, list[dict[str, Any]]] = defaultdict(list)
        for t in candidates:
            per_customer[t.get("customer_id") if kind != "return_spike" else None].append(t)
        found: set[int] = set()
        correct = 0
        for a in raised:
            pool = per_customer.get(a["customer_id"] if kind != "return_spike" else None, [])
            hits = [id(t) for t in pool if match(a, t)]
            correct += bool(hits)
            found.update(hits)
        # win_back is judged correct against any lapse, but its recall counts the simulator's win-back situations
        relevant = [t for t in candidates if t["situation"] == "win_back"] if kind == "win_back" else candidates
        recall_hits = sum(id(t) in found for t in relevant)
        table[kind] = {
            "alerts": len(raised),
            "situations": len(relevant),
            "precision": round(correct / len(raised), 3) if raised else None,
            "recall": round(recall_hits / len(relevant), 3) if relevant else None,
        }
    return table


def run(customers: int, days: int, seed: int, settings: config.Settings | None = None) -> dict[str, Any]:
    settings = settings or config.load(None, env={})
    sim = replace(settings.simulator, customers=customers, days=days, seed=seed, bad_rate=0.0)
    with tempfile.TemporaryDirectory() as tmp:
        events, truth_path, alerts_path = Path(tmp, "events.jsonl"), Path(tmp, "truth.jsonl"), Path(tmp, "alerts.jsonl")
        Shop(sim, currency_rates=settings.currency_rates).write_files(events, truth_path)
        replay(settings, events, alerts_out=alerts_path, profiles_out=Path(tmp, "profiles.jsonl"))
        alerts = [jsonutil.loads(line) for line in alerts_path.read_bytes().splitlines()]
        truth = [jsonutil.loads(line) for line in truth_path.read_bytes().splitlines()]
    return {"customers": customers, "days": days, "seed": seed, "table": score(alerts, truth)}


def render(result: dict[str, Any]) -> str:
    fmt = lambda v: "-" if v is None else (f"{v:.2f}" if isinstance(v, float) else str(v))
    lines = [
        f"Alert rules vs the simulator's ground truth ({result['customers']} customers, {result['days']} days, seed {result['seed']})",
        "",
        "| kind | alerts | situations | precision | recall |",
        "|---|---|---|---|---|",
    ]
    for kind, row in result["table"].items():
        lines.append(f"| {kind} | {row['alerts']} | {fmt(row['situations'])} | {fmt(row['precision'])} | {fmt(row['recall'])} |")
    return "\n".join(lines)


def default_out(now: datetime, env: dict[str, str] | None = None) -> Path:
    """Where results go when ``--out`` is not given: the user's cache directory (load/outputs.py), dated.

    >>> default_out(datetime(2026, 12, 6), {"XDG_CACHE_HOME": "/tmp/cache"}).as_posix()
    '/tmp/cache/crm-stream/alerts-2026-12-06.json'
    """
    return results_dir(env) / f"alerts-{now:%Y-%m-%d}.json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m load.score_alerts",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument("--customers", type=int, default=300, help="customers simulated (default: %(default)s)")
    parser.add_argument("--days", type=int, default=180, help="days simulated (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=7, help="the simulator's seed (default: %(default)s)")
    parser.add_argument("--config", help="TOML settings (rule thresholds under [rules]; default: config/default.toml)")
    parser.add_argument(
        "--out",
        type=Path,
        metavar="FILE",
        help="JSON file for the result (default: ~/.cache/crm-stream/alerts-DATE.json, or under $XDG_CACHE_HOME)",
    )
    args = parser.parse_args(argv)
    result = run(args.customers, args.days, args.seed, config.load(args.config) if args.config else None)
    print(render(result))
    out = args.out or default_out(datetime.now())
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(jsonutil.dumps(result))
    print(f"\nresult written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
