"""The Redis key layout: the one place that names keys (documented in the README).

    {prefix}:profile:{customer_id}   JSON blob: the customer's full profile (operators/profile/state.py)
    {prefix}:anon:{anonymous_id}     JSON blob: a visitor's buffered events, or its link to a customer
    {prefix}:shard:{n}               JSON blob: shard-level statistics (adaptive RFM thresholds, clocks, counters)
    {prefix}:timers:{n}:{hour}       JSON blob: {customer_id: deadline} of the shard's timers due in that hour
    {prefix}:model:{name}            bytes: the latest snapshot of an online model (operators/stages/learning.py)

No key is hash-tagged, so other services read them by these names; on Redis
Cluster they spread over all slots, and ``stores.RedisClusterStore`` writes a
batch in a crash-safe order by key kind (timers/model, then profile, then
anon/shard and deletes): keep that in mind when adding a kind of key.
    {prefix}:claim:{customer_id}     JSON: which agent claimed the customer in the console, expires (flows/console/claims.py)
    {prefix}:claims                  pub/sub channel: claims made and released, so every console shows them live

With ``store.pii_key`` set, ``{customer_id}`` and ``{anonymous_id}`` above are
their HMAC-SHA256 pseudonyms (operators/privacy/pii.py): the methods keep their
signatures and take the real id, so every caller (erasure included) names the
same key without knowing whether ids are pseudonymised.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from crm_stream.config.settings import StoreSettings
    from crm_stream.operators.privacy.pii import PiiKey


def shard_of(entity_id: str, shards: int) -> int:
    """Stable across processes and runs (Python's ``hash`` is salted per process)."""
    return zlib.crc32(entity_id.encode()) % shards


@dataclass(frozen=True)
class KeySpace:
    prefix: str = "crm"
    pii: PiiKey | None = field(default=None, repr=False, compare=False)
    """Pseudonymises ids in key names when set (``KeySpace.of`` sets it from ``store.pii_key``)."""

    @classmethod
    def of(cls, store: StoreSettings) -> KeySpace:
        """The key space the settings describe: prefix, and pseudonyms when a PII key is configured."""
        if not store.pii_key:
            return cls(store.key_prefix)
        from crm_stream.operators.privacy.pii import PiiKey

        return cls(store.key_prefix, PiiKey(store.pii_key))

    def profile(self, customer_id: str) -> str:
        if self.pii is not None:
            customer_id = self.pii.pseudonym(customer_id)  # cached: ~0.05 us after a customer's first key
        return f"{self.prefix}:profile:{customer_id}"

    def anon(self, anonymous_id: str) -> str:
        if self.pii is not None:
            anonymous_id = self.pii.pseudonym(anonymous_id)
        return f"{self.prefix}:anon:{anonymous_id}"

    def shard(self, shard: int) -> str:
        return f"{self.prefix}:shard:{shard}"

    def model(self, name: str) -> str:
        return f"{self.prefix}:model:{name}"

    def claim(self, customer_id: str) -> str:
        if self.pii is not None:
            customer_id = self.pii.pseudonym(customer_id)
        return f"{self.prefix}:claim:{customer_id}"

    @property
    def claims_channel(self) -> str:
        return f"{self.prefix}:claims"

    def timers(self, shard: int, hour: int) -> str:
        return f"{self.prefix}:timers:{shard}:{hour}"

    @property
    def profile_prefix(self) -> str:
        return f"{self.prefix}:profile:"
