"""Applying a batch of effects in the one order that keeps restarts honest.

Effects are ``(target, key, value)`` tuples: ``put``/``del`` for the store,
``service``/``marketing``/``deadletter`` (and display-only ``changes``) for
outputs. Outputs are made durable first, then state is written in one atomic
store write. So whatever state the store holds, the alerts it implies have
been delivered; a crash between the two only means the state is older, its
events are replayed, and their alerts re-sent with the same ids.
"""

from __future__ import annotations

import time
from typing import Iterable

from operators.io import Outputs, Store
from operators.metrics import EngineMetrics

Effect = tuple[str, str | None, bytes | None]


class EffectsWriter:
    def __init__(self, outputs: Outputs, store: Store, metrics: EngineMetrics | None = None) -> None:
        self.outputs = outputs
        self.store = store
        self.metrics = metrics

    def write(self, effects: Iterable[Effect]) -> None:
        puts: dict[str, bytes] = {}
        deletes: dict[str, None] = {}
        sent: dict[str, int] = {}
        for target, key, value in effects:
            if target == "put":
                puts[key] = value  # type: ignore[index,assignment]
                deletes.pop(key, None)  # type: ignore[arg-type]
            elif target == "del":
                deletes[key] = None  # type: ignore[index]
                puts.pop(key, None)  # type: ignore[arg-type]
            else:
                self.outputs.send(target, key, value)  # type: ignore[arg-type]
                sent[target] = sent.get(target, 0) + 1
        if sent:
            self.outputs.flush()
            if self.metrics is not None:
                for destination, n in sent.items():
                    self.metrics.outputs.labels(destination).inc(n)
        if puts or deletes:
            started = time.perf_counter()
            self.store.write(puts, deletes)
            if self.metrics is not None:
                self.metrics.store_write_seconds.observe(time.perf_counter() - started)
                self.metrics.store_write_keys.observe(len(puts) + len(deletes))

    def close(self) -> None:
        self.outputs.flush()
        self.outputs.close()
