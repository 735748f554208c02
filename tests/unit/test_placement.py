"""Partition-local placement (flows/placement.py): our reading of Bytewax's key routing, checked on Bytewax itself."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import zlib

import bytewax.operators as op
import pytest
from bytewax.dataflow import Dataflow
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from bytewax.testing import TestingSource, cluster_main

from crm_stream.flows.bytewax_io import ReaderSource
from crm_stream.flows.placement import NO_PLACEMENT, co_partitions, key_on, locality, plan, siphash13, worker_of
from crm_stream.operators.events.router import shard_number

TOPICS = ("crm.clickstream", "crm.control", "crm.purchases", "crm.support")


def test_siphash13_is_the_one_cpython_hashes_bytes_with_under_a_zero_seed():
    """CPython 3.11+ hashes bytes with SipHash-1-3; PYTHONHASHSEED=0 zeroes its keys, as Rust's DefaultHasher has them."""
    samples = [b"a", b"s0000\xff", b"s0012.3\xff", b"x" * 41]
    code = f"print([hash(b) & ((1 << 64) - 1) for b in {samples!r}])"
    out = subprocess.run(
        [sys.executable, "-c", code], env={**os.environ, "PYTHONHASHSEED": "0"}, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == str([siphash13(b) for b in samples])


class _WorkerOfThread(DynamicSink):
    """Records each worker thread's index (a sink partition is built on its worker's thread)."""

    def __init__(self, seen: dict[int, int]) -> None:
        self.seen = seen

    def build(self, step_id: str, worker_index: int, worker_count: int) -> StatelessSinkPartition:
        self.seen[threading.get_ident()] = worker_index

        class Discard(StatelessSinkPartition):
            def write_batch(self, items: list) -> None:
                pass

        return Discard()


@pytest.mark.parametrize("workers", [2, 3])
def test_bytewax_routes_each_stateful_key_to_the_worker_placement_computes(workers):
    keys = [f"s{n:04d}" for n in range(16)] + [key_on(n, p, workers) for n in range(4) for p in range(workers)]
    threads: dict[int, int] = {}
    held: dict[str, int] = {}

    def record(key_value):
        held[key_value[0]] = threading.get_ident()
        return key_value

    flow = Dataflow("placement")
    keyed = op.key_on("key", op.input("in", flow, TestingSource(keys)), lambda k: k)
    counted = op.stateful_map("hold", keyed, lambda state, value: (state, value))
    op.output("out", op.map("where", counted, record), _WorkerOfThread(threads))
    cluster_main(flow, [], 0, worker_count_per_proc=workers)
    assert {k: threads[t] for k, t in held.items()} == {k: worker_of(k, workers) for k in keys}


@pytest.mark.parametrize(("processes", "per_process", "partitions"), [(2, 1, 4), (4, 1, 8), (4, 2, 16), (2, 4, 2), (8, 1, 16)])
def test_each_shard_is_held_by_the_process_that_reads_its_customers(processes, per_process, partitions):
    names = [f"{t}#{p}" for t in TOPICS for p in range(partitions)]
    shards = 16
    assert locality(names, shards, processes) is None
    plans = [plan(shards, i, processes, per_process) for i in range(processes)]
    assert len({p.shard_keys for p in plans}) == 1  # every process names the shards alike
    keys = plans[0].shard_keys
    assert keys is not None and len(set(keys)) == shards and [shard_number(k) for k in keys] == list(range(shards))
    for name in names:  # every partition is read by exactly one process
        assert sum(p.reads(name) for p in plans if p.reads) == 1
    for n in range(2_000):  # a customer keyed by id: librdkafka puts it in partition crc32 % partitions
        customer = f"c{n:07d}".encode()
        shard = zlib.crc32(customer) % shards
        reader = next(i for i, p in enumerate(plans) if p.reads and p.reads(f"crm.purchases#{zlib.crc32(customer) % partitions}"))
        assert worker_of(keys[shard], processes * per_process) // per_process == reader


def test_one_process_keeps_the_replay_keys_and_a_layout_that_cannot_stay_local_is_named():
    four = [f"{t}#{p}" for t in TOPICS for p in range(4)]
    assert plan(16, 0, 1) == NO_PLACEMENT  # replay and one process keep s0000..s0015
    assert "not the same on every topic" in (locality(four + ["crm.support#4"], 16, 2) or "")
    assert "3 per topic" in (locality([f"t#{p}" for p in range(3)], 16, 3) or "")  # 3 does not divide 16
    assert "4 per topic" in (locality(four, 16, 8) or "")  # more processes than partitions per topic
    assert co_partitions(["a#0", "a#2"]) is None


def test_the_source_lists_only_the_partitions_this_process_reads():
    class Listing:
        def partitions(self) -> list[str]:
            return ["t#0", "t#1", "t#2", "t#3"]

    placement = plan(16, 1, 2)
    assert ReaderSource(Listing(), reads=placement.reads).list_parts() == ["t#1", "t#3"]  # type: ignore[arg-type]
    assert ReaderSource(Listing()).list_parts() == ["t#0", "t#1", "t#2", "t#3"]  # type: ignore[arg-type]
