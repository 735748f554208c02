"""Privacy and security without servers: pseudonyms, sealing, what the profile and the outputs keep, settings."""

from __future__ import annotations

import logging
from dataclasses import replace

import pytest

from crm_stream.config import settings as config
from crm_stream.config.settings import ConfigError, KafkaSettings, StoreSettings
from crm_stream.operators.events.router import DEAD, Router
from crm_stream.operators.events.schema import Decoder
from crm_stream.operators.io import jsonutil
from crm_stream.operators.io.interface import DEADLETTER, SERVICE
from crm_stream.operators.io.kafka import client_config
from crm_stream.operators.io.keys import KeySpace
from crm_stream.operators.io.stores import redis_connection_kwargs
from crm_stream.operators.privacy.log_redaction import RedactingFilter
from crm_stream.operators.privacy.pii import PiiKey, PiiKeyError, SealedStore
from tests.events import event, purchase
from tests.unit.test_rules import SETTINGS, Harness

KEY = "k" * 40
OTHER_KEY = "o" * 40
ANGRY = "THIRD time!!! STILL no refund. Call +44 20 7946 0958 or mail jo@example.com. Card 4111 1111 1111 1111"


def test_keys_carry_pseudonyms_when_a_key_is_set() -> None:
    plain, hidden = KeySpace("crm"), KeySpace.of(StoreSettings(pii_key=KEY))
    assert plain.profile("c1") == "crm:profile:c1" and KeySpace.of(StoreSettings()) == plain
    assert hidden.profile("c1").startswith("crm:profile:") and "c1" not in hidden.profile("c1")[len("crm:profile:") :]
    assert hidden.profile("c1") == KeySpace.of(StoreSettings(pii_key=KEY)).profile("c1")  # stable across processes
    assert hidden.profile("c1") != KeySpace.of(StoreSettings(pii_key=OTHER_KEY)).profile("c1")
    assert hidden.anon("v1") != plain.anon("v1") and hidden.claim("c1") != plain.claim("c1")
    assert hidden.shard(3) == plain.shard(3) and hidden.model("anger") == plain.model("anger")
    assert KEY not in repr(hidden)


def test_sealed_values_open_only_under_their_key() -> None:
    key = PiiKey(KEY)
    sealed = key.seal(b'{"customer_id":"c1"}')
    assert b"c1" not in sealed and key.open(sealed) == b'{"customer_id":"c1"}'
    assert key.seal(b"x") != key.seal(b"x")  # a fresh nonce each time
    assert key.open(b'{"legacy":1}') == b'{"legacy":1}'  # written before the key was set
    with pytest.raises(PiiKeyError, match="CRM_STREAM__STORE__PII_KEY"):
        PiiKey(OTHER_KEY).open(sealed)
    with pytest.raises(PiiKeyError, match="integrity"):
        key.open(sealed[:-1] + bytes([sealed[-1] ^ 1]))
    with pytest.raises(ValueError, match="at least 32"):
        PiiKey("short")


class BytesStore:
    """What SealedStore wraps: a Redis-like store of bytes."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self.on_retry = None

    def encode(self, value: object) -> bytes:
        return value if isinstance(value, bytes) else jsonutil.dumps(value)

    def decode(self, stored: bytes) -> object:
        return jsonutil.loads(stored)

    def get_many(self, keys: list[str]) -> list[bytes | None]:
        return [self.data.get(k) for k in keys]

    def write(self, puts: dict[str, bytes], deletes: object = ()) -> None:
        self.data.update(puts)

    def scan(self, prefix: str):  # type: ignore[no-untyped-def]
        return iter(sorted((k, v) for k, v in self.data.items() if k.startswith(prefix)))


def test_sealed_store_round_trips_and_forwards_the_rest() -> None:
    inner = BytesStore()
    store = SealedStore(inner, PiiKey(KEY))
    store.write({"crm:profile:x": store.encode({"customer_id": "c1"}), "crm:model:m": store.encode(b"MODEL")})
    assert b"c1" not in inner.data["crm:profile:x"] and b"MODEL" not in inner.data["crm:model:m"]
    assert store.decode(store.get_many(["crm:profile:x"])[0]) == {"customer_id": "c1"}
    assert store.get_many(["crm:model:m", "nope"]) == [b"MODEL", None]
    assert [(k, store.decode(v)) for k, v in store.scan("crm:profile:")] == [("crm:profile:x", {"customer_id": "c1"})]
    store.on_retry = print  # runtime sets its metrics hook this way: it must reach the wrapped store
    assert inner.on_retry is print


def test_the_profile_keeps_no_support_text_and_the_alert_excerpt_is_redacted() -> None:
    h = Harness()
    h.feed(purchase("c1", day=0.0, amount=900.0), event("ticket_opened", "c1", day=0.5, ticket_id="t1"))
    h.feed(event("support_message", "c1", day=1.0, ticket_id="t1", text=ANGRY, direction="inbound"))
    [alert] = h.alerts("angry_customer")
    excerpt = alert["payload"]["excerpt"]
    assert "[phone]" in excerpt and "[email]" in excerpt and "7946" not in excerpt and "jo@" not in excerpt
    blob = jsonutil.dumps(h.shard.profiles["c1"]).decode()
    assert "no refund" not in blob.lower() and "THIRD" not in blob and "jo@example.com" not in blob
    [kept] = h.shard.profiles["c1"]["escalations"].values()
    assert set(kept) >= {"text", "rule_logodds"} and all(len(t) == 10 for t in kept["text"])  # hashed tokens


def test_the_model_learns_from_a_kept_digest_as_from_the_text() -> None:
    from crm_stream.models.anger.lexicon import score_message
    from crm_stream.models.anger.model import AngerModel

    text = "still broken!!! third time"
    by_text, by_digest = AngerModel(seed=1), AngerModel(seed=1)
    by_text.learn(text, score_message(text), True)
    by_digest.learn_digest(jsonutil.loads(jsonutil.dumps(AngerModel.digest(text, score_message(text)))), True)
    probe = "why is it still broken"
    assert by_text.model_proba(probe, score_message(probe)) == by_digest.model_proba(probe, score_message(probe))


def test_no_excerpt_when_turned_off() -> None:
    h = Harness(replace(SETTINGS, rules=replace(SETTINGS.rules, angry_excerpt_chars=0)))
    h.feed(event("support_message", "c1", day=1.0, ticket_id="t1", text=ANGRY, direction="inbound"))
    assert [a["payload"]["excerpt"] for a in h.alerts("angry_customer")] == [None]


@pytest.mark.parametrize("redact, kept", [(True, False), (False, True)])
def test_dead_letters_are_redacted_unless_turned_off(redact: bool, kept: bool) -> None:
    raw = b'{"type": "purchase", "note": "mail bob@example.org, card 4111-1111-1111-1111"}'
    out = Router(Decoder({}), 4, redact_deadletters=redact).route([("crm.purchases", 0, 7, raw)])
    [(destination, _, value)] = dict(out)[DEAD]
    record = jsonutil.loads(value)
    assert destination == DEADLETTER and (record["raw"] == raw.decode()) is kept
    if redact:
        assert record["raw"] == '{"type": "purchase", "note": "mail [email], card [card]"}'


def test_alert_reasons_and_payloads_are_redacted_whoever_wrote_them() -> None:
    from crm_stream.operators.rules.alerts import make_alert

    alert = make_alert(
        "k",
        "c1",
        0,
        situation="s",
        priority="low",
        score=0.1,
        reasons=["from jo@example.com"],
        payload={"note": "+1 (415) 555-2671"},
    )
    assert alert["reasons"] == ["from [email]"] and alert["payload"] == {"note": "[phone]"} and SERVICE


def test_log_filter_masks_secrets_and_personal_data_in_messages_and_tracebacks() -> None:
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(self.format(record))

    handler = Keep()
    handler.addFilter(RedactingFilter(["hunter2-password"]))
    log = logging.getLogger("test_privacy.filter")
    log.addHandler(handler)
    try:
        log.warning("connecting with %s for %s", "hunter2-password", "jo@example.com")
        try:
            raise RuntimeError("auth hunter2-password failed")
        except RuntimeError:
            log.exception("boom")
    finally:
        log.removeHandler(handler)
    text = "\n".join(records)
    assert "hunter2" not in text and "jo@example.com" not in text and "***" in text and "[email]" in text


def test_settings_mask_and_collect_every_secret() -> None:
    env = {
        "CRM_STREAM__STORE__PASSWORD": "redis-pw",
        "CRM_STREAM__STORE__PII_KEY": KEY,
        "CRM_STREAM__STORE__URL": "rediss://u:url-pw@h:6380/0",
        "CRM_STREAM__STORE__USERNAME": "u",
        "CRM_STREAM__KAFKA__SECURITY_PROTOCOL": "sasl_ssl",
        "CRM_STREAM__KAFKA__SASL_MECHANISM": "SCRAM-SHA-512",
        "CRM_STREAM__KAFKA__SASL_USERNAME": "crm",
        "CRM_STREAM__KAFKA__SASL_PASSWORD": "sasl-pw",
    }
    with pytest.raises(ConfigError, match="keep one"):  # a password in the URL and in store.password
        config.load(None, env=env)
    env["CRM_STREAM__STORE__URL"] = "rediss://h:6380/0"
    s = config.load(None, env=env)
    dumped = repr(s.masked())
    assert not any(secret in dumped for secret in ("redis-pw", KEY, "sasl-pw"))
    assert set(config.secret_values(s)) == {"redis-pw", KEY, "sasl-pw"}
    assert config.secret_values(replace(s, store=replace(s.store, password="", url="redis://u:url-pw@h/0"))) == sorted(
        ["url-pw", KEY, "sasl-pw"], key=len, reverse=True
    )
    conf = client_config(s.kafka)
    assert conf["security.protocol"] == "SASL_SSL" and conf["sasl.mechanism"] == "SCRAM-SHA-512"
    assert conf["sasl.username"] == "crm" and conf["sasl.password"] == "sasl-pw"
    assert redis_connection_kwargs(s.store) == {
        "username": "u",
        "password": "redis-pw",
        "ssl_cert_reqs": "required",
        "ssl_check_hostname": True,
    }


@pytest.mark.parametrize(
    "kafka, message",
    [
        (dict(security_protocol="TLS"), "not one of"),
        (dict(sasl_password="x"), "not SASL_SSL"),
        (dict(security_protocol="SASL_SSL"), "needs kafka.sasl_mechanism"),
        (dict(security_protocol="SASL_SSL", sasl_mechanism="PLAIN", sasl_username="u"), "needs kafka.sasl_username and"),
        (dict(security_protocol="SASL_SSL", sasl_mechanism="MD5"), "not one of"),
        (dict(security_protocol="PLAINTEXT", ssl_ca_location="/etc/hostname"), "use SSL or SASL_SSL"),
        (dict(security_protocol="SSL", ssl_ca_location="/nonexistent.pem"), "not a readable file"),
        (dict(sasl_username="u", extra={"sasl.username": "v"}), "keep one"),
    ],
)
def test_kafka_security_settings_are_validated(kafka: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config._validate_kafka_security(KafkaSettings(**kafka))


@pytest.mark.parametrize(
    "store, message",
    [
        (dict(url="redis://h/0", tls_ca_file="/etc/hostname"), "not rediss://"),
        (dict(url="rediss://h/0", tls_ca_file="/nonexistent.pem"), "not a readable file"),
        (dict(url="rediss://h/0", tls_cert_file="/etc/hostname"), "go together"),
        (dict(username="u"), "needs a password"),
        (dict(pii_key="short"), "at least 32"),
        (dict(kind="redis", require_pii_key=True), "CRM_STREAM__STORE__PII_KEY"),
    ],
)
def test_store_security_settings_are_validated(store: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config._validate_store_security(StoreSettings(**store))


def test_production_config_can_require_the_pii_key() -> None:
    production = config.CONFIG_DIR / "production.toml"
    with pytest.raises(ConfigError, match="PII_KEY"):
        config.load(production, env={"CRM_STREAM__STORE__REQUIRE_PII_KEY": "true"})
    s = config.load(production, env={"CRM_STREAM__STORE__REQUIRE_PII_KEY": "true", "CRM_STREAM__STORE__PII_KEY": KEY})
    assert KeySpace.of(s.store).pii is not None
