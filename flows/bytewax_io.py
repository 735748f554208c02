"""Bytewax adapters for the framework-free readers, outputs and stores in operators/."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from crm_stream.operators.io.effects import AuditWriter, EffectsWriter
from crm_stream.operators.io.interface import Outputs, PartitionReader, Raw, Reader, Store
from crm_stream.operators.io.metrics import EngineMetrics
from crm_stream.operators.stages.gc_pacing import GC_PACER

IDLE_BACKOFF = timedelta(milliseconds=20)


class ReaderSource(FixedPartitionedSource[list[Raw], Any]):
    """Each poll of a partition becomes ONE dataflow item: the whole batch.

    Once ``stop`` is set (SIGTERM, flows/runtime.py), every partition ends as if its input were exhausted:
    Bytewax then drains the dataflow (the last batches written, ``on_eof`` snapshots the models), records the
    final positions in recovery, and returns, so a restart resumes exactly there.
    """

    def __init__(self, reader: Reader, stop: threading.Event | None = None, reads: Callable[[str], bool] | None = None) -> None:
        self.reader = reader
        self.stop = stop
        self.reads = reads
        """Which partitions this process offers to read (flows/placement.py); None: all of them."""

    def list_parts(self) -> list[str]:
        # Bytewax picks each partition's reader among the workers that list it: listing only ours pins them here.
        parts = self.reader.partitions()
        return parts if self.reads is None else [p for p in parts if self.reads(p)]

    def build_part(self, step_id: str, for_part: str, resume_state: Any | None) -> _ReaderPartition:
        return _ReaderPartition(self.reader.open(for_part, resume_state), self.stop)


class _ReaderPartition(StatefulSourcePartition[list[Raw], Any]):
    def __init__(self, part: PartitionReader, stop: threading.Event | None = None) -> None:
        self.part = part
        self.stop = stop
        self._awake: datetime | None = None

    def next_batch(self) -> list[list[Raw]]:
        if self.stop is not None and self.stop.is_set():
            raise StopIteration()
        batch = self.part.read_batch()
        if batch:
            self._awake = None
            return [batch]
        if self.part.done():
            raise StopIteration()
        self._awake = datetime.now(UTC) + IDLE_BACKOFF
        return []

    def next_awake(self) -> datetime | None:
        return self._awake

    def snapshot(self) -> Any:
        return self.part.position()

    def close(self) -> None:
        self.part.close()


class EffectsSink(DynamicSink[list]):
    """One writer per worker; each gets its own outputs (and shares the store provider)."""

    def __init__(
        self,
        outputs_factory: Callable[[int], Outputs],
        store_provider: Callable[[], Store],
        metrics: EngineMetrics | None = None,
        audit: AuditWriter | None = None,
    ) -> None:
        self.outputs_factory = outputs_factory
        self.store_provider = store_provider
        self.metrics = metrics
        self.audit = audit

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _EffectsPartition:
        return _EffectsPartition(
            EffectsWriter(self.outputs_factory(worker_index), self.store_provider(), self.metrics, self.audit)
        )


class _EffectsPartition(StatelessSinkPartition[list]):
    def __init__(self, writer: EffectsWriter) -> None:
        self.writer = writer

    def write_batch(self, items: list[list]) -> None:
        self.writer.write(effect for effects in items for effect in effects)
        GC_PACER.tick()

    def close(self) -> None:
        self.writer.close()
