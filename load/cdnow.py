"""CDNOW, the repeat-buying literature's benchmark purchase log, as contract ``purchase`` events.

CDNOW_master.txt: 23,570 customers who first bought CDs at CDNOW in the first
quarter of 1997, and every purchase they made until June 1998 (one line per
purchase line: customer, date, number of CDs, dollars). It ships inside the
``lifetimes`` PyPI package (MIT; ``lifetimes/datasets/CDNOW_master.txt``), a
dev extra of this project: the file is read as data, the package is never
imported (its fitting code predates current pandas/numpy).

As in the literature (Fader, Hardie & Lee 2005), one purchase is one customer-day:
lines of the same customer on the same day are summed into one order. The log
has dates only; each purchase is stamped 12:00 UTC that day. Days whose total is
not positive cannot be contract purchases (``amount`` > 0) and are counted, not
converted.

>>> rows = parse_lines(["00001 19970101  1   11.77", "00002 19970112  1   12.00", "00002 19970112  5   77.00"])
>>> [(p.customer_id, p.day, p.amount) for p in rows]
[('c00001', 9862, 11.77), ('c00002', 9873, 89.0)]
>>> purchase_event(rows[1])["ts"]
'1997-01-12T12:00:00Z'
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

MS_PER_DAY = 86_400_000
MEMBER = "lifetimes/datasets/CDNOW_master.txt"
START_DAY = dt.date(1997, 1, 1).toordinal() - dt.date(1970, 1, 1).toordinal()
"""1997-01-01 in days since the epoch: the start of the acquisition quarter (week 0 of the cut dates)."""
NOON_MS = 12 * 3_600_000


class Purchase(NamedTuple):
    customer_id: str
    day: int
    """Days since 1970-01-01."""
    amount: float
    cds: int


def _day(yyyymmdd: str) -> int:
    date = dt.date(int(yyyymmdd[:4]), int(yyyymmdd[4:6]), int(yyyymmdd[6:8]))
    return date.toordinal() - dt.date(1970, 1, 1).toordinal()


def parse_lines(lines: Iterable[str]) -> list[Purchase]:
    """Customer-day purchases, in time order (then customer id); non-positive days dropped (see ``parse_with_counts``)."""
    return parse_with_counts(lines)[0]


def parse_with_counts(lines: Iterable[str]) -> tuple[list[Purchase], dict[str, int]]:
    """``parse_lines`` and counts: ``lines``, ``customer_days``, ``dropped_non_positive``."""
    days: dict[tuple[str, int], list[float]] = {}
    n = 0
    for line in lines:
        fields = line.split()
        if len(fields) != 4 or not fields[1].isdigit():
            continue  # the header line, or a blank one
        n += 1
        key = ("c" + fields[0], _day(fields[1]))
        cell = days.setdefault(key, [0.0, 0])
        cell[0] += float(fields[3])
        cell[1] += int(fields[2])
    kept = [Purchase(c, d, round(v[0], 2), int(v[1])) for (c, d), v in days.items() if round(v[0], 2) > 0]
    kept.sort(key=lambda p: (p.day, p.customer_id))
    return kept, {"lines": n, "customer_days": len(days), "dropped_non_positive": len(days) - len(kept)}


def locate(path: str | Path | None = None) -> Path:
    """The CDNOW master file (or a lifetimes wheel holding it): ``path`` if given, else the installed package's copy."""
    if path is not None:
        found = Path(path)
        if not found.exists():
            raise FileNotFoundError(f"{found} does not exist: pass CDNOW_master.txt or a Lifetimes-*.whl that contains it")
        return found
    spec = importlib.util.find_spec("lifetimes")  # finds the package without importing it
    if spec is not None and spec.submodule_search_locations:
        for root in spec.submodule_search_locations:
            candidate = Path(root) / "datasets" / "CDNOW_master.txt"
            if candidate.exists():
                return candidate
    raise FileNotFoundError(
        "CDNOW_master.txt not found: install the dev extras (pip install -e '.[dev]', which bring the lifetimes "
        "package), or `pip download lifetimes==0.11.3 --no-deps -d DIR` and pass --cdnow DIR/Lifetimes-0.11.3-py3-none-any.whl"
    )


def read_lines(path: str | Path | None = None) -> list[str]:
    source = locate(path)
    if source.suffix in (".whl", ".zip"):
        with zipfile.ZipFile(source) as wheel:
            return wheel.read(MEMBER).decode().splitlines()
    return source.read_text().splitlines()


def purchase_event(p: Purchase) -> dict[str, Any]:
    """A contract ``purchase`` event (no line items: CDNOW has none)."""
    ts = dt.datetime.fromtimestamp((p.day * MS_PER_DAY + NOON_MS) / 1000, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    order = f"{p.customer_id}-{p.day}"
    return {
        "event_id": f"cdnow-{order}",
        "type": "purchase",
        "customer_id": p.customer_id,
        "ts": ts,
        "source": "store",
        "order_id": order,
        "amount": p.amount,
        "currency": "USD",
    }


def ts_ms(p: Purchase) -> int:
    return p.day * MS_PER_DAY + NOON_MS


def events(purchases: Iterable[Purchase]) -> Iterator[dict[str, Any]]:
    for p in purchases:
        yield purchase_event(p)
