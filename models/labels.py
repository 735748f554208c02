"""Delayed labels: remember what was predicted, and resolve it only when event time tells the answer.

A prediction made for a customer at event time t asks two questions about the
future: *will they buy within the churn horizon H* (churn), and *how many days
until they buy* (next purchase). Neither answer is known at t, so the
prediction waits here with the features it was made from, and is resolved
only by later event time:

========================================  =========================================================
what happens (event time)                 resolution
========================================  =========================================================
purchase at t2, t < t2 <= t + H           churn = 0; next purchase = (t2 - t) days
purchase at t2, t + H < t2 <= t + W       churn = 1 (if the clock had not said so yet);
                                          next purchase = (t2 - t) days
the clock passes t + H, no purchase       churn = 1 (``advance``); the entry waits on for its gap
the clock passes t + W, no purchase       next purchase *censored* at W: only "more than W days"
                                          is known (``advance``); the entry is dropped
========================================  =========================================================

W (``censor_days``) is the longest gap this module waits to observe. A
censored gap is reported as ``CENSORED`` with the lower bound W; the learner
decides what to do with it (models/hub.py makes a one-sided update: push the
prediction up to W if it is below, never learn a made-up exact value).

The same resolution is given whichever comes first, the purchase or the
clock, so the labels do not depend on how often ``advance`` is called. The
clock is the caller's watermark: the event time up to which it believes it
has seen every purchase. A purchase arriving later than the watermark (beyond
the allowed lateness) cannot revise a churn label already given.

Prediction points (the cadence), per customer:

- right after each purchase (days since last purchase = 0);
- otherwise on any event, when at least ``min_spacing_days`` (default 3) and
  at least half the time elapsed since the anchor (the last purchase, or
  first sight for a prospect) have passed since the previous point: points
  fall about 3, 6, 12, 24, ... days into a silence. Log spacing samples every
  stage of a silence without letting an active browser pile up points: at
  most about log2(W / 3) + 2 points are open per purchase cycle. (A 1-day
  spacing gave 12% more points, hence cost, and no better models on the
  simulated shop.)
- never more than ``max_per_customer`` open; when full, the new point is
  skipped. The skip depends only on the past, so it cannot bias the labels.

Memory is bounded: at most ``max_per_customer`` entries per customer, each a
float array of the features plus a small tuple of predictions (~0.5 KB with
43 features), and one heap item per open entry stage. ``advance`` pops a
heap keyed by due time, so the clock costs O(log n) per resolved entry and
nothing for customers with nothing due, however many there are.
"""

from __future__ import annotations

import bisect
import heapq
from array import array
from collections.abc import Iterable
from typing import Any, NamedTuple

MS_PER_DAY = 86_400_000

CHURN = "churn"
NEXT_PURCHASE = "next_purchase"
CENSORED = "next_purchase_censored"

_CHURN_DUE, _CENSOR_DUE = 0, 1


class Entry:
    """One open prediction: when, from what features, and what was predicted (an opaque payload)."""

    __slots__ = ("seq", "made_at", "x", "payload", "churn_open")

    def __init__(self, seq: int, made_at: int, x: array, payload: Any) -> None:
        self.seq = seq
        self.made_at = made_at
        self.x = x
        self.payload = payload
        self.churn_open = True

    def __getstate__(self) -> tuple[int, int, array, Any, bool]:
        return (self.seq, self.made_at, self.x, self.payload, self.churn_open)

    def __setstate__(self, state: tuple[int, int, array, Any, bool]) -> None:
        self.seq, self.made_at, self.x, self.payload, self.churn_open = state

    def __repr__(self) -> str:
        return f"Entry(seq={self.seq}, made_at={self.made_at}, churn_open={self.churn_open})"


class Resolved(NamedTuple):
    """A label that event time has revealed for one entry.

    ``kind`` is ``CHURN`` (``value``: 1.0 churned, 0.0 bought), ``NEXT_PURCHASE`` (``value``: days
    to the purchase) or ``CENSORED`` (``value``: the lower bound, W days). ``at`` is the event time
    at which it became known.
    """

    kind: str
    customer_id: str
    entry: Entry
    value: float
    at: int


class _Customer:
    __slots__ = ("last_point", "entries")

    def __init__(self) -> None:
        self.last_point: int | None = None
        self.entries: list[Entry] = []

    def __getstate__(self) -> tuple[int | None, list[Entry]]:
        return (self.last_point, self.entries)

    def __setstate__(self, state: tuple[int | None, list[Entry]]) -> None:
        self.last_point, self.entries = state


class PendingPredictions:
    """Open predictions per customer, resolved by purchases and by an event-time clock.

    >>> pending = PendingPredictions(horizon_days=30, censor_days=90)
    >>> day = MS_PER_DAY
    >>> pending.add("c1", 0, [1.0], payload="p")
    True
    >>> pending.advance(29 * day)  # nothing is known yet
    []
    >>> [(r.kind, r.value) for r in pending.on_purchase("c1", 10 * day)]
    [('churn', 0.0), ('next_purchase', 10.0)]
    >>> pending.add("c2", 0, [1.0], payload="q")
    True
    >>> [(r.kind, r.value) for r in pending.advance(31 * day)]  # the horizon passed without a purchase
    [('churn', 1.0)]
    >>> [(r.kind, r.value) for r in pending.advance(91 * day)]
    [('next_purchase_censored', 90.0)]
    """

    def __init__(
        self, horizon_days: float, censor_days: float, *, max_per_customer: int = 8, min_spacing_days: float = 3.0
    ) -> None:
        if not 0 < horizon_days <= censor_days:
            raise ValueError(f"need 0 < horizon_days <= censor_days, got {horizon_days} and {censor_days}")
        if max_per_customer < 1:
            raise ValueError(f"max_per_customer must be at least 1, got {max_per_customer}")
        self.horizon_days = float(horizon_days)
        self.censor_days = float(censor_days)
        self.max_per_customer = max_per_customer
        self.min_spacing_days = float(min_spacing_days)
        self._horizon_ms = int(horizon_days * MS_PER_DAY)
        self._censor_ms = int(censor_days * MS_PER_DAY)
        self._spacing_ms = int(min_spacing_days * MS_PER_DAY)
        self._customers: dict[str, _Customer] = {}
        self._due: list[tuple[int, int, int, str]] = []  # (due_ms, entry seq, stage, customer_id)
        self._next_seq = 0
        self._forgotten: set[str] = set()
        """Erased customers whose heap items are still to be purged (at the next ``advance``)."""
        self.watermark = 0
        self.open = 0
        self.skipped = 0
        """Prediction points not recorded because a customer already had ``max_per_customer`` open."""

    # -- recording ---------------------------------------------------------------------------

    def due(self, customer_id: str, as_of_ms: int, anchor_ms: int | None, purchase: bool) -> bool:
        """Is ``as_of_ms`` a prediction point for this customer (see the module doc)?

        ``anchor_ms``: the last purchase time, or first sight for a prospect. ``purchase``: the event
        being handled is a new purchase.
        """
        record = self._customers.get(customer_id)
        if record is None or record.last_point is None:
            return True
        if purchase:  # the same order again under another event id lands at the same instant: one point
            return record.last_point != as_of_ms
        since_point = as_of_ms - record.last_point
        elapsed = as_of_ms - anchor_ms if anchor_ms is not None else 0
        return since_point >= self._spacing_ms and 2 * since_point >= elapsed

    def add(self, customer_id: str, made_at: int, x: Iterable[float], payload: Any) -> bool:
        """Record a prediction point; False when the customer already has the maximum open (skipped)."""
        record = self._customers.get(customer_id)
        if record is None:
            record = self._customers[customer_id] = _Customer()
        record.last_point = made_at if record.last_point is None else max(record.last_point, made_at)
        if len(record.entries) >= self.max_per_customer:
            self.skipped += 1
            return False
        seq = self._next_seq
        self._next_seq += 1
        record.entries.append(Entry(seq, made_at, array("d", x), payload))
        heapq.heappush(self._due, (made_at + self._horizon_ms, seq, _CHURN_DUE, customer_id))
        self.open += 1
        return True

    # -- resolving ----------------------------------------------------------------------------

    def on_purchase(self, customer_id: str, purchased_at: int) -> list[Resolved]:
        """A purchase at ``purchased_at`` answers every open prediction made before it."""
        return self.on_purchases(customer_id, [purchased_at])

    def on_purchases(self, customer_id: str, purchase_times: list[int]) -> list[Resolved]:
        """Resolve every open prediction with the first of the (sorted) ``purchase_times`` after it.

        Idempotent, so it can be handed the profile's whole purchase history on any event: it also
        catches up on purchases it never heard of (a restart from an older snapshot than the profiles).
        """
        record = self._customers.get(customer_id)
        if record is None or not record.entries or not purchase_times:
            return []
        newest = purchase_times[-1]
        for entry in record.entries:  # a plain loop: this runs on every event of a customer with open predictions
            if entry.made_at < newest:
                break
        else:
            return []  # the common case: nothing bought since the open predictions were made
        out: list[Resolved] = []
        keep: list[Entry] = []
        for entry in record.entries:
            i = bisect.bisect_right(purchase_times, entry.made_at)
            if i == len(purchase_times):
                keep.append(entry)  # nothing bought after this prediction (a late purchase says nothing about after it)
                continue
            purchased_at = purchase_times[i]
            waited = purchased_at - entry.made_at
            if entry.churn_open:
                entry.churn_open = False
                out.append(Resolved(CHURN, customer_id, entry, 0.0 if waited <= self._horizon_ms else 1.0, purchased_at))
            if waited <= self._censor_ms:
                out.append(Resolved(NEXT_PURCHASE, customer_id, entry, waited / MS_PER_DAY, purchased_at))
            else:  # the clock lagged: give the same answer it would have given
                out.append(Resolved(CENSORED, customer_id, entry, self.censor_days, purchased_at))
            self.open -= 1
        record.entries = keep
        return out

    def advance(self, watermark_ms: int) -> list[Resolved]:
        """Move the event-time clock to ``watermark_ms`` (never backwards); return what it resolves.

        An entry is resolved once the watermark is strictly past its due time, as a purchase exactly
        at t + H still counts as "within the horizon".
        """
        if self._forgotten:
            self._purge_forgotten()
        if watermark_ms <= self.watermark:
            return []
        self.watermark = watermark_ms
        out: list[Resolved] = []
        heap = self._due
        while heap and heap[0][0] < watermark_ms:
            due, seq, stage, customer_id = heapq.heappop(heap)
            record = self._customers.get(customer_id)
            if record is None:
                continue  # forgotten
            entry = next((e for e in record.entries if e.seq == seq), None)
            if entry is None:
                continue  # already resolved by a purchase
            if stage == _CHURN_DUE:
                if entry.churn_open:
                    entry.churn_open = False
                    out.append(Resolved(CHURN, customer_id, entry, 1.0, due))
                heapq.heappush(heap, (entry.made_at + self._censor_ms, seq, _CENSOR_DUE, customer_id))
            else:
                out.append(Resolved(CENSORED, customer_id, entry, self.censor_days, due))
                record.entries.remove(entry)
                self.open -= 1
                if not record.entries and (record.last_point or 0) + self._censor_ms < watermark_ms:
                    # Silent for W: forget the cadence too; the next event simply starts a new point.
                    del self._customers[customer_id]
        return out

    # -- housekeeping ------------------------------------------------------------------------

    def forget(self, customer_id: str) -> int:
        """Erasure: drop the customer's stored features and predictions; returns how many were open.

        Their heap items (the id and times) are purged at the next ``advance``, in one pass for all
        the customers erased meanwhile; a snapshot (pickle) leaves them out in any case.
        """
        record = self._customers.pop(customer_id, None)
        if record is None:
            return 0
        self._forgotten.add(customer_id)
        self.open -= len(record.entries)
        return len(record.entries)

    def _purge_forgotten(self) -> None:
        gone, self._forgotten = self._forgotten, set()
        self._due = [item for item in self._due if item[3] not in gone]
        heapq.heapify(self._due)

    def tracks(self, customer_id: str) -> bool:
        """Has this customer had a prediction point that the clock has not yet forgotten?"""
        return customer_id in self._customers

    def entries(self, customer_id: str) -> list[Entry]:
        record = self._customers.get(customer_id)
        return list(record.entries) if record is not None else []

    def customers(self) -> int:
        return len(self._customers)

    def customer_ids(self) -> list[str]:
        """The customers with open predictions (a restart checks them against recent erasures)."""
        return list(self._customers)

    def __len__(self) -> int:
        return self.open

    def __getstate__(self) -> dict[str, Any]:
        # Persist only live heap items: not those of entries already resolved by a purchase, nor
        # those of erased customers. Dropping them changes nothing: they would be skipped when due.
        state = dict(self.__dict__)
        live = {(customer_id, entry.seq) for customer_id, record in self._customers.items() for entry in record.entries}
        heap = [item for item in self._due if (item[3], item[1]) in live]
        heapq.heapify(heap)
        state["_due"] = heap
        state["_forgotten"] = set()
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.__dict__.setdefault("_forgotten", set())  # snapshots from before erasure purging
