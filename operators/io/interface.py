"""The small interface every source, output and store implements.

Framework-free on purpose: the Bytewax adapters in ``flows/`` wrap these, and
tests drive them directly. Three roles:

- a ``Reader`` lists input partitions and opens a ``PartitionReader`` per
  partition, resumable from a picklable position (Kafka: next offset; file:
  next line; simulator: next event index);
- an ``Outputs`` receives encoded records for logical destinations
  (``service``, ``marketing``, ``deadletter``) and makes them durable on
  ``flush()``;
- a ``Store`` is the key-value store of record (Redis, or in-process).

Records travel as ``Raw`` tuples so a batch of a thousand costs one list.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple, Protocol

# Logical output destinations; each backend maps them to its own names
# (Kafka topics from settings, file names, terminal colours).
SERVICE = "service"
MARKETING = "marketing"
DEADLETTER = "deadletter"
DESTINATIONS = (SERVICE, MARKETING, DEADLETTER)
AUDIT = "audit"  # an effect that is an audit record (operators/privacy/audit.py), written by the sink, never an output
PUT = "put"  # an effect on the store of record: write ``value`` at ``key``
DEL = "del"  # an effect on the store of record: delete ``key``
CHANGES = "changes"  # a display-only effect: a line about a profile for the terminal (the demo), never stored


class Effect(NamedTuple):
    """One thing a step asks the sink to do; the sink applies a batch of them in the order that keeps restarts
    honest (operators/io/effects.py: outputs and audit first, then the store in one transaction).

    ``target`` is an output destination (``SERVICE``, ``MARKETING``, ``DEADLETTER``), ``AUDIT``, ``CHANGES``,
    or a store operation (``PUT``, ``DEL``). A ``None`` value on an output is a tombstone.

    >>> Effect(PUT, "crm:profile:c1", b"{}").target
    'put'
    """

    target: str
    key: str | None
    value: Any


class Raw(NamedTuple):
    """One input record. ``partition`` is -1 for files, where ``offset`` is the 1-based line."""

    topic: str | None
    partition: int
    offset: int
    value: bytes


class PartitionReader(Protocol):
    def read_batch(self) -> list[Raw]:
        """The next records, possibly none (then the caller backs off briefly)."""

    def position(self) -> Any:
        """A picklable value that ``Reader.open`` accepts to resume after the last record returned."""

    def done(self) -> bool:
        """True when a bounded input is exhausted (never for Kafka)."""

    def close(self) -> None: ...


class Reader(Protocol):
    def partitions(self) -> list[str]: ...

    def open(self, partition: str, position: Any | None) -> PartitionReader: ...


class Outputs(Protocol):
    def send(self, destination: str, key: str | None, value: bytes | None) -> None:
        """``value`` None is a tombstone: the customer ``key`` was erased (Kafka: a null value, so compaction drops them)."""

    def flush(self) -> None:
        """Block until everything sent is durable (Kafka: acknowledged), retrying transient failures."""

    def close(self) -> None: ...


class Store(Protocol):
    """Values are whatever ``encode`` makes of a JSON-like object: bytes for Redis, the object itself in-process."""

    def encode(self, value: Any) -> Any: ...

    def decode(self, stored: Any) -> Any: ...

    def get_many(self, keys: Sequence[str]) -> list[Any | None]: ...

    def write(self, puts: dict[str, Any], deletes: Iterable[str] = ()) -> None:
        """Apply all puts and deletes atomically, in one round trip."""

    def scan(self, prefix: str) -> Iterable[tuple[str, Any]]: ...

    def close(self) -> None: ...
