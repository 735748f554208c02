"""redis-server and Tansu (a Kafka-protocol broker) for benchmarks, on loopback and free ports.

The integration tests' server classes are reused as they are, so a benchmark
runs against exactly what the tests run against: ``RedisServer`` (no
persistence) and ``TansuBroker`` (memory storage), both bound to 127.0.0.1,
stopped with SIGINT. ``running_servers()`` starts both and always stops them.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator

from tests.integration.conftest import RedisServer, TansuBroker, free_port, redis_binary, tansu_binary

__all__ = ["RedisServer", "TansuBroker", "free_port", "running_servers"]


@contextlib.contextmanager
def running_servers(log_dir: str | None = None) -> Iterator[tuple[RedisServer, TansuBroker]]:
    """A fresh redis-server and Tansu broker on free loopback ports; both stopped on exit, whatever happens."""
    log_dir = log_dir or tempfile.mkdtemp(prefix="crm-bench-servers-")
    redis_server = RedisServer(redis_binary(), log_dir=log_dir)
    broker = TansuBroker(tansu_binary(), log_dir=log_dir)
    try:
        redis_server.start()
        broker.start()
        yield redis_server, broker
    finally:
        broker.stop()
        redis_server.stop()
