"""The demo in a terminal: what is simulated, a live status line, lines fitted to the width, a closing summary.

``crm-stream run`` on the embedded default (simulator -> dataflow -> in-process
store -> terminal) draws through ``Screen``:

- in a terminal, Rich keeps one status line (events, events/s, alerts by kind,
  simulated date, elapsed / expected) at the bottom and prints each alert,
  trigger, reject and profile change above it, word-wrapped to the terminal's
  real width with the text indented under its label (never cut mid-word);
- anywhere else (a pipe, a file, CI) the same lines are plain text, never cut
  and never redrawn, with a plain progress line every ``PLAIN_PROGRESS_S``.

``--quiet`` keeps the status line (or the progress lines) and the summary
only. The text itself comes from small pure functions (``intro_lines``,
``status_text``, ``summary_lines``) so it is tested without a terminal.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import IO, Any

from crm_stream.config.settings import Settings

PLAIN_PROGRESS_S = 10.0
"""Seconds between two progress lines when stdout is not a terminal (a CI log stays short)."""
MAX_EVENT_LINES = 4
"""An alert wraps onto at most this many lines; the rest is ellipsized (the full alert is in the outputs)."""
ESTIMATE_SAMPLE = 100
"""Customers simulated up front to estimate the demo's event count (~0.3 s; within ~5% at 300 customers)."""
LABEL_WIDTH = 7


@dataclass(frozen=True)
class Progress:
    """What the status line shows, read from the running engine (plain numbers: tested without one)."""

    records: int
    """Records read so far: events and rejects."""
    rejected: int
    elapsed_s: float
    sim_ms: int = 0
    """Event time reached (the newest event's timestamp, ms since the epoch; 0 before the first)."""
    kinds: dict[str, int] = field(default_factory=dict)
    expected_records: int | None = None
    expected_s: float | None = None
    stopping: bool = False


# -- text ---------------------------------------------------------------------------------------------


def estimate_records(settings: Settings, sample: int = ESTIMATE_SAMPLE) -> int:
    """Records the configured simulator will produce: counted exactly up to ``sample`` customers, scaled beyond.

    Customers are simulated independently, so a sample's records per customer carry over (the count
    moves ~5% with the seed). Cheap enough to run before the demo starts.
    """
    from crm_stream.operators.events.simulator import Shop

    sim = settings.simulator
    if sim.customers <= 0:
        return 0
    taken = min(sim.customers, sample)
    counted = sum(1 for _ in Shop(replace(sim, customers=taken), currency_rates=settings.currency_rates).records())
    return round(counted * sim.customers / taken)


def about(n: float) -> str:
    """A count rounded to two significant figures, for estimates.

    >>> about(75_912), about(1_234), about(87), about(0)
    ('76,000', '1,200', '87', '0')
    """
    n = round(n)
    if n < 100:
        return f"{n}"
    digits = len(str(n)) - 2
    return f"{round(n, -digits):,}"


def clock(seconds: float) -> str:
    """``m:ss`` (or ``h:mm:ss``) of a duration.

    >>> clock(7.6), clock(125), clock(3725)
    ('0:08', '2:05', '1:02:05')
    """
    total = round(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def roughly(seconds: float) -> str:
    """An expected duration, as a person would say it.

    >>> roughly(50.6), roughly(95), roughly(3000)
    ('about 51 s', 'about 2 min', 'about 50 min')
    """
    return f"about {max(1, round(seconds))} s" if seconds < 90 else f"about {round(seconds / 60)} min"


def sim_date(ms: int) -> str:
    """The simulated day reached, from an event timestamp in ms.

    >>> sim_date(1_767_225_600_000), sim_date(0)
    ('2026-01-01', '-')
    """
    return datetime.fromtimestamp(ms / 1000, UTC).date().isoformat() if ms > 0 else "-"


def intro_lines(settings: Settings, expected_records: int) -> list[str]:
    """The demo's first lines: what is simulated, how many events and about how long it takes.

    >>> from crm_stream.config.settings import load
    >>> for line in intro_lines(load(None, env={}), 75_912):
    ...     print(line)
    crm-stream demo: a simulated shop of 300 customers over 180 days from 2026-01-01, about 76,000 events, paced at 1,500 events/s: about 51 s.
    Alerts, marketing triggers, rejects and profile changes print as they happen; the status line counts them.
    Store: in-process memory, 16 shards. Ctrl-C stops early and still prints the summary.
    """
    s = settings.simulator
    if s.rate > 0:
        pace = f"paced at {s.rate:,.0f} events/s: {roughly(expected_records / s.rate)}"
    else:
        pace = "not paced (simulator.rate = 0): as fast as this machine runs the engine"
    return [
        f"crm-stream demo: a simulated shop of {s.customers:,} customers over {s.days} days from {s.start[:10]}, "
        f"about {about(expected_records)} events, {pace}.",
        "Alerts, marketing triggers, rejects and profile changes print as they happen; the status line counts them.",
        f"Store: in-process {settings.store.kind}, {settings.engine.shards} shards. Ctrl-C stops early and still prints the summary.",
    ]


def kinds_text(kinds: dict[str, int]) -> str:
    """Alerts and triggers by kind, most frequent first.

    >>> kinds_text({"churn_risk": 4, "angry_customer": 9, "win_back": 4})
    'angry_customer 9, churn_risk 4, win_back 4'
    >>> kinds_text({})
    'none yet'
    """
    return ", ".join(f"{k} {v:,}" for k, v in sorted(kinds.items(), key=lambda kv: (-kv[1], kv[0]))) or "none yet"


def status_text(p: Progress) -> str:
    """The status line: progress first (it must survive a narrow terminal), then alerts by kind.

    >>> print(status_text(Progress(12_345, 3, 8.2, 1_767_225_600_000, {"churn_risk": 2}, 76_000, 50.7)))
    12,345 events (3 rejected) | 1,505/s | simulated 2026-01-01 | 0:08 / ~0:51 | alerts: churn_risk 2
    >>> print(status_text(Progress(500, 0, 2.0, expected_records=76_000, stopping=True)))
    stopping: finishing the batches in flight | 500 events | 250/s | simulated - | 0:02, 1% of ~76,000 | alerts: none yet
    """
    rate = p.records / p.elapsed_s if p.elapsed_s > 0 else 0.0
    events = f"{p.records:,} events" + (f" ({p.rejected:,} rejected)" if p.rejected else "")
    if p.expected_s:
        timing = f"{clock(p.elapsed_s)} / ~{clock(p.expected_s)}"
    elif p.expected_records:
        timing = f"{clock(p.elapsed_s)}, {p.records / p.expected_records:.0%} of ~{about(p.expected_records)}"
    else:
        timing = clock(p.elapsed_s)
    parts = [events, f"{rate:,.0f}/s", f"simulated {sim_date(p.sim_ms)}", timing, f"alerts: {kinds_text(p.kinds)}"]
    if p.stopping:
        parts.insert(0, "stopping: finishing the batches in flight")
    return " | ".join(parts)


@dataclass(frozen=True)
class RunSummary:
    """What a finished (or stopped) run did, for ``summary_lines``."""

    records: int
    rejected: int
    elapsed_s: float
    segments: dict[str, int]
    kinds: dict[str, int] | None = None
    """Alerts and triggers by kind, where this process saw them (the demo's terminal); None: not counted."""
    suppressed: dict[str, int] = field(default_factory=dict)
    stopped_by: str | None = None
    expected_records: int | None = None
    committed: int | None = None
    """Partition positions committed to the consumer group at a drained stop (a Kafka source); None: not Kafka."""
    demo: bool = False


TRY_NEXT = [
    ("write the same shop to a file, with its ground truth:", ["crm-stream simulate --out shop.jsonl --truth truth.jsonl"]),
    (
        "replay it through the same dataflow, in event time (same output every run):",
        [
            "crm-stream replay shop.jsonl --deadletter-out rejects.jsonl \\",
            "  --alerts-out alerts.jsonl --profiles-out profiles.jsonl",
        ],
    ),
    ("how well the online models predict, tested then trained on every label:", ["crm-stream evaluate shop.jsonl"]),
    ("the agents' web console beside the demo (alerts, profiles, feedback):", ["bash scripts/demo --console"]),
]
"""What the demo's summary suggests next: a sentence, then the command (each line fits 80 columns)."""


def summary_lines(s: RunSummary) -> list[str]:
    """The closing summary: what happened, in sentences, then (for the demo) what to try next.

    >>> for line in summary_lines(RunSummary(2_831, 26, 2.0, {"new": 40, "loyal": 10}, {"churn_risk": 3})):
    ...     print(line)
    Done: 2,831 records in 2.0 s (1,416/s): 2,805 events applied, 26 rejected (the REJECT lines; the engine sends them to the dead-letter output).
    Alerts and triggers raised (3): churn_risk 3.
    Customer profiles by segment (50): new 40, loyal 10.
    >>> print(summary_lines(RunSummary(500, 0, 1.0, {}, stopped_by="SIGINT", expected_records=76_000, committed=12))[0])
    Stopped by Ctrl-C after 500 of about 76,000 events: everything read was processed and written; 12 partition position(s) committed, so a restart resumes there.
    """
    lines = []
    processed = s.records - s.rejected
    rate = s.records / s.elapsed_s if s.elapsed_s > 0 else 0.0
    if s.stopped_by:
        who = "Ctrl-C" if s.stopped_by == "SIGINT" else s.stopped_by
        of = f" of about {about(s.expected_records)}" if s.expected_records else ""
        committed = (
            f"; {s.committed} partition position(s) committed, so a restart resumes there" if s.committed is not None else ""
        )
        lines.append(f"Stopped by {who} after {s.records:,}{of} events: everything read was processed and written{committed}.")
    rejects = (
        f"{s.rejected:,} rejected (the REJECT lines; the engine sends them to the dead-letter output)"
        if s.rejected
        else "none rejected"
    )
    lines.append(
        f"{'In all' if s.stopped_by else 'Done'}: {s.records:,} records in {s.elapsed_s:.1f} s ({rate:,.0f}/s): "
        f"{processed:,} events applied, {rejects}."
    )
    if s.kinds is not None:
        lines.append(f"Alerts and triggers raised ({sum(s.kinds.values()):,}): {kinds_text(s.kinds)}.")
    total = sum(s.segments.values())
    if total:
        by_segment = ", ".join(f"{k} {v:,}" for k, v in sorted(s.segments.items(), key=lambda kv: (-kv[1], kv[0])))
        lines.append(f"Customer profiles by segment ({total:,}): {by_segment}.")
    if s.suppressed:
        lines.append(
            "Marketing triggers held back by governance: "
            + ", ".join(f"{k} {v:,}" for k, v in sorted(s.suppressed.items()))
            + "."
        )
    if s.demo:
        lines.append("")
        lines.append("Try next:")
        for what, commands in TRY_NEXT:
            lines.append(f"  {what}")
            lines.extend(f"    {command}" for command in commands)
        lines.append("  more: crm-stream --help (every command), README.md and docs/ (the guide)")
    return lines


# -- drawing ------------------------------------------------------------------------------------------


class Screen:
    """Where the demo draws: Rich in a terminal (live status, width-fitted lines), plain lines anywhere else.

    Thread-safe: the engine's workers call ``event_line`` while a refresh thread redraws the status.
    """

    def __init__(
        self,
        stream: IO[str] | None = None,
        *,
        quiet: bool = False,
        interactive: bool | None = None,
        plain_progress_s: float = PLAIN_PROGRESS_S,
        width: int | None = None,
    ) -> None:
        from rich.console import Console

        self.stream = stream if stream is not None else sys.stdout
        # width None: the terminal's, read at every line (a resized window is followed); a number: tests
        self.console = Console(file=self.stream, highlight=False, markup=False, emoji=False, soft_wrap=False, width=width)
        self.interactive = (
            (self.console.is_terminal and not self.console.is_dumb_terminal) if interactive is None else interactive
        )
        self.quiet = quiet
        self.plain_progress_s = plain_progress_s
        self.stopping = False
        self._progress: Callable[[], Progress] | None = None
        self._live: Any = None
        self._ticker: threading.Thread | None = None
        self._done = threading.Event()
        self._lock = threading.Lock()

    # paragraphs: the intro, notices, the summary

    def say(self, lines: Iterable[str], style: str = "") -> None:
        """Print lines as paragraphs: word-wrapped to the terminal's width, or plain (never cut) elsewhere."""
        from rich.text import Text

        for line in lines:
            if self.interactive:
                indent = len(line) - len(line.lstrip(" "))
                wrapped = Text(line.strip(), style=style).wrap(
                    self.console, max(20, self.console.width - indent), overflow="fold"
                )
                for part in wrapped:
                    self.console.print(Text(" " * indent) + part, no_wrap=True, crop=True)
            else:
                self._plain(line)

    def event_line(self, label: str, style: str, body: str) -> None:
        """One alert, trigger, reject or profile change: the label, then the text wrapped and indented under it."""
        if self.quiet:
            return
        if not self.interactive:
            self._plain(f"{label:<{LABEL_WIDTH}} {body}")
            return
        from rich.text import Text

        width = max(20, self.console.width - LABEL_WIDTH - 1)
        parts = list(Text(body).wrap(self.console, width, overflow="fold"))
        if len(parts) > MAX_EVENT_LINES:
            parts = parts[:MAX_EVENT_LINES]
            parts[-1].truncate(width - 3)
            parts[-1].append("...")
        out = Text()
        for i, part in enumerate(parts):
            out.append(f"{label:<{LABEL_WIDTH}} " if i == 0 else " " * (LABEL_WIDTH + 1), style=style if i == 0 else "")
            out.append_text(part)
            if i < len(parts) - 1:
                out.append("\n")
        self.console.print(out, no_wrap=True, crop=True)

    def notice(self, message: str) -> None:
        """Something the user did or must know while the engine runs (Ctrl-C): on the status line, or one plain line on stderr.

        Called from a signal handler, so it only sets a flag or writes one raw line (never takes the console's lock).
        """
        self.stopping = True
        if not self.interactive:
            os.write(2, (message + "\n").encode())

    def abort(self) -> None:
        """Before a second Ctrl-C exits at once: give the terminal back its cursor and a fresh line (raw write, no lock)."""
        if self.interactive:
            try:
                os.write(self.stream.fileno(), b"\x1b[?25h\n")
            except (OSError, ValueError, AttributeError):
                pass

    # the status line

    def start(self, progress: Callable[[], Progress]) -> None:
        """Show ``progress()`` live at the bottom of a terminal, or as a plain line every ``plain_progress_s`` elsewhere."""
        self._progress = progress
        if self.interactive:
            from rich.live import Live

            self._live = Live(
                console=self.console,
                get_renderable=self._render,
                refresh_per_second=4,
                transient=True,  # the summary says it all at the end
                redirect_stdout=False,
                redirect_stderr=False,
            )
            self._live.start()
        else:
            self._ticker = threading.Thread(target=self._tick, name="demo-progress", daemon=True)
            self._ticker.start()

    def stop(self) -> None:
        self._done.set()
        if self._live is not None:
            self._live.stop()
            self._live = None
        if self._ticker is not None:
            self._ticker.join(timeout=5)
            self._ticker = None

    def _current(self) -> Progress | None:
        if self._progress is None:
            return None
        p = self._progress()
        return replace(p, stopping=True) if self.stopping and not p.stopping else p

    def _render(self) -> Any:
        from rich.text import Text

        p = self._current()
        return Text(status_text(p) if p else "", style="bold")

    def _tick(self) -> None:
        while not self._done.wait(self.plain_progress_s):
            p = self._current()
            if p is not None:
                self._plain(f"progress: {status_text(p)}")

    def _plain(self, line: str) -> None:
        with self._lock:
            self.stream.write(line + "\n")
            self.stream.flush()
