"""Connection security and secrets on real servers: Redis over TLS with an ACL user, pseudonymised and sealed data
at rest, and the real CLI at DEBUG level printing no secret and no personal data."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from crm_stream.config import settings as config
from crm_stream.config.settings import KafkaSettings, StoreSettings
from crm_stream.operators.io import jsonutil
from crm_stream.operators.io.keys import KeySpace
from crm_stream.operators.io.stores import StoreAccessDenied, open_store
from crm_stream.operators.privacy.log_redaction import RedactingFilter
from tests.events import event, lines, purchase
from tests.integration.conftest import _Server, free_port, redis_binary
from tests.integration.engine_process import CLI, ROOT

PASSWORD = "s3cret-Redis-pw-7f1c"
SASL_PASSWORD = "s3cret-Sasl-pw-90ab"
PII_KEY = "pii-key-0123456789abcdef0123456789abcdef"
USER = "crm_engine"


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_certs(where: Path) -> dict[str, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1 / localhost, signed by it."""
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=crm-stream test CA",
        cwd=where,
    )
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost", cwd=where
    )
    (where / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "san.ext",
        cwd=where,
    )
    return {name: where / name for name in ("ca.crt", "server.crt", "server.key")}


class TlsRedis(_Server):
    """redis-server on TLS only, the default user off, one ACL user limited to the ``crm:`` keys."""

    name = "redis-tls"

    def __init__(self, binary: str, certs: dict[str, Path], log_dir: str) -> None:
        super().__init__(binary, free_port(), log_dir)
        self.certs = certs

    def command(self) -> list[str]:
        return [
            self.binary, "--port", "0", "--tls-port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", str(self.log_path.parent), "--tls-cert-file", str(self.certs["server.crt"]),
            "--tls-key-file", str(self.certs["server.key"]), "--tls-ca-cert-file", str(self.certs["ca.crt"]),
            "--tls-auth-clients", "no", "--user", "default", "off",
            "--user", USER, "on", f">{PASSWORD}", "~crm:*", "resetchannels", "+@all", "-@dangerous",
        ]  # fmt: skip

    def client(self, **kw: object) -> redis.Redis:
        return redis.Redis(
            host="127.0.0.1",
            port=self.port,
            ssl=True,
            ssl_ca_certs=str(self.certs["ca.crt"]),
            username=USER,
            password=PASSWORD,
            socket_timeout=2,
            **kw,
        )  # type: ignore[arg-type]

    def ready(self) -> bool:
        try:
            return bool(self.client().ping())
        except redis.RedisError:
            return False


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsRedis]:
    if shutil.which("openssl") is None:
        pytest.skip("the openssl CLI is needed to make a throwaway CA")
    where = tmp_path_factory.mktemp("tls")
    server = TlsRedis(redis_binary(), make_certs(where), str(where))
    server.start()
    yield server
    server.stop()


def _store(server: TlsRedis, **kw: object) -> StoreSettings:
    base = dict(
        kind="redis",
        url=f"rediss://127.0.0.1:{server.port}/0",
        username=USER,
        password=PASSWORD,
        tls_ca_file=str(server.certs["ca.crt"]),
        retry_max_seconds=0.2,
    )
    base.update(kw)
    return StoreSettings(**base)  # type: ignore[arg-type]


def test_store_over_tls_as_an_acl_user_with_pseudonyms_and_sealed_values(tls_redis: TlsRedis) -> None:
    settings = _store(tls_redis, pii_key=PII_KEY)
    store, keys = open_store(settings, interactive=True), KeySpace.of(settings)
    assert store.ping()
    profile = {"customer_id": "alice@example.com", "monetary": 12.5}
    store.write({keys.profile("alice@example.com"): store.encode(profile)})
    assert store.decode(store.get_many([keys.profile("alice@example.com")])[0]) == profile
    assert [jsonutil.loads(v)["customer_id"] for _, v in store.scan(keys.profile_prefix)] == ["alice@example.com"]
    # At rest: neither the key name nor the value shows the id.
    admin = tls_redis.client()
    [name] = [k for k in admin.scan_iter(match="crm:profile:*")]
    assert b"alice" not in name and b"alice" not in admin.get(name)
    store.close()


def test_wrong_password_fails_at_once_with_what_to_fix(tls_redis: TlsRedis) -> None:
    store = open_store(_store(tls_redis, password="not-the-password"))  # the engine's store: it would retry outages forever
    with pytest.raises(StoreAccessDenied) as failed:
        store.ping()
    message = str(failed.value)
    assert "store.password" in message and "not-the-password" not in message and PASSWORD not in message


def test_an_untrusted_server_certificate_is_refused_with_what_to_fix(tls_redis: TlsRedis) -> None:
    store = open_store(_store(tls_redis, tls_ca_file=""))  # the system CAs never signed our throwaway CA
    with pytest.raises(StoreAccessDenied, match="store.tls_ca_file"):
        store.ping()


def test_the_acl_limits_the_engine_user_to_its_keys(tls_redis: TlsRedis) -> None:
    with pytest.raises(redis.exceptions.NoPermissionError):
        tls_redis.client().set("other:thing", b"x")


def _events(path: Path) -> None:
    angry = "THIRD time I write!!! Still no refund. Call me on +44 20 7946 0958 or mail jo.smith@example.com, card 4111 1111 1111 1111"
    evs = [
        event("ticket_opened", "c1", day=0.0, ticket_id="t1"),
        purchase("c1", day=0.1, amount=500.0),
        event("support_message", "c1", day=1.0, ticket_id="t1", text=angry, direction="inbound"),
        event("support_message", "c1", day=1.01, ticket_id="t1", text=angry + " AGAIN!!!", direction="inbound"),
        purchase("c2", day=1.2, amount=20.0),
    ]
    bad = b'{"type": "purchase", "customer_id": "c3", "note": "reach me at bob@example.org or 415-555-2671"}\n'
    path.write_bytes(lines(evs) + bad)


def test_cli_at_debug_level_prints_no_secret_and_no_personal_data(tls_redis: TlsRedis, tmp_path: Path) -> None:
    events, out = tmp_path / "events.jsonl", tmp_path / "out"
    _events(events)
    out.mkdir()
    env = dict(os.environ)
    env.update(
        CRM_STREAM__SOURCE__KIND="file",
        CRM_STREAM__SOURCE__PATH=str(events),
        CRM_STREAM__SINK__KIND="file",
        CRM_STREAM__SINK__PATH=str(out),
        CRM_STREAM__STORE__KIND="redis",
        CRM_STREAM__STORE__URL=f"rediss://{USER}:{PASSWORD}@127.0.0.1:{tls_redis.port}/0",  # a password in the URL
        CRM_STREAM__STORE__TLS_CA_FILE=str(tls_redis.certs["ca.crt"]),
        CRM_STREAM__STORE__PII_KEY=PII_KEY,
        CRM_STREAM__KAFKA__SECURITY_PROTOCOL="SASL_SSL",
        CRM_STREAM__KAFKA__SASL_MECHANISM="SCRAM-SHA-512",
        CRM_STREAM__KAFKA__SASL_USERNAME="crm",
        CRM_STREAM__KAFKA__SASL_PASSWORD=SASL_PASSWORD,
        CRM_STREAM__MODELS__SNAPSHOT_EVERY_S="0",
        CRM_STREAM__AUDIT__KIND="file",
        CRM_STREAM__AUDIT__PATH=str(tmp_path / "audit.jsonl"),  # not the repo's
    )
    env.pop("CRM_STREAM__STORE__PASSWORD", None)
    run = subprocess.run(CLI + ["--log-level", "DEBUG", "run"], env=env, cwd=ROOT, capture_output=True, timeout=180)
    assert run.returncode == 0, run.stderr.decode(errors="replace")[-3000:]
    shown = subprocess.run(CLI + ["--log-level", "DEBUG", "profile", "c1"], env=env, cwd=ROOT, capture_output=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert jsonutil.loads(shown.stdout)["customer_id"] == "c1"  # the CLI computes the pseudonym

    written = b"".join(p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file())
    everything = run.stdout + run.stderr + shown.stdout + shown.stderr + written
    assert b"DEBUG" in run.stderr  # the logs were on
    for secret in (PASSWORD, SASL_PASSWORD, PII_KEY):
        assert secret.encode() not in everything, secret
    for personal in (b"jo.smith@example.com", b"7946 0958", b"4111 1111", b"bob@example.org", b"555-2671"):
        assert personal not in everything, personal
    assert b"[email]" in written and b"[phone]" in written  # the alert excerpt and the dead letter, redacted

    admin = tls_redis.client()
    stored = {k: admin.get(k) for k in admin.scan_iter(match="crm:*")}
    assert any(k.startswith(b"crm:profile:") for k in stored)
    for key, value in stored.items():
        assert not key.endswith((b":c1", b":c2")), key
        assert b'"customer_id"' not in value and b"refund" not in value.lower(), key  # sealed: no JSON, no words


def test_librdkafka_logs_never_show_the_sasl_password(caplog: pytest.LogCaptureFixture) -> None:
    """librdkafka's own lines (debug on, config dumped, a failing connection) go through the engine's logger."""
    from confluent_kafka import Producer

    from crm_stream.operators.io.kafka import _config

    kafka = KafkaSettings(
        bootstrap_servers=f"127.0.0.1:{free_port()}",
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="PLAIN",
        sasl_username="crm",
        sasl_password=SASL_PASSWORD,
        extra={"debug": "security,broker,conf,generic"},
    )
    conf = _config(kafka, {})
    assert conf["sasl.password"] == SASL_PASSWORD and conf["security.protocol"] == "SASL_PLAINTEXT"
    with caplog.at_level(logging.DEBUG):
        producer = Producer(conf)
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            producer.poll(0.1)
        producer.flush(0.1)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "librdkafka" in " ".join(r.name for r in caplog.records) and text
    assert SASL_PASSWORD not in text  # librdkafka redacts it itself; operators/privacy/log_redaction.py would catch it otherwise
    assert SASL_PASSWORD not in repr(config.Settings(kafka=kafka).masked())
    assert RedactingFilter([SASL_PASSWORD]).clean(f"conf sasl.password={SASL_PASSWORD}") == "conf sasl.password=***"
