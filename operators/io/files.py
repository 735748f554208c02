"""JSON-lines files as a source, and in-memory / file / terminal outputs (the terminal's drawing: flows/terminal.py)."""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from crm_stream.operators.io.interface import DEADLETTER, MARKETING, SERVICE, Raw
from crm_stream.operators.io.jsonutil import loads as _loads


class FileReader:
    """One partition per file; the position is the number of lines consumed."""

    def __init__(self, path: str | Path, batch_size: int = 1000) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"events file {self.path} does not exist: pass a JSON-lines file of contract events")
        self.batch_size = batch_size

    def partitions(self) -> list[str]:
        return [str(self.path)]

    def open(self, partition: str, position: Any | None) -> _FilePartition:
        return _FilePartition(self.path, self.batch_size, int(position or 0))


class _FilePartition:
    def __init__(self, path: Path, batch_size: int, skip: int) -> None:
        self.fh = open(path, "rb")
        self.batch_size = batch_size
        self.line = 0
        self._eof = False
        for _ in range(skip):
            if not self.fh.readline():
                break
            self.line += 1

    def read_batch(self) -> list[Raw]:
        out: list[Raw] = []
        readline = self.fh.readline
        while len(out) < self.batch_size:
            data = readline()
            if not data:
                self._eof = True
                break
            self.line += 1
            value = data.rstrip(b"\r\n")
            if value.strip():  # blank lines separate nothing and are not events
                out.append(Raw(None, -1, self.line, value))
        return out

    def position(self) -> int:
        return self.line

    def done(self) -> bool:
        return self._eof

    def close(self) -> None:
        self.fh.close()


class CollectingOutputs:
    """Keeps every record in memory, per destination: replay and tests."""

    def __init__(self) -> None:
        self.records: dict[str, list[bytes]] = {}
        self.tombstones: list[tuple[str, str | None]] = []
        """(destination, customer id) of each erasure tombstone: kept apart, records hold alerts only."""

    def send(self, destination: str, key: str | None, value: bytes | None) -> None:
        if value is None:
            self.tombstones.append((destination, key))
            return
        self.records.setdefault(destination, []).append(value)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


class FileOutputs:
    """Appends each destination to ``DIR/<destination>.jsonl``."""

    def __init__(self, directory: str | Path) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.files: dict[str, IO[bytes]] = {}

    def send(self, destination: str, key: str | None, value: bytes | None) -> None:
        if value is None:
            return  # an erasure tombstone: these files hold alerts and triggers only (the audit stream records it)
        fh = self.files.get(destination)
        if fh is None:
            fh = self.files[destination] = open(self.dir / f"{destination}.jsonl", "ab")
        fh.write(value + b"\n")

    def flush(self) -> None:
        for fh in self.files.values():
            fh.flush()

    def close(self) -> None:
        for fh in self.files.values():
            fh.close()


class TerminalOutputs:
    """The demo's live view: alerts, triggers, rejects and profile changes, one line each, and their counts.

    ``show(label, style, text)`` draws a line (flows/terminal.py fits it to the terminal's width, with
    ``style`` a Rich style name); without it, plain lines, never cut, go to ``stream``. ``quiet``: count
    (for the status line and the summary), draw nothing. Workers may share one instance.

    >>> import io
    >>> out = io.StringIO()
    >>> terminal = TerminalOutputs(out)
    >>> terminal.send(DEADLETTER, None, b'{"reason": "line 3: not JSON"}')
    >>> out.getvalue(), terminal.rejects
    ('REJECT  line 3: not JSON\\n', 1)
    """

    STYLES = {
        SERVICE: ("ALERT", "bold red"),
        MARKETING: ("TRIGGER", "bold blue"),
        DEADLETTER: ("REJECT", "yellow"),
        "changes": ("PROFILE", "green"),
    }
    LABEL_WIDTH = 7

    def __init__(
        self, stream: IO[str] | None = None, *, show: Callable[[str, str, str], None] | None = None, quiet: bool = False
    ) -> None:
        self.stream = stream if stream is not None else sys.stdout  # looked up now, not at import: tests swap it
        self.show = show
        self.quiet = quiet
        self.kinds: Counter[str] = Counter()
        """Alerts and marketing triggers by kind (duplicates of an ``alert_id`` included, as they were sent)."""
        self.rejects = 0

    def send(self, destination: str, key: str | None, value: bytes | None) -> None:
        if value is None:
            return  # an erasure tombstone: the shard prints one "erased" line instead (a profile change)
        label, style = self.STYLES.get(destination, (destination.upper()[: self.LABEL_WIDTH], ""))
        if destination == DEADLETTER:  # the reason is what a person needs; the raw record is in the topic/file
            self.rejects += 1
            text = str(_loads(value).get("reason", value.decode("utf-8", errors="replace")))
        elif destination in (SERVICE, MARKETING):
            alert = _loads(value)
            self.kinds[alert["kind"]] += 1
            when = f" send {alert['send_at'][:16]}" if alert.get("send_at") else ""
            text = f"{alert['priority']:<6} {alert['kind']} at {alert['ts'][:16]}{when}: {'; '.join(alert['reasons'])}"
        else:
            text = value.decode("utf-8", errors="replace")
        if self.quiet:
            return
        body = f"{key}: {text}" if key else text
        if self.show is not None:
            self.show(label, style, body)
        else:
            self.stream.write(f"{label:<{self.LABEL_WIDTH}} {body}\n")

    def flush(self) -> None:
        if self.show is None:
            self.stream.flush()

    def close(self) -> None:
        self.flush()
