"""Partition-local placement: the process that reads a customer's input partitions also holds their shards.

The input topics are co-partitioned by customer: producers key a customer's events by customer id, and
librdkafka's default partitioner puts a key in partition ``crc32(key) % partitions``, the hash the router
shards by (``crc32(id) % engine.shards``). With ``partitions`` dividing ``shards``, every customer of shard
``s`` is in partition ``s % partitions`` of each topic. Two Bytewax choices then decide whether a customer's
events cross processes, and both can be steered:

- which worker reads a partition: every worker lists the partitions it can read (``list_parts``, documented as
  "local partitions this worker has access to"); worker 0 picks one primary per partition among the workers
  that listed it (bytewax 0.21.1 src/inputs.rs:252-256, src/timely.rs:575 ``calc_primaries``: the least loaded
  candidate). Left to itself it deals the partitions, in name order, round the workers, so a partition's
  number does not tell its worker. So process ``i`` of ``P`` lists only partitions ``p`` with ``p % P == i``;
- which worker holds a stateful key: ``stateful_batch`` partitions by ``BuildHasherDefault<DefaultHasher>``
  over the workers (src/operators.rs:565-574): SipHash-1-3 with zero keys of the ``StateKey(String)``, which
  hashes as its bytes and a ``0xff`` byte (src/recovery.rs:242), ``as usize``, modulo the worker count, as an
  index into the sorted workers (src/timely.rs:454-463, 541-549). So shard ``s`` is named ``s0003``, or
  ``s0003.1`` and on, whichever name first hashes to a worker of process ``s % P``, the one that reads
  partition ``s % partitions`` when ``P`` divides the partitions (timely numbers process ``i``'s workers from
  ``i * per_process``).
  tests/unit/test_placement.py checks this against Bytewax itself: an upgrade that changes it fails there.

Only what must cross then crosses: an ``identify`` or a visitor's event goes to the identity shard of its
anonymous id, and on to the customer's profile shard. Placement never changes which shard a customer is in:
a wrong guess about Bytewax's hash, or a producer that partitions otherwise, costs crossings, not results.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from crm_stream.operators.events.router import shard_key
from crm_stream.operators.io.kafka import parse_partition_name

_M = (1 << 64) - 1


@dataclass(frozen=True)
class Placement:
    """Where a process's shards and input partitions go; ``None`` where Bytewax's own choice is kept."""

    shard_keys: tuple[str, ...] | None
    """The Bytewax key of each shard, by shard number (identity and profile steps alike)."""
    reads: Callable[[str], bool] | None
    """Whether this process lists an input partition (by name) for reading."""


NO_PLACEMENT = Placement(None, None)


def _rotl(x: int, b: int) -> int:
    return ((x << b) | (x >> (64 - b))) & _M


def _round(v0: int, v1: int, v2: int, v3: int) -> tuple[int, int, int, int]:
    v0 = (v0 + v1) & _M
    v1 = _rotl(v1, 13) ^ v0
    v0 = _rotl(v0, 32)
    v2 = (v2 + v3) & _M
    v3 = _rotl(v3, 16) ^ v2
    v0 = (v0 + v3) & _M
    v3 = _rotl(v3, 21) ^ v0
    v2 = (v2 + v1) & _M
    v1 = _rotl(v1, 17) ^ v2
    v2 = _rotl(v2, 32)
    return v0, v1, v2, v3


def siphash13(data: bytes) -> int:
    """SipHash-1-3 with zero keys: what Rust's ``DefaultHasher::new()`` computes (CPython hashes bytes with the
    same function; under ``PYTHONHASHSEED=0`` its keys are zero too, which the tests compare against).

    >>> siphash13(b"a")
    4644417185603328019
    """
    v0, v1 = 0x736F6D6570736575, 0x646F72616E646F6D
    v2, v3 = 0x6C7967656E657261, 0x7465646279746573
    n = len(data)
    end = n - n % 8
    for i in range(0, end, 8):
        m = struct.unpack_from("<Q", data, i)[0]
        v3 ^= m
        v0, v1, v2, v3 = _round(v0, v1, v2, v3)
        v0 ^= m
    last = ((n & 0xFF) << 56) | int.from_bytes(data[end:], "little")
    v3 ^= last
    v0, v1, v2, v3 = _round(v0, v1, v2, v3)
    v0 ^= last
    v2 ^= 0xFF
    for _ in range(3):
        v0, v1, v2, v3 = _round(v0, v1, v2, v3)
    return v0 ^ v1 ^ v2 ^ v3


def worker_of(key: str, workers: int) -> int:
    """The worker Bytewax 0.21 routes a stateful key to (a ``str`` hashes as its bytes and ``0xff``).

    >>> [worker_of(f"s{n:04d}", 2) for n in range(4)]
    [1, 1, 0, 1]
    """
    return siphash13(key.encode() + b"\xff") % workers


def key_on(shard: int, process: int, processes: int, workers_per_process: int = 1) -> str:
    """The first of ``s0003``, ``s0003.1``, ... that Bytewax places on a worker of ``process`` (worker ``w``
    belongs to process ``w // workers_per_process``, as timely numbers them).

    >>> key_on(2, 0, 2), key_on(0, 0, 2)
    ('s0002', 's0000.1')
    """
    workers = processes * workers_per_process
    base = shard_key(shard)
    name, n = base, 0
    while worker_of(name, workers) // workers_per_process != process:
        n += 1
        name = f"{base}.{n}"
    return name


def co_partitions(partitions: Sequence[str]) -> int | None:
    """The partitions per input topic, when every topic has the same ones (0..n-1); else None.

    >>> co_partitions(["a#0", "a#1", "b#1", "b#0"]), co_partitions(["a#0", "a#1", "b#0"]), co_partitions(["file"])
    (2, None, None)
    """
    by_topic: dict[str, set[int]] = {}
    for name in partitions:
        number = _number(name)
        if number is None:
            return None
        by_topic.setdefault(name.rpartition("#")[0], set()).add(number)
    counts = {len(numbers) for numbers in by_topic.values()}
    if len(counts) != 1 or any(numbers != set(range(len(numbers))) for numbers in by_topic.values()):
        return None
    return counts.pop()


def _number(name: str) -> int | None:
    try:
        return parse_partition_name(name)[1]
    except ValueError:
        return None


def plan(shards: int, process: int, processes: int, workers_per_process: int = 1) -> Placement:
    """Partition-local placement for process ``process`` of ``processes`` (none for one process).

    Process ``i`` reads partitions ``p % processes == i`` and holds shards ``s % processes == i``: with ``N``
    partitions per topic, a multiple of ``processes`` dividing ``shards``, shard ``s``'s customers are in
    partition ``s % N``, which process ``s % N % processes == s % processes`` reads. Nothing here depends on what
    the broker lists, so every process names the shards alike whatever it saw at its start (two names for one
    shard would split its state); ``locality`` says when the topics' layout will still make events cross.

    >>> p = plan(8, 1, 2)
    >>> [p.reads(f"t#{n}") for n in range(4)], [worker_of(k, 2) for k in p.shard_keys], p.reads("file")
    ([False, True, False, True], [0, 1, 0, 1, 0, 1, 0, 1], True)
    """
    if processes < 2:
        return NO_PLACEMENT  # nothing can cross; and the keys stay the ones replay has always used

    def reads(name: str) -> bool:
        number = _number(name)
        return number is None or number % processes == process  # a name of another form: any process may read it

    return Placement(tuple(key_on(s, s % processes, processes, workers_per_process) for s in range(shards)), reads)


def locality(partitions: Sequence[str], shards: int, processes: int) -> str | None:
    """Why customer events will still cross processes under ``plan``, from the input partitions; None if they won't.

    >>> locality(["t#0", "t#1", "u#0", "u#1"], 16, 2) is None, locality(["t#0", "t#1", "t#2"], 16, 2)
    (True, 'input partitions: 3 per topic, where a multiple of the process count (2) dividing engine.shards (16) keeps each customer in one process')
    """
    per_topic = co_partitions(partitions)
    if per_topic is not None and per_topic % processes == 0 and shards % per_topic == 0:
        return None
    count = "not the same on every topic" if per_topic is None else f"{per_topic} per topic"
    return (
        f"input partitions: {count}, where a multiple of the process count ({processes}) dividing "
        f"engine.shards ({shards}) keeps each customer in one process"
    )
