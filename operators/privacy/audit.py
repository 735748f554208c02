"""The audit stream: who read, exported or erased which customer's data, and when.

Every access to personal data outside the dataflow itself (``crm-stream
profile``, ``export-customer``, the agents' console) and every erasure the
engine carries out is one JSON record::

    {"at": "2026-11-22T16:40:00.123Z", "actor": "agent:alice", "action": "profile_read",
     "customer_id": "c-42", "via": "cli", "detail": {...}}

``action`` is one of ``ACTIONS``. Records go to the Kafka topic
``kafka.topics.audit`` (production), to a JSON-lines file, or only to the log,
as ``[audit]`` says. Writing is synchronous: an access that cannot be recorded
fails (``AuditUnavailable``) instead of happening unseen.
"""

from __future__ import annotations

import getpass
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from crm_stream.config.settings import Settings
from crm_stream.errors import UnavailableError
from crm_stream.operators.events.timeutil import to_rfc3339
from crm_stream.operators.io import jsonutil

log = logging.getLogger(__name__)

ACTIONS = frozenset({"profile_read", "export", "erasure", "alert_feedback", "alert_claim", "sign_in", "sign_in_failed"})


class AuditUnavailable(UnavailableError, RuntimeError):
    """The audit record could not be written; the access it describes must not go ahead."""


def default_actor(settings: Settings) -> str:
    if settings.audit.actor:
        return settings.audit.actor
    try:
        return f"user:{getpass.getuser()}"
    except Exception:  # no passwd entry (containers)
        return f"uid:{os.getuid()}"


def audit_record(
    actor: str, action: str, customer_id: str | None, *, via: str, at_ms: int, detail: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The one shape of an audit record (pure: time comes from the caller)."""
    if action not in ACTIONS:
        raise ValueError(f"audit action {action!r} is not one of {sorted(ACTIONS)}")
    record: dict[str, Any] = {"at": to_rfc3339(at_ms), "actor": actor, "action": action, "customer_id": customer_id, "via": via}
    if detail:
        record["detail"] = detail
    return record


class AuditLog:
    """Writes audit records to the configured stream; thread-safe; one per process or command."""

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Callable[[], float] = time.time,
        write: Callable[[bytes, str | None], None] | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self._lock = threading.Lock()
        self._producer: Any = None
        self._write = write or self._writer(settings)

    def record(
        self, actor: str, action: str, customer_id: str | None, *, via: str, detail: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        rec = audit_record(actor, action, customer_id, via=via, at_ms=int(self.clock() * 1000), detail=detail)
        line = jsonutil.dumps(rec)
        with self._lock:
            try:
                self._write(line, customer_id)
            except AuditUnavailable:
                raise
            except Exception as exc:
                raise AuditUnavailable(
                    f"could not write the audit record for {action} ({exc}): check [audit] "
                    f"kind={self.settings.audit.kind!r} and its destination"
                ) from exc
        log.info("audit %s", line.decode())
        return rec

    def _writer(self, settings: Settings) -> Callable[[bytes, str | None], None]:
        kind = settings.audit.kind
        if kind == "log":
            return lambda line, key: None
        if kind == "file":
            path = settings.audit.path

            def write_file(line: bytes, key: str | None) -> None:
                with open(path, "ab") as fh:
                    fh.write(line + b"\n")

            return write_file
        return self._write_kafka

    def _write_kafka(self, line: bytes, key: str | None) -> None:
        from confluent_kafka import Producer

        from crm_stream.operators.io.kafka import client_config

        if self._producer is None:
            self._producer = Producer({**client_config(self.settings.kafka), "enable.idempotence": True, "acks": "all"})
        failures: list[Any] = []
        self._producer.produce(
            self.settings.kafka.topics.audit, line, key, on_delivery=lambda err, msg: failures.append(err) if err else None
        )
        remaining = self._producer.flush(10.0)
        if failures or remaining:
            raise AuditUnavailable(
                f"Kafka at {self.settings.kafka.bootstrap_servers} did not take the audit record "
                f"on {self.settings.kafka.topics.audit!r} ({failures[0] if failures else 'timed out'})"
            )

    def close(self) -> None:
        if self._producer is not None:
            self._producer.flush(10.0)
