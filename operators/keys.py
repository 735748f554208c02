"""The Redis key layout: the one place that names keys (documented in the README).

    {prefix}:profile:{customer_id}   JSON blob: the customer's full profile (operators/profile.py)
    {prefix}:anon:{anonymous_id}     JSON blob: a visitor's buffered events, or its link to a customer
    {prefix}:shard:{n}               JSON blob: shard-level statistics (adaptive RFM thresholds, clocks, counters)
    {prefix}:timers:{n}:{hour}       JSON blob: {customer_id: deadline} of the shard's timers due in that hour
    {prefix}:model:{name}            bytes: the latest snapshot of an online model (operators/learning.py)
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass


def shard_of(entity_id: str, shards: int) -> int:
    """Stable across processes and runs (Python's ``hash`` is salted per process)."""
    return zlib.crc32(entity_id.encode()) % shards


@dataclass(frozen=True)
class KeySpace:
    prefix: str = "crm"

    def profile(self, customer_id: str) -> str:
        return f"{self.prefix}:profile:{customer_id}"

    def anon(self, anonymous_id: str) -> str:
        return f"{self.prefix}:anon:{anonymous_id}"

    def shard(self, shard: int) -> str:
        return f"{self.prefix}:shard:{shard}"

    def model(self, name: str) -> str:
        return f"{self.prefix}:model:{name}"

    def timers(self, shard: int, hour: int) -> str:
        return f"{self.prefix}:timers:{shard}:{hour}"

    @property
    def profile_prefix(self) -> str:
        return f"{self.prefix}:profile:"
