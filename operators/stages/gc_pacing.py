"""The engine's garbage-collection policy: one place, used by the live engine, replay and evaluation."""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager


class GcPacer:
    """Cyclic garbage collection on a wall-clock schedule instead of by allocation counts.

    Profiles are millions of small acyclic dicts. Allocation-driven collection
    walks them again and again (measured: ~20% of replay time even with raised
    thresholds). Instead: every ``every_s``, collect what was allocated since the
    last time, then ``gc.freeze()`` the survivors so no later pass walks them.
    Cycles are still reclaimed among new objects, which is where they are made.
    A short interval keeps each pass small: at 30 s a pass walked ~10 M objects
    and stalled the dataflow for seconds (load/bench_spine latency phase). Shorter
    is not cheaper in the live engine: a pass there costs ~5 ms however little is
    new (measured at 0.1 s: ~10 ms a pass, ~9% of the engine's time; at 1 s ~5%).
    """

    def __init__(self, every_s: float = 1.0) -> None:
        self.every_s = every_s
        self.last = time.monotonic()
        self._lock = threading.Lock()

    def tick(self) -> None:
        now = time.monotonic()
        if now - self.last < self.every_s or gc.isenabled():
            return
        with self._lock:
            if now - self.last < self.every_s:
                return
            self.last = now
            gc.collect()
            gc.freeze()


GC_PACER = GcPacer()


def engine_gc() -> None:
    """Take the cyclic GC off the hot path for good (a long-running engine); ``GC_PACER.tick()`` collects instead."""
    gc.disable()


@contextmanager
def paced_gc(every_s: float | None = None) -> Iterator[None]:
    """The same policy for a bounded run in a process that goes on (replay, evaluate, tests): restored afterwards.

    ``every_s``: the pacer's interval for the run (default: as it is). A run nobody waits on event by event
    (replay) may collect less often: each pass walks what was allocated since the last one and is still alive,
    and the longer the interval, the more of it has died in between (reclaimed by reference counting, unwalked).
    """
    was_enabled = gc.isenabled()
    was_every = GC_PACER.every_s
    if every_s is not None:
        GC_PACER.every_s = every_s
    gc.disable()
    try:
        yield
    finally:
        GC_PACER.every_s = was_every
        if was_enabled:
            gc.enable()
