"""Building the console's backend, and serving it with uvicorn.

- ``kafka_backend``: production (``crm-stream console``): alerts followed on
  the service-alert topic, profiles and claims in Redis, feedback to the
  control topic.
- ``embedded_backend``: beside a running engine in the same process
  (``crm-stream run --console``): alerts copied from its outputs, profiles from
  its store, claims in memory, feedback into its input; marketing triggers
  are shown too, in a section of their own (the demo has no marketing
  automation to show them).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from crm_stream.config.settings import ConfigError, Settings
from crm_stream.flows.console.app import ConsoleBackend, build_app
from crm_stream.flows.console.claims import MemoryClaims, RedisClaims
from crm_stream.flows.console.feed import AlertRing, ControlInbox, KafkaAlertFeed, KafkaControl, wall_clock_ms
from crm_stream.operators.io.interface import MARKETING, SERVICE, Store
from crm_stream.operators.io.keys import KeySpace
from crm_stream.operators.privacy.audit import AuditLog

log = logging.getLogger(__name__)


def kafka_backend(settings: Settings) -> tuple[ConsoleBackend, KafkaAlertFeed]:
    """Kafka + Redis; returns the backend and its (not yet started) alert feed."""
    from crm_stream.operators.io.stores import open_store, redis_connection_kwargs

    if settings.store.kind not in ("redis", "redis-cluster"):
        raise ConfigError(
            "the console reads profiles from Redis, but store.kind is 'memory': use a config whose "
            "[store] kind is 'redis' (e.g. config/production.toml), or `crm-stream run --console` for the demo"
        )
    cfg = settings.console
    ring = AlertRing(cfg.recent_alerts)
    feed = KafkaAlertFeed(settings.kafka, ring, backlog=cfg.backlog_alerts)
    store = open_store(settings.store, interactive=True)
    claims = RedisClaims.from_url(
        settings.store.url,
        KeySpace.of(settings.store),
        cfg.claim_minutes * 60,
        cluster=settings.store.kind == "redis-cluster",
        connection=redis_connection_kwargs(settings.store),
    )
    control = KafkaControl(settings.kafka)
    audit = AuditLog(settings)
    backend = ConsoleBackend(
        settings,
        ring,
        claims,
        store,
        control,
        audit,
        wall_clock_ms,
        closers=[store.close, claims.close, control.close, audit.close, feed.close],
    )
    return backend, feed


def embedded_backend(settings: Settings, store: Store | None, inbox: ControlInbox, ring: AlertRing) -> ConsoleBackend:
    """Beside the engine in this process; ``store`` is its store (None: open the configured Redis)."""
    from crm_stream.operators.io.stores import open_store

    if store is None:
        store = open_store(settings.store, interactive=True)
    claims = MemoryClaims(settings.console.claim_minutes * 60)
    audit = AuditLog(settings)

    def stream_now() -> int:
        # The demo's events are simulated, in the past: feedback stamped with the wall clock would move the
        # customer's last_seen (and recency) far into the simulated future. So: the stream's newest event time.
        return ring.newest_ts or wall_clock_ms()

    return ConsoleBackend(
        settings, ring, claims, store, inbox, audit, stream_now, closers=[audit.close], destinations=(SERVICE, MARKETING)
    )


class ConsoleServer:
    """uvicorn serving the console app, in this thread (``run``) or a daemon thread (``start``)."""

    def __init__(self, backend: ConsoleBackend, host: str, port: int) -> None:
        import uvicorn

        self.backend = backend
        config = uvicorn.Config(
            build_app(backend),
            host=host,
            port=port,
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=2,
            lifespan="off",
        )
        self.server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = self.server.config.host
        return f"http://{'localhost' if host in ('0.0.0.0', '127.0.0.1', '::') else host}:{self.port}/"

    @property
    def port(self) -> int:
        servers: Any = getattr(self.server, "servers", None) or []
        for server in servers:
            for sock in server.sockets:
                return int(sock.getsockname()[1])
        return int(self.server.config.port)

    def run(self) -> None:
        """Serve until Ctrl-C / SIGTERM (uvicorn handles the signals in the main thread)."""
        try:
            self.server.run()
        finally:
            self.backend.close()

    def start(self, timeout_s: float = 10.0) -> None:
        self._thread = threading.Thread(target=self.server.run, name="console-http", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(
                    f"the console could not listen on {self.server.config.host}:{self.server.config.port}: "
                    "is the port free? Pick another with --console-port"
                )
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        self.backend.close()


class EmbeddedConsole:
    """``crm-stream run --console``: the console beside the engine in this process.

    ``run_kwargs()`` are what ``flows.runtime.run`` needs for it: the configured reader with the console's
    feedback partition added, the configured outputs teed into the alert ring (service alerts and marketing
    triggers, every kind the engine raises), and (for the in-process
    store) the store instance the console reads. With no ``[console.password_hashes]`` an agent ``demo``
    gets a random password for this run, printed at start.
    """

    def __init__(self, settings: Settings, host: str, port: int) -> None:
        import dataclasses
        import secrets

        from crm_stream.flows.console.auth import hash_password
        from crm_stream.operators.io.stores import MemoryStore

        self.demo_password: str | None = None
        if not settings.console.password_hashes:
            self.demo_password = secrets.token_urlsafe(9)
            console = dataclasses.replace(settings.console, password_hashes={"demo": hash_password(self.demo_password)})
            settings = settings.replace(console=console)
        self.settings = settings
        self.ring = AlertRing(settings.console.recent_alerts)
        self.inbox = ControlInbox()
        self.store: Store | None = MemoryStore() if settings.store.kind == "memory" else None
        self.server = ConsoleServer(embedded_backend(settings, self.store, self.inbox, self.ring), host, port)

    def start(self) -> None:
        self.server.start()

    @property
    def url(self) -> str:
        return self.server.url

    def run_kwargs(self) -> dict[str, Any]:
        from crm_stream.flows.console.feed import InboxReader, TeeOutputs
        from crm_stream.flows.runtime import make_outputs_factory, make_reader

        outputs_factory = make_outputs_factory(self.settings)
        return {
            "reader": InboxReader(make_reader(self.settings), self.inbox),
            "outputs_factory": lambda worker: TeeOutputs(outputs_factory(worker), self.ring),
            "store": self.store,
        }

    def wait(self) -> None:
        """Keep serving after the engine's input ended, until Ctrl-C."""
        try:
            while True:
                time.sleep(3600)
        finally:
            self.server.stop()
