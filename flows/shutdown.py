"""Graceful shutdown on SIGTERM (what container platforms send before they kill) and on Ctrl-C (SIGINT).

The first SIGTERM or Ctrl-C sets an event that ends every reader's input as if
it were exhausted (flows/bytewax_io.py ``ReaderSource``). Bytewax then drains
the dataflow: the batches in flight are processed, their outputs and profiles
written (outputs first, as always), every profile shard's ``on_eof`` snapshots
the online models, the final source positions go to recovery, and ``run``
returns; the runtime then commits the positions to the consumer group, the
command prints its summary and the process exits 0. A restart resumes at those
positions: nothing is read twice.

Why Ctrl-C needs a handler of its own: Python's default turns SIGINT into a
``KeyboardInterrupt`` raised inside whatever Python code Bytewax is calling
(a source's ``next_batch``, an operator); Bytewax 0.21 cannot unwind through
that, so the worker panics (``src/inputs.rs``, ``src/operators.rs``) and the
user gets a Rust panic, chained tracebacks and exit 1. Handled here, the
signal only sets the event, between two bytecodes of the main thread.

Draining waits for the store and the broker: during an outage it lasts until
they are back (nothing is dropped), so a platform's grace period may run out
first; the SIGKILL that follows is a crash, which recovery already covers. A
second signal stops at once, without draining (a restart recovers as after a
crash): a second SIGTERM by the default action (killed by the signal), a
second Ctrl-C by exit status 130 (128 + SIGINT, what shells report), with one
line and no traceback.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import Any

log = logging.getLogger(__name__)

EXIT_INTERRUPTED = 130
"""128 + SIGINT: the status a shell gives a program stopped by Ctrl-C."""

SIGINT_FIRST = "Ctrl-C: finishing the batches in flight, then the summary (Ctrl-C again stops at once, without them)"
SIGINT_SECOND = "crm-stream: second Ctrl-C: stopped at once, without draining (a restart recovers as after a crash)"


class GracefulStop:
    """``with GracefulStop() as stop:`` routes SIGTERM and SIGINT to a drain (main thread only), then restores the handlers.

    ``notify`` says what a first Ctrl-C does (default: a warning in the log); ``on_abort`` runs just before
    a second Ctrl-C exits (e.g. to give the terminal its cursor back). SIGINT is left alone where it is
    ignored (a background job started with ``&`` or ``nohup``): whoever started the process wanted that.

    >>> stop = GracefulStop()
    >>> stop.requested, stop.signal_name
    (False, None)
    """

    def __init__(self, notify: Callable[[str], None] | None = None, on_abort: Callable[[], None] | None = None) -> None:
        self.event = threading.Event()
        self.signal_name: str | None = None
        """``"SIGTERM"`` or ``"SIGINT"``: which signal asked for the stop (None until one did)."""
        self.notify = notify or log.warning
        self.on_abort = on_abort
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.event.is_set()

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():  # signal handlers can only be set there
            self._previous[signal.SIGTERM] = signal.signal(signal.SIGTERM, self._on_signal)
            if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
                self._previous[signal.SIGINT] = signal.signal(signal.SIGINT, self._on_signal)
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        for signum, previous in self._previous.items():
            if signum == signal.SIGINT and self.signal_name == "SIGINT":
                continue  # the process is on its way out (the summary): a second Ctrl-C must still stop it at once
            signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
        self._previous.clear()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.event.is_set():
            self._second(signum)
            return
        self.signal_name = signal.Signals(signum).name
        if signum == signal.SIGINT:
            self.notify(SIGINT_FIRST)
        else:
            log.warning(
                "SIGTERM: finishing the batches in flight, writing state, snapshotting models, committing offsets "
                "(send SIGTERM again to stop at once)"
            )
        self.event.set()

    def _second(self, signum: int) -> None:
        if signum == signal.SIGINT:
            if self.on_abort is not None:
                self.on_abort()
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except (OSError, ValueError, RuntimeError):  # a closed pipe, or the main thread was mid-write
                    pass
            os.write(2, (SIGINT_SECOND + "\n").encode())  # a raw write: safe even if the main thread was mid-print
            os._exit(EXIT_INTERRUPTED)  # no unwinding through Bytewax (that is the panic this module avoids)
        log.warning("second SIGTERM: stopping now, without draining (a restart recovers like after a crash)")
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
