"""Run ``crm-stream run`` as a real child process against test servers, and watch its progress in Redis."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import redis

from crm_stream.config.settings import KafkaSettings
from crm_stream.operators.profile.state import stored_profile

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "crm_stream.flows.cli"]


def engine_env(kafka: KafkaSettings, redis_url: str, recovery_dir: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        CRM_STREAM__SOURCE__KIND="kafka",
        CRM_STREAM__SINK__KIND="kafka",
        CRM_STREAM__STORE__KIND="redis",
        CRM_STREAM__STORE__URL=redis_url,
        CRM_STREAM__KAFKA__BOOTSTRAP_SERVERS=kafka.bootstrap_servers,
        CRM_STREAM__KAFKA__GROUP_ID=kafka.group_id,
        CRM_STREAM__RECOVERY__DIR=str(recovery_dir),
        CRM_STREAM__ENGINE__EPOCH_INTERVAL_MS="200",
        CRM_STREAM__AUDIT__KIND="file",  # erasures and CLI reads are audited: into the test's directory, not the repo
        CRM_STREAM__AUDIT__PATH=str(Path(recovery_dir).parent / "audit.jsonl"),
    )
    env.update({f"CRM_STREAM__KAFKA__TOPICS__{name.upper()}": topic for name, topic in vars(kafka.topics).items()})
    env.update(extra)
    return env


class Engine:
    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env = env
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            CLI + ["--log-level", "INFO", "run"], env=self.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT
        )

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=30)

    def assert_running(self) -> None:
        assert self.proc is not None and self.proc.poll() is None, f"engine exited: {self.log_tail()}"

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]


def applied_events(client: redis.Redis, shards: int = 16, prefix: str = "crm") -> int:
    blobs = client.mget([f"{prefix}:shard:{n}" for n in range(shards)])
    return sum(orjson.loads(b).get("applied", 0) for b in blobs if b)


def wait_until_settled(client: redis.Redis, engine: Engine, expected: int, timeout_s: float = 90.0) -> int:
    """Wait until ``expected`` events are applied (bounded); returns the last count seen."""
    deadline = time.monotonic() + timeout_s
    applied = -1
    while time.monotonic() < deadline:
        engine.assert_running()
        applied = applied_events(client)
        if applied >= expected:
            return applied
        time.sleep(0.2)
    return applied


def profiles_in_redis(client: redis.Redis, prefix: str = "crm") -> dict[str, dict]:
    keys = sorted(client.scan_iter(match=f"{prefix}:profile:*", count=1000))
    return {k.decode().rsplit(":", 1)[1]: stored_profile(orjson.loads(v)) for k, v in zip(keys, client.mget(keys)) if v}
