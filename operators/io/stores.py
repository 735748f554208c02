"""Stores of record: Redis for production, an in-process dict for the embedded default and replay.

Both take whole batches: one ``MGET`` to hydrate the customers of a batch that
are not in memory, one ``MULTI``/``EXEC`` pipeline per write. Never a round
trip per event (docs/stack-costs.md: that caps a pipeline near 6 k/s).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from functools import partial
from typing import Any

from crm_stream.config.settings import StoreSettings
from crm_stream.errors import UnavailableError
from crm_stream.operators.io import jsonutil

log = logging.getLogger(__name__)
MGET_CHUNK = 2000
MSET_CHUNK = 100


class StoreUnavailable(UnavailableError, RuntimeError):
    """The store could not be reached within the allowed time."""


class StoreAccessDenied(StoreUnavailable):
    """Redis refused us (wrong password, ACL, untrusted TLS certificate): a setting to fix, so never retried."""


class MemoryStore:
    """A dict behind a lock: the embedded default, replay, and tests.

    It keeps objects, not serialised bytes: nothing outlives the process, so
    there is no crash ordering to protect, and a million profiles need not be
    encoded (measured: serialising into ever-growing memory costs more than all
    the profile logic).
    """

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}
        self._lock = threading.Lock()
        self.writes = 0

    def encode(self, value: Any) -> Any:
        return value

    def decode(self, stored: Any) -> Any:
        return stored

    def get_many(self, keys: Sequence[str]) -> list[Any | None]:
        get = self.data.get
        return [get(k) for k in keys]

    def write(self, puts: dict[str, Any], deletes: Iterable[str] = ()) -> None:
        with self._lock:
            self.data.update(puts)
            for key in deletes:
                self.data.pop(key, None)
            self.writes += 1

    def scan(self, prefix: str) -> Iterator[tuple[str, Any]]:
        with self._lock:
            items = [(k, v) for k, v in self.data.items() if k.startswith(prefix)]
        return iter(sorted(items))

    def close(self) -> None:
        pass


class RedisStore:
    """Redis via redis-py (hiredis parser when installed).

    Writes retry with capped exponential backoff for as long as Redis is down:
    the dataflow stalls (back-pressure) rather than dropping state, and resumes
    when Redis returns. ``give_up_after`` bounds that for interactive commands.
    """

    def __init__(
        self,
        url: str,
        *,
        backoff_max_s: float = 30.0,
        give_up_after_s: float | None = None,
        on_retry: Callable[[str, Exception], None] | None = None,
        connection: dict[str, Any] | None = None,
    ) -> None:
        try:
            import redis
        except ImportError as exc:  # pragma: no cover - redis is a core dependency
            raise ImportError("the Redis store needs redis-py: pip install 'redis[hiredis]'") from exc
        self._redis = redis
        self.client = redis.Redis.from_url(
            url, socket_timeout=10, socket_connect_timeout=5, health_check_interval=30, **(connection or {})
        )  # AUTH user and TLS: redis_connection_kwargs
        self.url = url
        self.backoff_max_s = backoff_max_s
        self.give_up_after_s = give_up_after_s
        self.on_retry = on_retry

    def encode(self, value: Any) -> bytes:
        return value if isinstance(value, bytes) else jsonutil.dumps_state(value)  # bytes: a model snapshot

    def decode(self, stored: bytes) -> Any:
        return jsonutil.loads(stored)

    def _retrying(self, what: str, fn: Callable[[], Any]) -> Any:
        return _with_retries(
            self,
            what,
            fn,
            (self._redis.ConnectionError, self._redis.TimeoutError, self._redis.BusyLoadingError),
            server="Redis",
            hint="is redis-server running and store.url right?",
        )

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        out: list[bytes | None] = []
        for i in range(0, len(keys), MGET_CHUNK):
            chunk = list(keys[i : i + MGET_CHUNK])
            out.extend(self._retrying("MGET", partial(self.client.mget, chunk)))
        return out

    def write(self, puts: dict[str, bytes], deletes: Iterable[str] = ()) -> None:
        deletes = list(deletes)
        if not puts and not deletes:
            return

        items = list(puts.items())

        def run() -> None:
            pipe = self.client.pipeline(transaction=True)
            # Several MSETs of MSET_CHUNK keys in one MULTI/EXEC: as atomic as one, but redis-py packs a
            # command in time that grows faster than its key count (4 us a key at 1000, 0.5 us at 100).
            for i in range(0, len(items), MSET_CHUNK):
                pipe.mset(dict(items[i : i + MSET_CHUNK]))
            if deletes:
                pipe.delete(*deletes)
            pipe.execute()

        self._retrying("write", run)

    def scan(self, prefix: str) -> Iterator[tuple[str, bytes]]:
        keys = sorted(
            k.decode() for k in self._retrying("SCAN", lambda: list(self.client.scan_iter(match=f"{prefix}*", count=1000)))
        )
        for i in range(0, len(keys), MGET_CHUNK):
            chunk = keys[i : i + MGET_CHUNK]
            for key, value in zip(chunk, self.get_many(chunk)):
                if value is not None:
                    yield key, value

    def ping(self) -> bool:
        return bool(self._retrying("PING", self.client.ping))

    def close(self) -> None:
        self.client.close()


class RedisClusterStore(RedisStore):
    """Redis Cluster via redis-py's ``RedisCluster``: the same keys, batched per node, written in a safe order.

    Redis Cluster runs MULTI/EXEC and MSET only within one hash slot, and the
    key layout (operators/io/keys.py) is not hash-tagged: other services read
    ``{prefix}:profile:{id}`` as it is. So there is no transaction across a
    batch. What is kept instead:

    - every key is written whole in one SET: a profile blob, with the
      per-partition offsets it has applied (``profile.already_applied``), is
      never half-written;
    - a batch is written in three steps, each one plain pipeline per node (one
      round trip per node; keys grouped by the client's slot map, MOVED falls
      back to redis-py's redirect-following commands), and a step starts only
      after the one before succeeded: (1) timer-index buckets and model snapshots, (2) profiles,
      (3) visitor records (``anon``), shard blobs, then deletes.

    A crash between steps can leave: index entries for deadlines no profile
    holds yet (harmless: a stale entry is dropped when its bucket fires);
    profiles older than the batch (replayed from the checkpoint, as with one
    Redis); profiles newer than their shard blob: on replay those profiles skip
    the re-read events by their offsets, so each event still changes each
    profile exactly once, but the shard's statistics (adaptive RFM histograms,
    the ``applied`` count) miss that one batch. A visitor's buffer is consumed
    (step 3) only after the profile it was carried into is written (step 2).
    Reads are GETs, one pipeline per node; outputs stay first (effects.py).
    """

    def __init__(
        self,
        url: str,
        *,
        key_prefix: str = "crm",
        backoff_max_s: float = 30.0,
        give_up_after_s: float | None = None,
        on_retry: Callable[[str, Exception], None] | None = None,
        connection: dict[str, Any] | None = None,
    ) -> None:
        import redis
        from redis.cluster import RedisCluster

        self._redis = redis
        self._transient = (
            redis.ConnectionError,
            redis.TimeoutError,
            redis.BusyLoadingError,
            redis.exceptions.ClusterDownError,
            redis.exceptions.TryAgainError,
        )
        self.url = url
        self.backoff_max_s = backoff_max_s
        self.give_up_after_s = give_up_after_s
        self.on_retry = on_retry
        self._early = (f"{key_prefix}:timers:", f"{key_prefix}:model:")
        self._late = (f"{key_prefix}:anon:", f"{key_prefix}:shard:")
        # Connecting reads the slot map, so a down cluster must wait (and be retried) like any other call.
        self.client = self._retrying(
            "CLUSTER SLOTS",
            lambda: RedisCluster.from_url(
                url, socket_timeout=10, socket_connect_timeout=5, health_check_interval=30, **(connection or {})
            ),
        )  # AUTH user and TLS, for every node: redis_connection_kwargs

    def _retrying(self, what: str, fn: Callable[[], Any]) -> Any:
        return _with_retries(
            self,
            what,
            fn,
            self._transient,
            server="Redis Cluster",
            hint="are its nodes up and the cluster formed (redis-cli --cluster check)?",
        )

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        out: list[bytes | None] = []
        for i in range(0, len(keys), MGET_CHUNK):
            chunk = list(keys[i : i + MGET_CHUNK])
            out.extend(self._retrying("MGET", partial(self._get, chunk)))
        return out

    def _by_node(self, keys: Iterable[str]) -> dict[str, tuple[Any, list[str]]]:
        """Keys grouped by the primary that serves their slot, from the client's cached slot map."""
        from redis.cluster import key_slot

        node_of = self.client.nodes_manager.get_node_from_slot  # type: ignore[attr-defined]
        out: dict[str, tuple[Any, list[str]]] = {}
        for key in keys:
            node = node_of(key_slot(key.encode()))
            entry = out.get(node.name)
            if entry is None:
                entry = out[node.name] = (node, [])
            entry[1].append(key)
        return out

    def _redirected(self, exc: Exception) -> bool:
        """A slot moved (resharding, failover): refresh the slot map; the caller then goes through redis-py's
        redirect-following cluster commands."""
        moved = isinstance(exc, self._redis.exceptions.ResponseError) and str(exc).startswith(
            ("MOVED", "ASK", "TRYAGAIN", "CLUSTERDOWN")
        )
        if moved:
            self.client.nodes_manager.initialize()  # type: ignore[attr-defined]
        return moved

    def _get(self, keys: list[str]) -> list[bytes | None]:
        """GETs in one plain pipeline per node: redis-py's cluster pipeline costs ~2x more per command."""
        try:
            found: dict[str, bytes | None] = {}
            for node, node_keys in self._by_node(keys).values():
                pipe = node.redis_connection.pipeline(transaction=False)
                for key in node_keys:
                    pipe.get(key)
                found.update(zip(node_keys, pipe.execute()))
            return [found[k] for k in keys]
        except self._redis.exceptions.ResponseError as exc:
            if not self._redirected(exc):
                raise
            return self.client.mget_nonatomic(keys)  # type: ignore[attr-defined]

    def write(self, puts: dict[str, bytes], deletes: Iterable[str] = ()) -> None:
        deletes = list(deletes)
        early: dict[str, bytes] = {}
        middle: dict[str, bytes] = {}
        late: dict[str, bytes] = {}
        for key, value in puts.items():
            (early if key.startswith(self._early) else late if key.startswith(self._late) else middle)[key] = value
        for step, part, dels in (("write 1/3", early, ()), ("write 2/3", middle, ()), ("write 3/3", late, deletes)):
            if part or dels:
                self._retrying(step, partial(self._pipeline, part, dels))

    def _pipeline(self, puts: dict[str, bytes], deletes: Sequence[str]) -> None:
        """SETs and DELs in one plain pipeline per node (one round trip each). Retrying a step is safe: both are idempotent."""
        try:
            for node, node_keys in self._by_node([*puts, *deletes]).values():
                pipe = node.redis_connection.pipeline(transaction=False)
                for key in node_keys:
                    value = puts.get(key)
                    if value is None:
                        pipe.delete(key)
                    else:
                        pipe.set(key, value)
                pipe.execute()
        except self._redis.exceptions.ResponseError as exc:
            if not self._redirected(exc):
                raise
            if puts:
                self.client.mset_nonatomic(puts)  # type: ignore[attr-defined]
            if deletes:
                self.client.delete(*deletes)

    # The same walk as one node's: the cluster client's scan_iter visits every primary in turn.
    scan = RedisStore.scan


def _with_retries(
    store: Any, what: str, fn: Callable[[], object], transient: tuple[type[BaseException], ...], *, server: str, hint: str
) -> object:
    """Run ``fn``; retry transient failures with capped exponential backoff (for ever, or ``give_up_after_s``).

    Refused credentials or permissions and an untrusted TLS certificate are not outages: no retry fixes them,
    so they raise ``StoreAccessDenied`` at once (redis-py's AuthenticationError is a ConnectionError: checked first).
    """
    redis = store._redis
    delay, started = 0.05, time.monotonic()
    while True:
        try:
            return fn()
        except (redis.AuthenticationError, redis.exceptions.NoPermissionError) as exc:
            raise StoreAccessDenied(
                f"{server} at {_safe(store.url)} refused {what}: {exc}. Check store.username and store.password "
                "(CRM_STREAM__STORE__PASSWORD) and that user's ACL: it needs +get +mget +mset +set +del +multi +exec "
                "+scan +ping on the store.key_prefix keys"
            ) from None
        except transient as exc:
            if "CERTIFICATE_VERIFY_FAILED" in str(exc) or "certificate verify failed" in str(exc):
                raise StoreAccessDenied(
                    f"{server} at {_safe(store.url)}: the server's TLS certificate is not trusted ({exc}). Set "
                    "store.tls_ca_file to the CA that signed it (and check the host name in store.url)"
                ) from None
            waited = time.monotonic() - started
            if store.give_up_after_s is not None and waited >= store.give_up_after_s:
                raise StoreUnavailable(
                    f"{server} at {_safe(store.url)} did not answer {what} for {waited:.0f}s: {hint} ({exc})"
                ) from exc
            log.warning("%s %s failed (%s); retrying in %.2fs, nothing is dropped", server, what, exc, delay)
            if store.on_retry:
                store.on_retry(what, exc)
            time.sleep(delay)
            delay = min(store.backoff_max_s, delay * 2)


def _safe(url: str) -> str:
    from crm_stream.config.settings import _mask_url

    return _mask_url(url)


def redis_connection_kwargs(settings: StoreSettings) -> dict[str, Any]:
    """redis-py ``from_url`` keywords for the ACL user and TLS settings that are set (README: Privacy and security)."""
    kwargs: dict[str, Any] = {}
    if settings.username:
        kwargs["username"] = settings.username
    if settings.password:
        kwargs["password"] = settings.password
    if settings.url.startswith("rediss://"):
        kwargs["ssl_cert_reqs"] = "required"
        kwargs["ssl_check_hostname"] = settings.tls_check_hostname
        if settings.tls_ca_file:
            kwargs["ssl_ca_certs"] = settings.tls_ca_file
        if settings.tls_cert_file:
            kwargs["ssl_certfile"] = settings.tls_cert_file
            kwargs["ssl_keyfile"] = settings.tls_key_file
    return kwargs


def open_store(settings: StoreSettings, *, interactive: bool = False) -> MemoryStore | RedisStore:
    if settings.kind == "memory":
        return MemoryStore()
    store: RedisStore | RedisClusterStore
    if settings.kind == "redis-cluster":
        store = RedisClusterStore(
            settings.url,
            key_prefix=settings.key_prefix,
            backoff_max_s=settings.retry_max_seconds,
            give_up_after_s=10.0 if interactive else None,
            connection=redis_connection_kwargs(settings),
        )
    else:
        store = RedisStore(
            settings.url,
            backoff_max_s=settings.retry_max_seconds,
            give_up_after_s=10.0 if interactive else None,
            connection=redis_connection_kwargs(settings),
        )
    if settings.pii_key:  # values sealed at rest (operators/privacy/pii.py); key names are pseudonymised by KeySpace.of
        from crm_stream.operators.privacy.pii import PiiKey, SealedStore

        return SealedStore(store, PiiKey(settings.pii_key))  # type: ignore[return-value]
    log.warning(
        "store.pii_key is not set: customer ids are stored in the clear in Redis key names and values; "
        "set CRM_STREAM__STORE__PII_KEY in production (README: Privacy and security)"
    )
    return store
