"""Stores of record: Redis for production, an in-process dict for the embedded default and replay.

Both take whole batches: one ``MGET`` to hydrate the customers of a batch that
are not in memory, one ``MULTI``/``EXEC`` pipeline per write. Never a round
trip per event (../shared/perf-facts.md: that caps a pipeline near 6 k/s).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Iterable, Iterator, Sequence

from config.settings import StoreSettings
from operators import jsonutil

log = logging.getLogger(__name__)
MGET_CHUNK = 2000
MSET_CHUNK = 100


class StoreUnavailable(RuntimeError):
    """The store could not be reached within the allowed time."""


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

    def __init__(self, url: str, *, backoff_max_s: float = 30.0, give_up_after_s: float | None = None,
                 on_retry: Callable[[str, Exception], None] | None = None) -> None:
        try:
            import redis
        except ImportError as exc:  # pragma: no cover - redis is a core dependency
            raise ImportError("the Redis store needs redis-py: pip install 'redis[hiredis]'") from exc
        self._redis = redis
        self.client = redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5, health_check_interval=30)
        self.url = url
        self.backoff_max_s = backoff_max_s
        self.give_up_after_s = give_up_after_s
        self.on_retry = on_retry

    def encode(self, value: Any) -> bytes:
        return value if isinstance(value, bytes) else jsonutil.dumps_state(value)  # bytes: a model snapshot

    def decode(self, stored: bytes) -> Any:
        return jsonutil.loads(stored)

    def _retrying(self, what: str, fn: Callable[[], object]) -> object:
        delay, started = 0.05, time.monotonic()
        while True:
            try:
                return fn()
            except (self._redis.ConnectionError, self._redis.TimeoutError, self._redis.BusyLoadingError) as exc:
                waited = time.monotonic() - started
                if self.give_up_after_s is not None and waited >= self.give_up_after_s:
                    raise StoreUnavailable(
                        f"Redis at {_safe(self.url)} did not answer {what} for {waited:.0f}s: is redis-server running and store.url right? ({exc})"
                    ) from exc
                log.warning("Redis %s failed (%s); retrying in %.2fs, nothing is dropped", what, exc, delay)
                if self.on_retry:
                    self.on_retry(what, exc)
                time.sleep(delay)
                delay = min(self.backoff_max_s, delay * 2)

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        out: list[bytes | None] = []
        for i in range(0, len(keys), MGET_CHUNK):
            chunk = list(keys[i : i + MGET_CHUNK])
            out.extend(self._retrying("MGET", lambda chunk=chunk: self.client.mget(chunk)))  # type: ignore[arg-type]
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
        keys = sorted(k.decode() for k in self._retrying("SCAN", lambda: list(self.client.scan_iter(match=f"{prefix}*", count=1000))))  # type: ignore[union-attr]
        for i in range(0, len(keys), MGET_CHUNK):
            chunk = keys[i : i + MGET_CHUNK]
            for key, value in zip(chunk, self.get_many(chunk)):
                if value is not None:
                    yield key, value

    def ping(self) -> bool:
        return bool(self._retrying("PING", self.client.ping))

    def close(self) -> None:
        self.client.close()


def _safe(url: str) -> str:
    from config.settings import _mask_url

    return _mask_url(url)


def open_store(settings: StoreSettings, *, interactive: bool = False) -> MemoryStore | RedisStore:
    if settings.kind == "memory":
        return MemoryStore()
    return RedisStore(settings.url, backoff_max_s=settings.retry_max_seconds, give_up_after_s=10.0 if interactive else None)
