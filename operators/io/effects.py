"""Applying a batch of effects in the one order that keeps restarts honest.

Effects are ``(target, key, value)`` tuples: ``put``/``del`` for the store,
``service``/``marketing``/``deadletter`` (and display-only ``changes``) for
outputs. Outputs are made durable first, then state is written in one atomic
store write. So whatever state the store holds, the alerts it implies have
been delivered; a crash between the two only means the state is older, its
events are replayed, and their alerts re-sent with the same ids.

``audit`` effects (an erasure the engine carried out) are written to the audit
stream between the two: after the tombstones are durable, before the store
forgets. A record is retried until written, so an erasure never happens unseen
(a crash in between repeats it, and its record, with the same ``event_id``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any, Protocol

from crm_stream.operators.io.interface import AUDIT, DEL, MARKETING, PUT, SERVICE, Effect, Outputs, Store
from crm_stream.operators.io.metrics import EngineMetrics
from crm_stream.operators.privacy.audit import AuditUnavailable

log = logging.getLogger(__name__)
ENGINE_ACTOR = "engine"
AUDIT_RETRY_MAX_S = 30.0
INGESTED = "ingested"
"""A marker effect ``(INGESTED, None, epoch_s)``: when the source read the batch behind these effects (metrics only)."""


class AuditWriter(Protocol):
    """What the sink needs of operators.privacy.audit.AuditLog."""

    def record(
        self, actor: str, action: str, customer_id: str | None, *, via: str, detail: dict[str, Any] | None = None
    ) -> dict[str, Any]: ...


class EffectsWriter:
    def __init__(
        self, outputs: Outputs, store: Store, metrics: EngineMetrics | None = None, audit: AuditWriter | None = None
    ) -> None:
        """``audit`` None (replay, tests): audit effects are dropped; the live engine always passes one."""
        self.outputs = outputs
        self.store = store
        self.metrics = metrics
        self.audit = audit

    def write(self, effects: Iterable[Effect]) -> None:
        puts: dict[str, bytes] = {}
        deletes: dict[str, None] = {}
        sent: dict[str, int] = {}
        audits: list[tuple[str | None, Any]] = []
        alerts: dict[str, list[bytes]] = {}
        ingested: float | None = None
        for target, key, value in effects:
            if target == PUT:
                puts[key] = value  # type: ignore[index]
                deletes.pop(key, None)  # type: ignore[arg-type]
            elif target == DEL:
                deletes[key] = None  # type: ignore[index]
                puts.pop(key, None)  # type: ignore[arg-type]
            elif target == AUDIT:
                audits.append((key, value))
            elif target == INGESTED:
                ingested = value if ingested is None or value < ingested else ingested
            else:
                self.outputs.send(target, key, value)
                if value is not None:  # a tombstone is not an alert
                    sent[target] = sent.get(target, 0) + 1
                    if target in (SERVICE, MARKETING) and self.metrics is not None:
                        alerts.setdefault(target, []).append(value)
                else:
                    sent.setdefault(target, 0)
        if sent:
            self.outputs.flush()
            if self.metrics is not None:
                for destination, n in sent.items():
                    if n:
                        self.metrics.outputs.labels(destination).inc(n)
                if alerts:
                    self.metrics.observe_alerts(alerts, ingested)
        if audits and self.audit is not None:
            for customer_id, detail in audits:
                self._record(customer_id, detail)
        if puts or deletes:
            started = time.perf_counter()
            try:
                self.store.write(puts, deletes)
            except Exception as exc:  # transient errors are retried inside the store (and counted there)
                if self.metrics is not None:
                    self.metrics.store_failed("write", exc, retried=False)
                raise
            if self.metrics is not None:
                self.metrics.store_write_seconds.observe(time.perf_counter() - started)
                self.metrics.store_write_keys.observe(len(puts) + len(deletes))
        if ingested is not None and self.metrics is not None:
            self.metrics.observe_batch(ingested)

    def _record(self, customer_id: str | None, detail: Any) -> None:
        delay = 0.5
        while True:
            try:
                self.audit.record(ENGINE_ACTOR, "erasure", customer_id, via="stream", detail=detail)  # type: ignore[union-attr]
                return
            except AuditUnavailable as exc:  # the erasure waits (back-pressure) rather than happening unseen
                log.warning("%s; retrying in %.1fs, the erasure waits for it", exc, delay)
                time.sleep(delay)
                delay = min(AUDIT_RETRY_MAX_S, delay * 2)

    def close(self) -> None:
        self.outputs.flush()
        self.outputs.close()
