"""Decode a batch of raw records and group the good ones by identity shard.

Grouping per batch means the dataflow moves a handful of lists per input
batch instead of one item per event: Bytewax's per-item cost stays out of the
hot path (../shared/perf-facts.md: 50-70 k/s per-item keyed state at a million
keys, 1.3 M/s for partition-local dicts).
"""

from __future__ import annotations

from typing import Any

from operators import jsonutil
from operators.identity import ERASE_LINKS_ONLY
from operators.io import DEADLETTER, Raw
from operators.keys import shard_of
from operators.metrics import EngineMetrics
from operators.profile import SOURCE, SOURCE_OFFSET
from operators.redact import redact
from operators.schema import DeadLetter, Decoder, Origin

DEAD = "dead"


def shard_key(shard: int) -> str:
    return f"s{shard:04d}"


def identity_route(event: dict[str, Any], shards: int) -> int:
    """Visitors (and identify) by anonymous id; everyone else by customer id, which is also their profile shard."""
    if event["type"] == "identify" or event.get("customer_id") is None:
        return shard_of(event["anonymous_id"], shards)
    return shard_of(event["customer_id"], shards)


class Router:
    def __init__(self, decoder: Decoder, shards: int, metrics: EngineMetrics | None = None, *,
                 redact_deadletters: bool = True) -> None:
        self.decoder = decoder
        self.redact_deadletters = redact_deadletters
        """E-mails, phones and card numbers out of dead letters' ``raw`` and ``reason`` (privacy.redact_deadletters)."""
        self.shards = shards
        self.metrics = metrics
        self.max_ts = 0
        """Newest event time decoded so far (replay reports profiles as of it)."""
        self.decoded = 0
        self.dead = 0

    def route(self, batch: list[Raw]) -> list[tuple[str, Any]]:
        """(identity shard key, (shard, events, clocks)) for EVERY shard, plus (DEAD, effects) if any.

        ``clocks`` ({input partition: newest event time}) goes to every shard,
        events or not, so that each shard's event-time clock moves with the
        whole stream: timers must fire for customers who send nothing more.
        """
        groups: dict[int, list[dict[str, Any]]] = {}
        dead: list[tuple[str, str | None, bytes]] = []
        clocks: dict[str, int] = {}
        reasons: list[str] = []
        erasures: list[tuple[int, dict[str, Any]]] = []
        decode = self.decoder.decode
        shards = self.shards
        for topic, partition, offset, value in batch:
            origin = Origin(topic, line=offset) if partition < 0 else Origin(topic, partition, offset)
            event = decode(value, origin)
            if type(event) is DeadLetter:
                record = event.to_record()
                if self.redact_deadletters:
                    record["raw"], record["reason"] = redact(record["raw"]), redact(record["reason"])
                dead.append((DEADLETTER, None, jsonutil.dumps(record)))
                reasons.append(event.reason)
                continue
            source = f"{topic or 'file'}#{partition}"
            event[SOURCE] = source  # type: ignore[index]
            event[SOURCE_OFFSET] = offset  # type: ignore[index]
            ts = event["ts"]  # type: ignore[index]
            if ts > clocks.get(source, -1):
                clocks[source] = ts
            own = identity_route(event, shards)  # type: ignore[arg-type]
            groups.setdefault(own, []).append(event)  # type: ignore[arg-type]
            if event["type"] == "erasure_request" and event.get("customer_id") is not None:  # type: ignore[index,union-attr]
                erasures.append((own, event))  # type: ignore[arg-type]
        if clocks:
            self.max_ts = max(self.max_ts, max(clocks.values()))
        self.dead += len(dead)
        self.decoded += len(batch) - len(dead)
        if self.metrics is not None:
            self.metrics.count_batch((e for evs in groups.values() for e in evs), reasons)
        for own, event in erasures:  # visitor links to the customer live on the visitors' shards: every one hears it
            for other in range(shards):
                if other != own:
                    groups.setdefault(other, []).append({**event, ERASE_LINKS_ONLY: True})
        out: list[tuple[str, Any]] = [(shard_key(s), (s, groups.get(s, []), clocks)) for s in range(shards)] if clocks else []
        if dead:
            out.append((DEAD, dead))
        return out
