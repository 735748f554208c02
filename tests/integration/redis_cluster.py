"""A real local Redis Cluster (3 primaries, no replicas) on loopback, for tests and benchmarks of ``store.kind = redis-cluster``.

Each node is a ``redis-server --cluster-enabled yes`` with no persistence and
its own free client and bus ports (``--cluster-port``: the default bus port,
client port + 10000, can fall outside the port range when the client port is
a high ephemeral one); ``redis-cli --cluster create`` assigns the 16384 slots.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from tests.integration.conftest import RedisServer, free_port


class ClusterNode(RedisServer):
    name = "redis-cluster-node"

    def __init__(self, binary: str, log_dir: str) -> None:
        super().__init__(binary, log_dir=log_dir)
        self.bus_port = free_port()

    def command(self) -> list[str]:
        return super().command() + [
            "--cluster-enabled", "yes", "--cluster-port", str(self.bus_port),
            "--cluster-config-file", str(self.log_path.parent / f"nodes-{self.port}.conf"), "--cluster-node-timeout", "5000",
        ]  # fmt: skip


class RedisCluster:
    """``start()`` the nodes and form the cluster; ``url`` is a seed node (the client discovers the rest)."""

    def __init__(self, redis_binary: str, nodes: int = 3, log_dir: str | None = None) -> None:
        self.log_dir = log_dir or tempfile.mkdtemp(prefix="crm-redis-cluster-")
        self.nodes = [ClusterNode(redis_binary, self.log_dir) for _ in range(nodes)]
        self.cli = shutil.which("redis-cli") or str(Path(redis_binary).with_name("redis-cli"))

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.nodes[0].port}/0"

    @property
    def pids(self) -> dict[str, int]:
        return {f"redis{i}": n.process.pid for i, n in enumerate(self.nodes) if n.process is not None}

    def start(self, timeout_s: float = 30.0) -> None:
        try:
            for node in self.nodes:
                node.start()
            created = subprocess.run(
                [
                    self.cli,
                    "--cluster",
                    "create",
                    *(f"127.0.0.1:{n.port}" for n in self.nodes),
                    "--cluster-replicas",
                    "0",
                    "--cluster-yes",
                ],
                capture_output=True,
                text=True,
                timeout=timeout_s,
            )
            if created.returncode != 0:
                raise RuntimeError(f"redis-cli --cluster create failed: {created.stdout[-1500:]} {created.stderr[-1500:]}")
            self._wait_ok(timeout_s)
        except BaseException:
            self.stop()
            raise

    def _wait_ok(self, timeout_s: float) -> None:
        import redis

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            states = []
            for node in self.nodes:
                with redis.Redis(port=node.port, socket_timeout=1) as client:
                    states.append(client.cluster("info").get("cluster_state"))
            if all(s == "ok" for s in states):
                return
            time.sleep(0.1)
        raise RuntimeError(f"Redis Cluster not ok within {timeout_s:.0f}s (node states {states}); logs in {self.log_dir}")

    def flushall(self) -> None:
        import redis

        for node in self.nodes:
            with redis.Redis(port=node.port) as client:
                client.flushall()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
