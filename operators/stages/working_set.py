"""The customers a shard holds between batches, in front of the store of record: hydrate, hold, evict.

A shard reads a customer from the store once (one ``MGET`` per batch for everyone it does not hold) and then
keeps them in memory. The storage mode is decided once, here, from the store:

- a store that encodes to bytes (Redis) gets *held blobs*: between batches each customer is kept as the very
  JSON blob written to the store, decoded when an event or timer touches it. Blobs are a fraction of a
  profile's memory, and the garbage collector never walks them (it walked every profile once: ~10% of the
  engine's time);
- the in-process store (replay, the demo) keeps the profile objects themselves.

Either way the batch works on objects in ``batch`` (for objects mode, the same dict as ``held``), and ``close``
turns what changed into store writes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from crm_stream.operators.io import jsonutil
from crm_stream.operators.io.interface import PUT, Effect, Store
from crm_stream.operators.io.keys import KeySpace
from crm_stream.operators.profile import state as profiles

EVICT_EVERY_S = 60.0


def thaw(blob: bytes) -> profiles.Profile:
    """A held blob as the profile object a batch works on."""
    return profiles.stored_profile(jsonutil.loads(blob))


def freeze(profile: dict[str, Any]) -> bytes:
    """A profile as a held blob: a right-sized copy, because orjson's bytes keep the capacity of its output
    buffer (~8 KB each in RSS when kept, measured), and a million of those would cost more than the profiles."""
    return memoryview(jsonutil.dumps_state(profile)).tobytes()


class WorkingSet:
    """One shard's customers in memory. ``held`` is what stays between batches; ``batch`` the objects this batch touches."""

    def __init__(self, store: Store, keys: KeySpace, *, hold_encoded: bool | None, complete: bool, retention_ms: int) -> None:
        self.store, self.keys = store, keys
        self.hold_encoded = type(store.encode({})) is bytes if hold_encoded is None else hold_encoded
        self.held: dict[str, profiles.Profile | bytes] = {}
        self.batch: dict[str, profiles.Profile] = {} if self.hold_encoded else self.held  # type: ignore[assignment]
        """Holding blobs, a dict apart, emptied at the end of the batch: ``held`` then only ever holds bytes, so
        the collector untracks it for good (a tracked object put in it would make each pass walk every entry:
        measured ~130 ms a pass at 630k customers)."""
        self.complete = complete
        """True while memory holds every profile of the shard (a shard with no record in the store has none
        there), so a miss needs no MGET (a fresh start at a million customers would spend a tenth of its time on
        MGETs of keys that do not exist)."""
        self.retention_ms = retention_ms
        self.last_seen: dict[str, int] = {}
        """With eviction, each held blob's newest event time (eviction must not decode everyone)."""
        self.touched: set[str] = set()
        self.evicted = 0
        self.evict_every_s = EVICT_EVERY_S
        self._last_evict = time.monotonic()

    def __len__(self) -> int:
        return len(self.held)

    def get(self, customer_id: str) -> profiles.Profile | None:
        """The customer as an object for this batch (a held blob decoded on first touch), or None if unknown."""
        profile = self.batch.get(customer_id)
        if profile is None and self.hold_encoded:
            blob = self.held.get(customer_id)
            if blob is not None:
                profile = self.batch[customer_id] = thaw(blob)  # type: ignore[arg-type]
        return profile

    def hydrate(self, ids: Iterable[str], skip: Callable[[str], bool] | None = None) -> None:
        """Read from the store every customer in ``ids`` that memory does not hold (one MGET), except ``skip``'s."""
        if self.complete:
            return
        held, batch = self.held, self.batch
        missing = sorted(c for c in set(ids) if c not in held and c not in batch)
        if skip is not None:
            missing = [c for c in missing if not skip(c)]
        if not missing:
            return
        decode, hold = self.store.decode, self.hold_encoded
        for customer_id, blob in zip(missing, self.store.get_many([self.keys.profile(c) for c in missing])):
            if blob:
                if not hold:
                    held[customer_id] = profiles.stored_profile(decode(blob))
                else:  # held as read (the store's plain JSON), decoded when the batch touches it; bytes only, ever
                    held[customer_id] = blob if type(blob) is bytes else freeze(decode(blob))

    def close(self, dirty: dict[str, profiles.Profile], effects: list[Effect]) -> None:
        """End of batch: a store write for each changed profile; holding blobs, each encoded once for both."""
        encode, key_of = self.store.encode, self.keys.profile
        if not self.hold_encoded:
            effects.extend(Effect(PUT, key_of(c), encode(p)) for c, p in dirty.items())
        else:
            held = self.held
            last_seen = self.last_seen if self.retention_ms else None
            for customer_id, profile in dirty.items():
                blob = held[customer_id] = freeze(profile)
                effects.append(Effect(PUT, key_of(customer_id), encode(blob)))
                if last_seen is not None:
                    last_seen[customer_id] = profile["last_seen"]
            for customer_id, profile in self.batch.items():
                if customer_id in dirty:
                    continue
                # Read but not changed in a way the store must see (a redelivery, a timer that found nothing to do):
                # memory still keeps it as it now stands, as when holding objects (a duplicate event id at a new
                # offset records that offset, which an erasure's guard must cover). Rare: re-encode, no put.
                blob = freeze(profile)
                if blob != held.get(customer_id):
                    held[customer_id] = blob
                if last_seen is not None:
                    last_seen[customer_id] = profile["last_seen"]
            self.batch.clear()
        if self.retention_ms:
            self.touched.update(dirty)

    def take(self, customer_id: str) -> tuple[profiles.Profile | None, bytes | None]:
        """Remove a customer from memory (an erasure): its object (decoded if held as a blob) and its blob."""
        profile = self.batch.pop(customer_id, None)
        blob = self.held.pop(customer_id, None) if self.hold_encoded else None
        if profile is None and blob is not None:
            profile = thaw(blob)  # type: ignore[arg-type]
        self.last_seen.pop(customer_id, None)
        self.touched.discard(customer_id)
        return profile, blob  # type: ignore[return-value]

    def put_back(self, customer_id: str, profile: profiles.Profile, blob: bytes | None) -> None:
        """Undo ``take`` (an erasure found already carried out before a restart)."""
        self.batch[customer_id] = profile
        if blob is not None:
            self.held[customer_id] = blob

    def evict(self, watermark: int) -> None:
        """Drop customers inactive beyond the retention from memory (bounded state; the store keeps them).

        A pass runs every ``evict_every_s`` of wall time and spares anyone changed since the previous pass,
        so the sink has long written their latest state before it could be read back.
        """
        if not self.retention_ms or time.monotonic() - self._last_evict < self.evict_every_s:
            return
        self._last_evict = time.monotonic()
        horizon = watermark - self.retention_ms
        touched, self.touched = self.touched, set()
        stale = [c for c, p in self.held.items() if c not in touched and self._seen_at(c, p) < horizon]
        for customer_id in stale:
            del self.held[customer_id]
            self.last_seen.pop(customer_id, None)
        if stale:
            self.complete = False  # memory no longer holds everyone: misses must read the store
            self.evicted += len(stale)

    def decoded(self) -> Iterator[profiles.Profile]:
        """Every customer in memory, decoded: for a summary at the end of a run, not for the hot path."""
        for profile in list(self.held.values()):
            yield thaw(profile) if isinstance(profile, bytes) else profile

    def _seen_at(self, customer_id: str, profile: profiles.Profile | bytes) -> int:
        if not isinstance(profile, bytes):
            return profile["last_seen"]
        seen = self.last_seen.get(customer_id)
        return seen if seen is not None else jsonutil.loads(profile)["last_seen"]
