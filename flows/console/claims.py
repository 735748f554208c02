"""Claims: "I am calling this customer", so two agents do not call the same one.

A claim is one key per customer with a time to live (``console.claim_minutes``):
taken with ``SET NX`` (first agent wins), released only by its holder, and
gone by itself when the agent forgets. Every change is announced (Redis
pub/sub on ``{prefix}:claims``) so every console process shows it live.
``MemoryClaims`` is the same for the embedded demo, in one process.

A claim is ``{"customer_id", "agent", "expires_at"}`` (``expires_at`` in epoch
ms, wall time: claims are about people's time, not event time).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from crm_stream.operators.io import jsonutil
from crm_stream.operators.io.keys import KeySpace

if TYPE_CHECKING:
    from redis.client import PubSubWorkerThread

log = logging.getLogger(__name__)

Claim = dict[str, Any]
Listener = Callable[[Claim], None]
"""Called with a claim, or ``{"customer_id", "agent": None}`` when it is released."""


class ClaimBook(Protocol):
    def claim(self, customer_id: str, agent: str) -> tuple[bool, Claim]:
        """(taken, the claim now in force): not taken means another agent holds it. Re-claiming one's own extends it."""

    def release(self, customer_id: str, agent: str) -> bool:
        """Drop the agent's own claim; False if it was not theirs (or had expired)."""

    def holders(self, customer_ids: list[str]) -> dict[str, Claim]:
        """The claims in force among ``customer_ids``."""

    def listen(self, listener: Listener) -> None:
        """Call ``listener`` on every change, including those made by other processes."""

    def close(self) -> None: ...


def _released(customer_id: str) -> Claim:
    return {"customer_id": customer_id, "agent": None, "expires_at": None}


class MemoryClaims:
    """Claims in a dict, for one process (the embedded demo and tests); clock injected."""

    def __init__(self, ttl_s: float, clock: Callable[[], float] = time.time) -> None:
        self.ttl_s = ttl_s
        self.clock = clock
        self._claims: dict[str, Claim] = {}
        self._lock = threading.Lock()
        self._listeners: list[Listener] = []

    def _live(self, customer_id: str) -> Claim | None:
        held = self._claims.get(customer_id)
        if held is not None and held["expires_at"] <= self.clock() * 1000:
            del self._claims[customer_id]
            return None
        return held

    def claim(self, customer_id: str, agent: str) -> tuple[bool, Claim]:
        with self._lock:
            held = self._live(customer_id)
            if held is not None and held["agent"] != agent:
                return False, dict(held)
            new = {"customer_id": customer_id, "agent": agent, "expires_at": int((self.clock() + self.ttl_s) * 1000)}
            self._claims[customer_id] = new
        self._announce(new)
        return True, dict(new)

    def release(self, customer_id: str, agent: str) -> bool:
        with self._lock:
            held = self._live(customer_id)
            if held is None or held["agent"] != agent:
                return False
            del self._claims[customer_id]
        self._announce(_released(customer_id))
        return True

    def holders(self, customer_ids: list[str]) -> dict[str, Claim]:
        with self._lock:
            return {c: dict(h) for c in customer_ids if (h := self._live(c)) is not None}

    def listen(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def _announce(self, claim: Claim) -> None:
        for listener in self._listeners:
            listener(dict(claim))

    def close(self) -> None:
        pass


# Delete the key only if it still holds this agent's claim (another may have taken it after expiry).
_RELEASE_SCRIPT = """
local v = redis.call('GET', KEYS[1])
if v and cjson.decode(v)['agent'] == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
# Take the claim if free, extend it if it is the caller's own; return what is in force.
_CLAIM_SCRIPT = """
local v = redis.call('GET', KEYS[1])
if v and cjson.decode(v)['agent'] ~= ARGV[1] then return {0, v} end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return {1, ARGV[2]}
"""


class RedisClaims:
    """Claims in Redis (``{prefix}:claim:{customer_id}``), shared by every console process."""

    def __init__(self, client: Any, keys: KeySpace, ttl_s: float, clock: Callable[[], float] = time.time) -> None:
        self.client = client
        self.keys = keys
        self.ttl_s = ttl_s
        self.clock = clock
        self._claim = client.register_script(_CLAIM_SCRIPT)
        self._release = client.register_script(_RELEASE_SCRIPT)
        self._listeners: list[Listener] = []
        self._pubsub: Any = None
        self._thread: PubSubWorkerThread | None = None

    @classmethod
    def from_url(
        cls, url: str, keys: KeySpace, ttl_s: float, *, cluster: bool = False, connection: dict[str, Any] | None = None
    ) -> RedisClaims:
        """``connection``: the store's ACL user and TLS keywords (operators.io.interface.stores.redis_connection_kwargs)."""
        import redis

        client_class = redis.RedisCluster if cluster else redis.Redis
        return cls(client_class.from_url(url, socket_timeout=10, socket_connect_timeout=5, **(connection or {})), keys, ttl_s)

    def claim(self, customer_id: str, agent: str) -> tuple[bool, Claim]:
        ttl_ms = int(self.ttl_s * 1000)
        # The stored value names no customer (the key, pseudonymised with store.pii_key, already does).
        stored = {"agent": agent, "expires_at": int(self.clock() * 1000) + ttl_ms}
        taken, value = self._claim(keys=[self.keys.claim(customer_id)], args=[agent, jsonutil.dumps(stored), ttl_ms])
        claim = {**jsonutil.loads(value), "customer_id": customer_id}
        if taken:
            self.client.publish(self.keys.claims_channel, jsonutil.dumps(claim))
        return bool(taken), claim

    def release(self, customer_id: str, agent: str) -> bool:
        if not self._release(keys=[self.keys.claim(customer_id)], args=[agent]):
            return False
        self.client.publish(self.keys.claims_channel, jsonutil.dumps(_released(customer_id)))
        return True

    def holders(self, customer_ids: list[str]) -> dict[str, Claim]:
        if not customer_ids:
            return {}
        keys = [self.keys.claim(c) for c in customer_ids]
        # Redis Cluster refuses a multi-key MGET across slots; its client splits one per node instead.
        values = self.client.mget_nonatomic(keys) if hasattr(self.client, "mget_nonatomic") else self.client.mget(keys)
        return {c: {**jsonutil.loads(v), "customer_id": c} for c, v in zip(customer_ids, values) if v is not None}

    def listen(self, listener: Listener) -> None:
        self._listeners.append(listener)
        if self._thread is None:
            self._pubsub = self.client.pubsub(ignore_subscribe_messages=True)
            self._pubsub.subscribe(**{self.keys.claims_channel: self._on_message})
            self._thread = self._pubsub.run_in_thread(sleep_time=0.5, daemon=True, exception_handler=self._on_error)

    def _on_message(self, message: dict[str, Any]) -> None:
        try:
            claim = jsonutil.loads(message["data"])
        except Exception:  # not ours: someone else published on the channel
            log.warning("ignoring a malformed message on %s", self.keys.claims_channel)
            return
        for listener in self._listeners:
            listener(claim)

    def _on_error(self, exc: BaseException, pubsub: Any, thread: Any) -> None:
        log.warning("claims channel %s: %s; reconnecting", self.keys.claims_channel, exc)
        time.sleep(1.0)

    def close(self) -> None:
        if self._thread is not None:
            self._thread.stop()
            self._thread = None
        if self._pubsub is not None:
            self._pubsub.close()
        self.client.close()
