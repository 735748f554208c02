"""Erasure in a shard: forget a customer everywhere the shard keeps them, exactly once across restarts.

``ErasureGuard.carry_out`` removes the customer from memory (the profile with its dedup window, timers, held
triggers; its timer-wheel entries; the model's pending predictions), asks the store to delete the profile, its
visitors' records and its console claim, puts a tombstone on both output topics and one audit record.

Exactly once: the input positions an erasure covers (every position the profile had applied, and its own) are
kept for ``guard_s`` seconds of running time under a hash of the id (in memory and in the shard record, never
the id itself). A restart that re-reads any of them skips it, and a later event starts a fresh profile that
carries them, never read back from the store (``blocks_read``).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import Any, Protocol

from crm_stream.operators.io.interface import AUDIT, CHANGES, DEL, MARKETING, SERVICE, Effect
from crm_stream.operators.io.keys import KeySpace
from crm_stream.operators.profile import state as profiles
from crm_stream.operators.profile.state import TIMER_HOURS
from crm_stream.operators.profile.timers import TimerWheel, bucket_of

GUARD_S = 120.0


def erasure_token(customer_id: str) -> str:
    """What the shard record keeps of an erased customer for a short while: a hash, never the id.

    >>> len(erasure_token("c1")), erasure_token("c1") == erasure_token("c1") != erasure_token("c2")
    (24, True)
    """
    return hashlib.blake2b(customer_id.encode(), digest_size=12, person=b"crm-erasure").hexdigest()


def guarded_source(source: str) -> str:
    """An input path as an erasure guard keeps it: a visitor's path (``source|anonymous_id``) with the id hashed.

    >>> guarded_source("crm.purchases[0]")
    'crm.purchases[0]'
    >>> guarded_source("crm.clickstream[1]|v9") == "crm.clickstream[1]|" + erasure_token("v9")
    True
    """
    if "|" not in source:
        return source
    base, anonymous_id = source.split("|", 1)
    return f"{base}|{erasure_token(anonymous_id)}"


class _Memory(Protocol):
    def take(self, customer_id: str) -> tuple[profiles.Profile | None, bytes | None]: ...

    def put_back(self, customer_id: str, profile: profiles.Profile, blob: bytes | None) -> None: ...


class _Models(Protocol):
    def forget(self, customer_id: str) -> int: ...


class ErasureGuard:
    """Recent erasures of one shard: a hash of the customer id -> the input positions the erasure covers."""

    def __init__(self, saved: dict[str, dict[str, int]] | None = None, guard_s: float = GUARD_S) -> None:
        self.erased: dict[str, dict[str, int]] = dict(saved or {})
        self.guard_s = guard_s
        self._erased_at = dict.fromkeys(self.erased, time.monotonic())
        self._deleting: set[str] = set()
        """Erased by this process, no new profile since: the store may not have the delete yet, so never read it back."""

    def __bool__(self) -> bool:
        return bool(self.erased)

    def blocks_read(self, customer_id: str) -> bool:
        """Must this customer not be read back from the store (erased moments ago, the delete maybe not written)?"""
        return bool(self._deleting) and erasure_token(customer_id) in self._deleting

    def covers(self, customer_id: str, event: dict[str, Any]) -> bool:
        """Was this event, arriving by a visitor's path (``source|anonymous_id``), covered by a recent erasure?"""
        source = event.get(profiles.SOURCE) or ""
        if "|" not in source:
            return False  # the customer's own paths are in the new profile's offsets (``start_after``)
        covered = self.erased.get(erasure_token(customer_id))
        return covered is not None and covered.get(guarded_source(source), -1) >= event[profiles.SOURCE_OFFSET]

    def start_after(self, profile: profiles.Profile) -> None:
        """A new profile of a customer erased moments ago starts past every input position the erasure covered."""
        token = erasure_token(profile["customer_id"])
        covered = self.erased.get(token)
        if covered is not None:  # visitor paths stay out: the new profile must not name the old visitors
            profile["offsets"] = {src: off for src, off in covered.items() if "|" not in src}
            self._deleting.discard(token)  # memory holds the customer again: no read-back until it is written

    def expire(self) -> bool:
        """Drop guards older than ``guard_s`` of running time (by then the epochs holding the erased positions are
        long committed, so a restart cannot read them again); True if the shard record must be rewritten."""
        horizon = time.monotonic() - self.guard_s
        expired = [t for t, at in self._erased_at.items() if at <= horizon]
        for token in expired:
            del self.erased[token], self._erased_at[token]
            self._deleting.discard(token)
        return bool(expired)

    def carry_out(
        self,
        event: dict[str, Any],
        out: list[Effect],
        *,
        memory: _Memory,
        wheel: TimerWheel,
        models: _Models,
        keys: KeySpace,
        forget_stats: Callable[[profiles.Profile], None],
        emit_changes: bool = False,
    ) -> bool:
        """Forget the erasure request's customer, and say so downstream; False if it was carried out before a
        restart (its deletes, tombstones and record are already durable)."""
        customer_id: str = event["customer_id"]
        source, offset = event.get(profiles.SOURCE), event.get(profiles.SOURCE_OFFSET)
        token = erasure_token(customer_id)
        profile, blob = memory.take(customer_id)
        covered = profile["offsets"] if profile is not None else self.erased.get(token, {})
        if offset is not None and covered.get(source, -1) >= offset:  # type: ignore[arg-type]
            if profile is not None:
                memory.put_back(customer_id, profile, blob)
            return False
        guard = dict(self.erased.get(token, {}))
        anonymous_ids: set[str] = {event["anonymous_id"]} if event.get("anonymous_id") else set()
        hours: set[int] = set()
        detail: dict[str, Any] = {"event_id": event["event_id"], "profile": profile is not None}
        if profile is not None:
            for src, off in profile["offsets"].items():
                src = guarded_source(src)
                if off > guard.get(src, -1):
                    guard[src] = off
            anonymous_ids.update(profile["anonymous_ids"], profile.get("merged_anonymous_ids", ()))
            hours.update(profile.get(TIMER_HOURS, ()))
            hours.update(bucket_of(d) for d in profile["timers"].values())
            detail["scheduled_triggers"] = len(profile["scheduled"])
            forget_stats(profile)
        if offset is not None and source is not None:
            guard[source] = max(guard.get(source, -1), offset)
        self.erased[token] = guard
        self._erased_at[token] = time.monotonic()
        self._deleting.add(token)
        fired = wheel.fired_through
        detail["timer_entries"] = wheel.forget(customer_id, {h for h in hours if fired is None or h > fired})
        detail["pending_predictions"] = models.forget(customer_id)
        detail["visitor_links"] = len(anonymous_ids)
        out.append(Effect(SERVICE, customer_id, None))
        out.append(Effect(MARKETING, customer_id, None))
        out.append(Effect(DEL, keys.profile(customer_id), None))
        out.append(Effect(DEL, keys.claim(customer_id), None))  # an agent's claim in the console names them too
        out.extend(Effect(DEL, keys.anon(a), None) for a in sorted(anonymous_ids))
        out.append(Effect(AUDIT, customer_id, detail))
        if emit_changes:
            out.append(
                Effect(
                    CHANGES,
                    customer_id,
                    f"erased: profile, {len(anonymous_ids)} visitor links, "
                    f"{detail['timer_entries']} timers, {detail['pending_predictions']} pending predictions".encode(),
                )
            )
        return True
