"""Graceful shutdown on SIGTERM (what container platforms send before they kill).

The first SIGTERM sets an event that ends every reader's input as if it were
exhausted (flows/bytewax_io.py ``ReaderSource``). Bytewax then drains the
dataflow: the batches in flight are processed, their outputs and profiles
written (outputs first, as always), every profile shard's ``on_eof`` snapshots
the online models, the final source positions go to recovery, and ``run``
returns; the runtime then commits the positions to the consumer group and the
process exits 0. A restart resumes at those positions: nothing is read twice.

Draining waits for the store and the broker: during an outage it lasts until
they are back (nothing is dropped), so a platform's grace period may run out
first; the SIGKILL that follows is a crash, which recovery already covers. A
second SIGTERM stops at once, the same way.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from types import FrameType, TracebackType
from typing import Any

log = logging.getLogger(__name__)


class GracefulStop:
    """``with GracefulStop() as stop:`` installs the SIGTERM handler (main thread only) and restores the previous one."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self._previous: Any = None
        self._installed = False

    @property
    def requested(self) -> bool:
        return self.event.is_set()

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():  # signal handlers can only be set there
            self._previous = signal.signal(signal.SIGTERM, self._on_sigterm)
            self._installed = True
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._installed:
            signal.signal(signal.SIGTERM, self._previous if self._previous is not None else signal.SIG_DFL)
            self._installed = False

    def _on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        if self.event.is_set():
            log.warning("second SIGTERM: stopping now, without draining (a restart recovers like after a crash)")
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
            return
        log.warning(
            "SIGTERM: finishing the batches in flight, writing state, snapshotting models, committing offsets "
            "(send SIGTERM again to stop at once)"
        )
        self.event.set()
