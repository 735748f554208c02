"""Decode a batch of raw records and group the good ones by identity shard.

Grouping per batch means the dataflow moves a handful of lists per input
batch instead of one item per event: Bytewax's per-item cost stays out of the
hot path (docs/stack-costs.md: 50-70 k/s per-item keyed state at a million
keys, 1.3 M/s for partition-local dicts).

Per record, ``route`` tries ``Decoder.decode_fast`` first; only a record it
declines pays for an ``Origin`` and the full validation, which words the dead
letter. The ``_src`` label is built once per input partition.
"""

from __future__ import annotations

import logging
import os
import zlib
from collections.abc import Sequence
from typing import Any, NamedTuple, cast

from crm_stream.operators.events import deadletters
from crm_stream.operators.events.schema import DeadLetter, Decoder, Origin
from crm_stream.operators.io.interface import DEADLETTER, Raw
from crm_stream.operators.io.keys import shard_of
from crm_stream.operators.io.metrics import EngineMetrics
from crm_stream.operators.privacy.redact import redact
from crm_stream.operators.profile.state import SOURCE, SOURCE_OFFSET
from crm_stream.operators.stages.identity import ERASE_LINKS_ONLY

DEAD = "dead"
log = logging.getLogger(__name__)


class Routed(NamedTuple):
    """One identity shard's part of a decoded batch."""

    shard: int
    events: list[dict[str, Any]]
    clocks: dict[str, int]
    """Input partition -> newest event time in the batch; sent to every shard, events or not, so each shard's
    event-time clock moves with the whole stream (timers must fire for customers who send nothing more)."""
    origin: int = 0
    """``process_tag()`` of the process that read the batch: a step in another process counts it as crossing."""


_TAG: tuple[int, int] = (-1, 0)


def process_tag() -> int:
    """This process's random tag, drawn once per process id (a fork draws again): two engine processes, on one
    machine or several, tell their items apart by it, where process ids alone may repeat across machines. From
    ``os.urandom``, not ``random``: the models' seeded draws must not shift."""
    global _TAG
    pid = os.getpid()
    if _TAG[0] != pid:
        _TAG = (pid, int.from_bytes(os.urandom(8), "little") >> 2)
    return _TAG[1]


def _origin(topic: str | None, partition: int, offset: int) -> Origin:
    return Origin(topic, line=offset) if partition < 0 else Origin(topic, partition, offset)


def shard_key(shard: int) -> str:
    return f"s{shard:04d}"


def shard_number(key: str) -> int:
    """A shard's Bytewax key back to its number: ``s0003``, or ``s0003.1`` as flows/placement.py may name it, -> 3.

    >>> shard_number("s0003"), shard_number("s0012.4")
    (3, 12)
    """
    return int(key[1:].partition(".")[0])


def identity_route(event: dict[str, Any], shards: int) -> int:
    """Visitors (and identify) by anonymous id; everyone else by customer id, which is also their profile shard."""
    if event["type"] == "identify" or event.get("customer_id") is None:
        return shard_of(event["anonymous_id"], shards)
    return shard_of(event["customer_id"], shards)


class Router:
    def __init__(
        self,
        decoder: Decoder,
        shards: int,
        metrics: EngineMetrics | None = None,
        *,
        redact_deadletters: bool = True,
        shard_keys: Sequence[str] | None = None,
    ) -> None:
        """``shard_keys``: each shard's Bytewax key, by number (flows/placement.py); default ``shard_key(n)``."""
        self.decoder = decoder
        self.keys = tuple(shard_keys) if shard_keys is not None else tuple(shard_key(s) for s in range(shards))
        self.redact_deadletters = redact_deadletters
        """E-mails, phones and card numbers out of dead letters' ``raw`` and ``reason`` (privacy.redact_deadletters)."""
        self.shards = shards
        self.metrics = metrics
        self.max_ts = 0
        """Newest event time decoded so far (replay reports profiles as of it)."""
        self.decoded = 0
        self.dead = 0
        self._sources: dict[tuple[str | None, int], str] = {}
        """(topic, partition) -> the ``_src`` label of its events, made once rather than per event."""

    def _source(self, topic: str | None, partition: int) -> str:
        source = self._sources[topic, partition] = f"{topic or 'file'}#{partition}"
        return source

    def _dead_letter(self, letter: DeadLetter) -> bytes:
        record = letter.to_record()
        if self.redact_deadletters:
            record["raw"], record["reason"] = redact(record["raw"]), redact(record["reason"])
        return deadletters.bounded(record, self.decoder.max_bytes)  # a dead letter must fit the dead-letter topic too

    @staticmethod
    def _internal_error(topic: str | None, partition: int, offset: int, value: bytes, exc: Exception) -> DeadLetter:
        log.exception("could not decode the record at %s[%s]@%s", topic, partition, offset)
        origin = _origin(topic, partition, offset)
        reason = f"internal error decoding the record: {type(exc).__name__}: {str(exc)[:500]}; please report it with this record"
        return DeadLetter(f"{reason} ({origin})", origin, value)

    def route(self, batch: list[Raw]) -> list[tuple[str, Any]]:
        """(identity shard key, ``Routed``) for EVERY shard, plus (DEAD, dead-letter effects) if any."""
        groups: dict[int, list[dict[str, Any]]] = {}
        dead: list[tuple[str, str | None, bytes]] = []
        clocks: dict[str, int] = {}
        reasons: list[str] = []
        erasures: list[tuple[int, dict[str, Any]]] = []
        decode_fast, decode_full = self.decoder.decode_fast, self.decoder.decode_full
        sources = self._sources
        shards = self.shards
        crc32 = zlib.crc32  # identity_route inlined: the same shard_of(id) = crc32(id) % shards
        counts: dict[tuple[str, str], int] | None = {} if self.metrics is not None else None
        for topic, partition, offset, value in batch:
            try:
                event = decode_fast(value)
                full = None if event is not None else decode_full(value, _origin(topic, partition, offset))
            except Exception as exc:  # a bug in decoding must cost one record, never the engine
                event, full = None, self._internal_error(topic, partition, offset, value, exc)
            if event is None:
                if type(full) is DeadLetter:
                    dead.append((DEADLETTER, None, self._dead_letter(full)))
                    reasons.append(full.reason)
                    continue
                event = cast(dict[str, Any], full)
            source = sources.get((topic, partition)) or self._source(topic, partition)
            event[SOURCE] = source
            event[SOURCE_OFFSET] = offset
            ts = event["ts"]
            if ts > clocks.get(source, -1):
                clocks[source] = ts
            customer = event.get("customer_id")
            kind = event["type"]
            if counts is not None:
                counts[source, kind] = counts.get((source, kind), 0) + 1
            own = crc32((event["anonymous_id"] if customer is None or kind == "identify" else customer).encode()) % shards
            groups.setdefault(own, []).append(event)
            if kind == "erasure_request" and customer is not None:
                erasures.append((own, event))
        if clocks:
            self.max_ts = max(self.max_ts, max(clocks.values()))
        self.dead += len(dead)
        self.decoded += len(batch) - len(dead)
        if self.metrics is not None:
            self.metrics.count_batch(counts or {}, reasons)
        for own, event in erasures:  # visitor links to the customer live on the visitors' shards: every one hears it
            for other in range(shards):
                if other != own:
                    groups.setdefault(other, []).append({**event, ERASE_LINKS_ONLY: True})
        here = process_tag()
        out: list[tuple[str, Any]] = (
            [(self.keys[s], Routed(s, groups.get(s, []), clocks, here)) for s in range(shards)] if clocks else []
        )
        if dead:
            out.append((DEAD, dead))
        return out
