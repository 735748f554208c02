"""The peer in ``load.bench_peer``: the spine's per-event work written as a Quix Streams application.

Runs in its own virtual environment (``load.bench_peer`` makes it: Quix pins ``confluent-kafka<2.13``, the
project does not), so it imports nothing from ``crm_stream``. What it does per event, the part of
``crm-stream run``'s work that a plain Quix app would also do:

- decode the JSON value (Quix's own deserializer, orjson);
- validate it: a known type, an ``event_id``, a ``customer_id``, a timestamp in one of the contract's forms
  (epoch ms or ISO 8601 with an offset), a numeric amount on purchases and refunds; invalid ones are counted;
- keep one profile per customer in Quix's state store (RocksDB, with its changelog topic, keyed by the
  message key, the customer id): the last 64 event ids (dedup), counts per type, first/last seen,
  RFM (purchases, spend in the base currency, refunds), category interest decayed with a 14-day half-life,
  support messages and tickets;
- emit an alert to the alerts topic for an inbound support message whose text holds an angry word (a keyword
  list: crm-stream scores it with its anger model and then applies consent, cooldowns and budgets).

It reads the four input topics as one stream (``StreamingDataFrame.concat``: the topics have the same
partition count and keys, so a customer's events share one state store). Once ``--expected`` events have
passed it writes ``{"first_at", "last_at", "cpu_s", "events", "alerts", "invalid", "duplicates"}`` (wall
clock; the process's CPU seconds in between) to ``--result`` and stops.

    <quix-venv>/bin/python load/peer_quix_app.py --broker 127.0.0.1:9092 --topics a,b,c,d \\
        --alerts-topic alerts --expected 300000 --result out.json --state-dir /tmp/quix-state
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import datetime
from typing import Any

from quixstreams import Application, State

TYPES = frozenset(
    "page_view product_view search add_to_cart remove_from_cart purchase refund support_message "
    "ticket_opened ticket_closed survey consent identify".split()
)
RATES = {"USD": 1.0, "EUR": 1.08, "GBP": 1.27, "CNY": 0.138, "JPY": 0.0066, "CAD": 0.73}
HALF_LIFE_MS = 14 * 86_400_000
DEDUP_IDS = 64
ANGRY_WORDS = (
    "terrible", "unacceptable", "worst", "furious", "angry", "ridiculous", "scam", "disgusting", "never again",
    "awful", "useless", "refund now", "wütend", "inakzeptabel", "schrecklich", "inacceptable", "honteux",
    "inaceptable", "terrible", "垃圾", "太差", "生气",
)  # fmt: skip


def parse_ts(ts: Any) -> int | None:
    """Epoch milliseconds, or None when the value is no timestamp the contract allows."""
    if isinstance(ts, int) and not isinstance(ts, bool):
        return ts
    if isinstance(ts, str):
        try:
            parsed = datetime.fromisoformat(ts)
        except ValueError:
            return None
        return int(parsed.timestamp() * 1000) if parsed.tzinfo is not None else None
    return None


class Counters:
    def __init__(self, expected: int, result: str, app: Application) -> None:
        self.expected, self.result, self.app = expected, result, app
        self.events = self.alerts = self.invalid = self.duplicates = 0
        self.first_at: float | None = None
        self.first_cpu = 0.0

    def seen(self) -> None:
        if self.first_at is None:
            self.first_at, self.first_cpu = time.time(), time.process_time()
            open(self.result + ".started", "w").close()  # the benchmark starts watching the machine's CPU now
        self.events += 1
        if self.events == self.expected:
            with open(self.result, "w") as fh:
                json.dump(
                    {
                        "first_at": self.first_at,
                        "last_at": time.time(),
                        "cpu_s": time.process_time() - self.first_cpu,
                        "events": self.events,
                        "alerts": self.alerts,
                        "invalid": self.invalid,
                        "duplicates": self.duplicates,
                    },
                    fh,
                )
            self.app.stop()


def make_process(counters: Counters) -> Any:
    def process(event: Any, state: State) -> dict[str, Any] | None:
        counters.seen()
        if not isinstance(event, dict):
            counters.invalid += 1
            return None
        kind, event_id, customer = event.get("type"), event.get("event_id"), event.get("customer_id")
        ts = parse_ts(event.get("ts"))
        if kind not in TYPES or not isinstance(event_id, str) or not isinstance(customer, str) or ts is None:
            counters.invalid += 1
            return None
        profile = state.get("profile") or {"ids": [], "types": {}, "first": ts, "last": ts, "frequency": 0,
                                             "monetary": 0.0, "refunds": 0.0, "interests": {}, "interest_at": ts,
                                             "support_messages": 0, "tickets": 0}  # fmt: skip
        if event_id in profile["ids"]:
            counters.duplicates += 1
            return None
        ids = profile["ids"]
        ids.append(event_id)
        if len(ids) > DEDUP_IDS:
            del ids[0]
        profile["types"][kind] = profile["types"].get(kind, 0) + 1
        profile["first"], profile["last"] = min(profile["first"], ts), max(profile["last"], ts)
        alert = None
        if kind in ("purchase", "refund"):
            amount = event.get("amount")
            rate = RATES.get(event.get("currency", "USD"))
            if not isinstance(amount, (int, float)) or rate is None:
                counters.invalid += 1
                return None
            if kind == "purchase":
                profile["frequency"] += 1
                profile["monetary"] += amount * rate
                for item in event.get("items") or ():
                    _interest(profile, item.get("category"), ts, 3.0)
            else:
                profile["refunds"] += amount * rate
        elif kind in ("product_view", "add_to_cart"):
            _interest(profile, event.get("category"), ts, 2.0 if kind == "add_to_cart" else 1.0)
        elif kind == "support_message":
            profile["support_messages"] += 1
            text = str(event.get("text", "")).lower()
            if event.get("direction") == "inbound" and any(word in text for word in ANGRY_WORDS):
                counters.alerts += 1
                alert = {"alert_id": f"angry:{event_id}", "kind": "angry_customer", "customer_id": customer, "ts": ts}
        elif kind == "ticket_opened":
            profile["tickets"] += 1
        state.set("profile", profile)
        return alert

    return process


def _interest(profile: dict[str, Any], category: Any, ts: int, weight: float) -> None:
    if not isinstance(category, str):
        return
    decay = 0.5 ** (max(0, ts - profile["interest_at"]) / HALF_LIFE_MS)
    interests = profile["interests"]
    if decay < 1.0:
        for name in interests:
            interests[name] *= decay
        profile["interest_at"] = max(profile["interest_at"], ts)
    interests[category] = interests.get(category, 0.0) + weight


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--broker", required=True)
    p.add_argument("--topics", required=True, help="comma-separated input topics (same partition count, keyed by customer)")
    p.add_argument("--alerts-topic", required=True)
    p.add_argument("--expected", type=int, required=True)
    p.add_argument("--result", required=True)
    p.add_argument("--state-dir", required=True)
    p.add_argument("--group", default="bench-quix")
    args = p.parse_args()
    app = Application(
        broker_address=args.broker,
        consumer_group=args.group,
        auto_offset_reset="earliest",
        state_dir=args.state_dir,
        # Tansu completes a group join in about half the session timeout: 45 s by default.
        consumer_extra_config={"session.timeout.ms": 6000},
        loglevel="WARNING",
    )
    frames = [app.dataframe(app.topic(name, key_deserializer="str")) for name in args.topics.split(",")]
    sdf = frames[0]
    for other in frames[1:]:
        sdf = sdf.concat(other)
    counters = Counters(args.expected, args.result, app)
    sdf = sdf.apply(make_process(counters), stateful=True)
    sdf = sdf.filter(lambda alert: alert is not None)
    sdf.to_topic(app.topic(args.alerts_topic, key_serializer="str"), key=lambda alert: alert["customer_id"])
    app.run()


if __name__ == "__main__":
    main()
