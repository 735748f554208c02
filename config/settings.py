"""The one settings module: a TOML file, then environment overrides, validated once.

Every tunable of the engine lives here, so there is exactly one place to read
what can be configured (the README's configuration reference mirrors it).

Precedence, lowest first: the defaults below, the TOML file, then environment
variables named ``CRM_STREAM__<SECTION>__<KEY>`` (double underscores), e.g.
``CRM_STREAM__STORE__URL=redis://redis:6379/0``. Nested tables go deeper with
more underscores-pairs: ``CRM_STREAM__KAFKA__TOPICS__CLICKSTREAM=shop.clicks``.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crm_stream.errors import CrmStreamError

ENV_PREFIX = "CRM_STREAM__"
CONFIG_DIR = Path(__file__).resolve().parent
DEFAULT_CONFIG = CONFIG_DIR / "default.toml"
SECRET_MARKERS = ("password", "secret", "token", "sasl", "key")
MASK = "***"


class ConfigError(CrmStreamError, ValueError):
    """A setting is missing, mistyped or out of range; the message says which and what to do."""


@dataclass(frozen=True)
class EngineSettings:
    shards: int = 16
    batch_size: int = 1000
    batch_max_wait_ms: int = 50
    """The Kafka reader cuts a batch at batch_size records or once its first record has waited this long, and asks
    the broker to hold a fetch no longer (fetch.wait.max.ms). Lower: less latency, more fetch requests while idle."""
    epoch_interval_ms: int = 500
    base_currency: str = "USD"
    dedup_max_ids: int = 64
    interest_half_life_days: float = 14.0
    anonymous_max_events: int = 200
    sentiment_half_life_hours: float = 72.0
    churn_horizon_days: int = 30
    allowed_lateness_ms: int = 60_000
    """Timers fire when the slowest active partition's event time, minus this, passes their deadline."""
    idle_partition_s: float = 5.0
    """A partition silent this long (wall time) stops holding the event-time clock back."""
    partition_local: bool = True
    """Several processes: each reads its own share of the co-partitioned input partitions and holds the shards of
    their customers, so their events never cross processes (flows/placement.py). False: Bytewax places both."""
    retention_days: float = 0.0
    """Customers inactive this long (event time) leave memory; their profile stays in the store and is read back
    when they return or a timer of theirs is due. 0 keeps everyone in memory (the embedded default, replay)."""


@dataclass(frozen=True)
class ModelSettings:
    """The online churn and next-purchase models (models/hub.py)."""

    enabled: bool = True
    """Off: churn risk and next purchase come from the purchase-rhythm estimate (models/rhythm.py)."""
    seed: int = 0
    train_fraction: float = 1.0
    """Share of customers (a fixed hash sample) whose events become training points. Serving covers everyone;
    at hundreds of thousands of customers 0.1 still gives the models ample labels for a fraction of the cost."""
    snapshot_every_s: float = 120.0
    """How often (wall time) a changed model is snapshotted to the store; also at the end of input."""


@dataclass(frozen=True)
class RuleSettings:
    """Thresholds of the alert rules (operators/rules/), one group per rule."""

    angry_threshold: float = 0.5  # models.anger.lexicon.DEFAULT_ESCALATION_THRESHOLD (set with load.eval_anger)
    angry_cooldown_hours: float = 24.0
    angry_urgent_threshold: float = 0.85
    abandoned_min_signals: int = 8
    """Product views plus 2 x cart adds in one category that make an interest worth an offer."""
    abandoned_window_hours: float = 48.0
    abandoned_cooldown_days: float = 30.0
    """At most one offer per category per customer within this many days."""
    churn_threshold: float = 0.75
    """Lapse risk against the customer's own purchase rhythm (models/rhythm.py) from which churn_risk fires..."""
    churn_model_floor: float = 0.5
    """...if the online churn model (P no purchase within the horizon) also says at least this."""
    churn_check_gap_multiplier: float = 2.0
    churn_min_check_days: float = 7.0
    churn_daily_budget: int = 50
    """churn_risk service alerts (calls) per process per event-time day, to the customers with the most expected value
    at risk (operators/rules/churn_risk.py); the rest get a marketing trigger. 50: a small team's day of calls."""
    win_back_silence_days: float = 75.0
    win_back_min_purchases: int = 2
    replenishment_min_purchases: int = 3
    replenishment_max_cv: float = 0.25
    replenishment_lead_days: float = 2.0
    return_spike_min_refunds: int = 5
    return_spike_ratio: float = 3.0
    return_spike_window_days: float = 14.0
    segment_change_to: str = "high_value,at_risk,lost"
    """Comma-separated segments whose arrival triggers a segment_change."""
    angry_excerpt_chars: int = 140
    """Characters of the customer's message in an angry_customer alert's payload (``excerpt``), after e-mails,
    phones and card numbers are redacted (operators/privacy/redact.py). 0: no excerpt."""


@dataclass(frozen=True)
class GovernanceSettings:
    """What every marketing trigger must pass (operators/policy/governance.py)."""

    daily_cap: int = 1
    weekly_cap: int = 3
    low_frequency_weekly_cap: int = 1
    quiet_start_hour: int = 21
    quiet_end_hour: int = 8
    channel_preference: str = "marketing_email,marketing_push,marketing_sms"
    service_cooldown_hours: float = 24.0


@dataclass(frozen=True)
class SegmentSettings:
    """RFM segmentation. Value and activity thresholds adapt to the data; these bound them."""

    high_value_quantile: float = 0.8
    active_gap_multiplier: float = 1.5
    lost_gap_multiplier: float = 4.0
    min_active_days: float = 14.0
    max_active_days: float = 120.0
    new_customer_days: float = 30.0


@dataclass(frozen=True)
class SimulatorSettings:
    customers: int = 300
    days: int = 180
    seed: int = 7
    start: str = "2026-01-01T00:00:00Z"
    rate: float = 0.0
    """Events per second of wall time when run live (0 = as fast as possible)."""
    bad_rate: float = 0.0
    """Fraction of records deliberately malformed, to exercise the dead-letter path."""
    anonymous_share: float = 0.2
    """Fraction of customers who browse anonymously before they log in (identify)."""


@dataclass(frozen=True)
class TopicSettings:
    clickstream: str = "crm.clickstream"
    purchases: str = "crm.purchases"
    support: str = "crm.support"
    control: str = "crm.control"
    service_alerts: str = "crm.alerts.service"
    marketing_triggers: str = "crm.triggers.marketing"
    deadletter: str = "crm.deadletter"
    audit: str = "crm.audit"
    """Who read, exported or erased which customer, and when (operators/privacy/audit.py)."""

    def inputs(self) -> tuple[str, ...]:
        return (self.clickstream, self.purchases, self.support, self.control)


@dataclass(frozen=True)
class KafkaSettings:
    bootstrap_servers: str = "localhost:9092"
    group_id: str = "crm-stream"
    session_timeout_ms: int = 45000
    max_message_bytes: int = 1_000_000
    topics: TopicSettings = field(default_factory=TopicSettings)
    extra: Mapping[str, Any] = field(default_factory=dict)
    """Passed verbatim to librdkafka (any property not covered below). Masked when printed."""
    security_protocol: str = ""
    """PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL (librdkafka ``security.protocol``); empty: librdkafka's default."""
    sasl_mechanism: str = ""
    """PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER or GSSAPI (with a SASL_* protocol)."""
    sasl_username: str = ""
    sasl_password: str = ""
    """Set it from the environment: CRM_STREAM__KAFKA__SASL_PASSWORD. Masked when printed."""
    ssl_ca_location: str = ""
    """CA certificate file (PEM) that signed the brokers' certificates; empty: the system's CA store."""
    ssl_certificate_location: str = ""
    """Client certificate (PEM) for mutual TLS."""
    ssl_key_location: str = ""
    ssl_key_password: str = ""


@dataclass(frozen=True)
class SourceSettings:
    kind: str = "simulator"
    path: str = ""


@dataclass(frozen=True)
class SinkSettings:
    kind: str = "terminal"
    path: str = ""


@dataclass(frozen=True)
class StoreSettings:
    kind: str = "memory"
    url: str = "redis://localhost:6379/0"
    key_prefix: str = "crm"
    retry_max_seconds: float = 30.0
    username: str = ""
    """Redis ACL user (AUTH username password); empty: the URL's, or the ``default`` user."""
    password: str = ""
    """Set it from the environment (CRM_STREAM__STORE__PASSWORD) rather than in the URL. Masked when printed."""
    tls_ca_file: str = ""
    """With a rediss:// URL: CA certificate (PEM) that signed the server's; empty: the system's CA store."""
    tls_cert_file: str = ""
    """With a rediss:// URL: client certificate (PEM), for servers that require one (tls-auth-clients yes)."""
    tls_key_file: str = ""
    tls_check_hostname: bool = True
    """Verify that the server's certificate names the host in the URL."""
    pii_key: str = ""
    """Secret (>= 32 characters) that pseudonymises ids in key names and encrypts stored values (operators/privacy/pii.py).
    Set it from the environment: CRM_STREAM__STORE__PII_KEY. Empty: ids and values stored in the clear."""
    require_pii_key: bool = False
    """Refuse to start with a Redis store and no pii_key (production.toml shows it, commented: turn it on once the key is in place)."""


@dataclass(frozen=True)
class MetricsSettings:
    port: int = 0
    """HTTP port for /metrics, /healthz and /readyz (0: off)."""
    host: str = "0.0.0.0"


@dataclass(frozen=True)
class AuditSettings:
    """Where access to personal data is recorded (operators/privacy/audit.py)."""

    kind: str = "file"
    """kafka: the kafka.topics.audit topic; file: JSON lines appended to ``path``; log: the Python log only."""
    path: str = "audit.jsonl"
    actor: str = ""
    """Who acts when a command does not say (default: the OS user running it)."""


@dataclass(frozen=True)
class ConsoleSettings:
    """The agents' web console (flows/console/): who may sign in, and what it shows."""

    host: str = "127.0.0.1"
    port: int = 8080
    password_hashes: Mapping[str, str] = field(default_factory=dict)
    """Agent name -> scrypt hash of the agent's password (make one: ``crm-stream console-password NAME``). Masked."""
    session_secret: str = ""
    """Signs session tokens; empty: a random one per process (sign-ins end when the console restarts)."""
    session_hours: float = 10.0
    claim_minutes: float = 15.0
    """How long a claim on a customer holds before another agent may take it."""
    recent_alerts: int = 1000
    """Alerts kept in memory for the page and ``GET /alerts``."""
    backlog_alerts: int = 200
    """On start, re-read up to this many of the newest alerts per partition of the service-alert topic."""


@dataclass(frozen=True)
class PrivacySettings:
    """What personal data may leave the engine (README: Privacy and security)."""

    redact_deadletters: bool = True
    """Redact e-mails, phones and card numbers from dead-letter records' ``raw`` and ``reason`` (operators/privacy/redact.py).
    False keeps ``raw`` byte for byte (the contract's "original bytes as text"), for debugging a producer."""


@dataclass(frozen=True)
class RecoverySettings:
    dir: str = ""
    """Bytewax recovery directory (source offsets per epoch). Empty: no recovery."""


@dataclass(frozen=True)
class Settings:
    engine: EngineSettings = field(default_factory=EngineSettings)
    segments: SegmentSettings = field(default_factory=SegmentSettings)
    rules: RuleSettings = field(default_factory=RuleSettings)
    models: ModelSettings = field(default_factory=ModelSettings)
    governance: GovernanceSettings = field(default_factory=GovernanceSettings)
    currency_rates: Mapping[str, float] = field(default_factory=dict)
    simulator: SimulatorSettings = field(default_factory=SimulatorSettings)
    source: SourceSettings = field(default_factory=SourceSettings)
    sink: SinkSettings = field(default_factory=SinkSettings)
    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    store: StoreSettings = field(default_factory=StoreSettings)
    recovery: RecoverySettings = field(default_factory=RecoverySettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    audit: AuditSettings = field(default_factory=AuditSettings)
    privacy: PrivacySettings = field(default_factory=PrivacySettings)
    console: ConsoleSettings = field(default_factory=ConsoleSettings)

    def masked(self) -> dict[str, Any]:
        """The settings as a plain dict with secrets replaced, safe to log or print."""
        return _mask(dataclasses.asdict(self))

    def replace(self, **sections: Any) -> Settings:
        return dataclasses.replace(self, **sections)


_CHOICES = {
    ("source", "kind"): ("simulator", "kafka", "file"),
    ("sink", "kind"): ("terminal", "kafka", "file", "null"),
    ("store", "kind"): ("memory", "redis", "redis-cluster"),
    ("audit", "kind"): ("kafka", "file", "log"),
}


def load(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Read the defaults, then ``path`` (TOML), then ``env`` overrides; validate."""
    data: dict[str, Any] = {}
    for source in ([DEFAULT_CONFIG] if path is None else []) + ([Path(path)] if path else []):
        try:
            with open(source, "rb") as fh:
                _deep_update(data, tomllib.load(fh))
        except FileNotFoundError:
            raise ConfigError(f"config file {source} does not exist: pass an existing TOML file (see config/*.toml)") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {source} is not valid TOML: {exc}") from None
    _deep_update(data, _env_overrides(os.environ if env is None else env))
    settings = _build(Settings, data, "")
    _validate(settings)
    return settings


def _env_overrides(env: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX):
            continue
        path = [p.lower() for p in name[len(ENV_PREFIX) :].split("__") if p]
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value  # a string: _build coerces it to the field's type
    return out


def _deep_update(base: dict[str, Any], new: Mapping[str, Any]) -> None:
    for key, value in new.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _deep_update(base[key], value)
        else:
            base[key] = dict(value) if isinstance(value, Mapping) else value


def _build(cls: type, data: Mapping[str, Any], where: str) -> Any:
    if not isinstance(data, Mapping):
        raise ConfigError(f"[{where}] must be a table, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown setting {where + '.' if where else ''}{unknown[0]}: allowed keys here are {', '.join(sorted(fields))}"
        )
    kwargs: dict[str, Any] = {}
    defaults = cls()
    for name, value in data.items():
        key = f"{where}.{name}" if where else name
        default = getattr(defaults, name)
        if dataclasses.is_dataclass(default):
            kwargs[name] = _build(type(default), value, key)
        elif isinstance(default, Mapping):
            if not isinstance(value, Mapping):
                raise ConfigError(f"{key} must be a table, got {value!r}")
            kwargs[name] = {k: (_coerce(f"{key}.{k}", v, 0.0) if name == "currency_rates" else v) for k, v in value.items()}
        else:
            kwargs[name] = _coerce(key, value, default)
    return cls(**kwargs)


def _coerce(key: str, value: Any, default: Any) -> Any:
    kind = type(default)
    if isinstance(value, str) and kind is not str:
        text = value.strip()
        try:
            if kind is bool:
                if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError
                return text.lower() in ("true", "1", "yes")
            return kind(text)
        except ValueError:
            raise ConfigError(f"{key} = {value!r} is not a valid {kind.__name__}") from None
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(f"{key} = {value!r} must be a {kind.__name__} (default {default!r})")
    return value


def _validate(s: Settings) -> None:
    for (section, name), allowed in _CHOICES.items():
        value = getattr(getattr(s, section), name)
        if value not in allowed:
            raise ConfigError(f"{section}.{name} = {value!r} is not one of: {', '.join(allowed)}")
    positive = {
        "engine.shards": s.engine.shards,
        "engine.batch_size": s.engine.batch_size,
        "engine.batch_max_wait_ms": s.engine.batch_max_wait_ms,
        "engine.epoch_interval_ms": s.engine.epoch_interval_ms,
        "engine.dedup_max_ids": s.engine.dedup_max_ids,
        "engine.interest_half_life_days": s.engine.interest_half_life_days,
        "engine.sentiment_half_life_hours": s.engine.sentiment_half_life_hours,
        "engine.churn_horizon_days": s.engine.churn_horizon_days,
        "simulator.customers": s.simulator.customers,
        "simulator.days": s.simulator.days,
        "segments.min_active_days": s.segments.min_active_days,
    }
    for key, value in positive.items():
        if value <= 0:
            raise ConfigError(f"{key} = {value!r} must be greater than 0")
    for name in ("quiet_start_hour", "quiet_end_hour"):
        if not 0 <= getattr(s.governance, name) <= 23:
            raise ConfigError(f"governance.{name} = {getattr(s.governance, name)!r} must be an hour 0..23")
    channels = [c.strip() for c in s.governance.channel_preference.split(",") if c.strip()]
    if not channels or any(c not in ("marketing_email", "marketing_push", "marketing_sms") for c in channels):
        raise ConfigError(
            f"governance.channel_preference = {s.governance.channel_preference!r}: a comma-separated list of "
            "marketing_email, marketing_push, marketing_sms"
        )
    if not 0 <= s.metrics.port <= 65535:
        raise ConfigError(f"metrics.port = {s.metrics.port!r} must be a TCP port (0 turns the endpoints off)")
    if not 0 <= s.console.port <= 65535:
        raise ConfigError(f"console.port = {s.console.port!r} must be a TCP port")
    for agent, hashed in s.console.password_hashes.items():
        if not isinstance(hashed, str) or not hashed.startswith("scrypt$"):
            raise ConfigError(
                f"console.password_hashes.{agent} must be a hash made by `crm-stream console-password {agent}`, "
                "not a plain password"
            )
    if s.console.claim_minutes <= 0 or s.console.session_hours <= 0 or s.console.recent_alerts <= 0:
        raise ConfigError("console.claim_minutes, console.session_hours and console.recent_alerts must be greater than 0")
    if not 0.0 < s.models.train_fraction <= 1.0:
        raise ConfigError(f"models.train_fraction = {s.models.train_fraction!r} must be in (0, 1]")
    if not 0.0 < s.segments.high_value_quantile < 1.0:
        raise ConfigError(f"segments.high_value_quantile = {s.segments.high_value_quantile!r} must be between 0 and 1")
    if s.segments.max_active_days < s.segments.min_active_days:
        raise ConfigError("segments.max_active_days must be >= segments.min_active_days")
    if len(s.engine.base_currency) != 3 or not s.engine.base_currency.isalpha():
        raise ConfigError(f"engine.base_currency = {s.engine.base_currency!r} must be an ISO 4217 code such as USD")
    for code, rate in s.currency_rates.items():
        if len(code) != 3 or not code.isupper() or not rate > 0:
            raise ConfigError(
                f"currency_rates.{code} = {rate!r}: keys are ISO 4217 codes (upper case), values positive rates to {s.engine.base_currency}"
            )
    if s.source.kind == "file" and not s.source.path:
        raise ConfigError("source.kind = 'file' needs source.path (a JSON-lines file of contract events)")
    if s.sink.kind == "file" and not s.sink.path:
        raise ConfigError("sink.kind = 'file' needs sink.path (a directory for alerts/triggers/deadletter files)")
    if s.store.kind in ("redis", "redis-cluster") and not s.store.url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError(f"store.url = {_mask_url(s.store.url)!r} must start with redis://, rediss:// or unix://")
    if s.rules.churn_daily_budget < 0:
        raise ConfigError(
            f"rules.churn_daily_budget = {s.rules.churn_daily_budget!r} must be >= 0 (service calls a day; 0 sends every churn alert to marketing)"
        )
    if s.rules.angry_excerpt_chars < 0:
        raise ConfigError(f"rules.angry_excerpt_chars = {s.rules.angry_excerpt_chars!r} must be >= 0 (0: no excerpt)")
    _validate_store_security(s.store)
    _validate_kafka_security(s.kafka)


KAFKA_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER", "GSSAPI")
# First-class Kafka security settings -> the librdkafka property each one sets.
KAFKA_SECURITY_PROPERTIES = {
    "security_protocol": "security.protocol",
    "sasl_mechanism": "sasl.mechanism",
    "sasl_username": "sasl.username",
    "sasl_password": "sasl.password",
    "ssl_ca_location": "ssl.ca.location",
    "ssl_certificate_location": "ssl.certificate.location",
    "ssl_key_location": "ssl.key.location",
    "ssl_key_password": "ssl.key.password",
}


def _validate_store_security(store: StoreSettings) -> None:
    tls_files = {"tls_ca_file": store.tls_ca_file, "tls_cert_file": store.tls_cert_file, "tls_key_file": store.tls_key_file}
    for name, path in tls_files.items():
        if path and not store.url.startswith("rediss://"):
            raise ConfigError(f"store.{name} is set but store.url is not rediss://: use rediss://host:port/db for TLS")
        if path and not Path(path).is_file():
            raise ConfigError(f"store.{name} = {path!r} is not a readable file: give the PEM file's path")
    if bool(store.tls_cert_file) != bool(store.tls_key_file):
        raise ConfigError("store.tls_cert_file and store.tls_key_file go together (client certificate and its key)")
    url_password = "@" in store.url and ":" in store.url.split("://", 1)[-1].rsplit("@", 1)[0]
    if store.password and url_password:
        raise ConfigError(
            "store.password and a password in store.url are both set (the URL's would win): keep one, "
            "preferably store.password from CRM_STREAM__STORE__PASSWORD"
        )
    if store.username and not (store.password or url_password):
        raise ConfigError(f"store.username = {store.username!r} needs a password: set CRM_STREAM__STORE__PASSWORD")
    if store.pii_key and len(store.pii_key) < 32:
        raise ConfigError(
            f"store.pii_key has {len(store.pii_key)} characters; use at least 32 random ones "
            "(e.g. `openssl rand -hex 32`), set as CRM_STREAM__STORE__PII_KEY"
        )
    if store.require_pii_key and store.kind != "memory" and not store.pii_key:
        raise ConfigError(
            "store.require_pii_key is true but no key is set: export CRM_STREAM__STORE__PII_KEY "
            "(>= 32 random characters, e.g. `openssl rand -hex 32`; keep it in your secret store)"
        )


def _validate_kafka_security(kafka: KafkaSettings) -> None:
    extra = {str(k).lower(): v for k, v in kafka.extra.items()}
    for name, prop in KAFKA_SECURITY_PROPERTIES.items():
        if getattr(kafka, name) and prop in extra:
            raise ConfigError(f'kafka.{name} and kafka.extra."{prop}" both set {prop}: keep one')
    protocol = (kafka.security_protocol or str(extra.get("security.protocol", ""))).upper()
    if protocol and protocol not in KAFKA_PROTOCOLS:
        raise ConfigError(f"kafka.security_protocol = {protocol!r} is not one of: {', '.join(KAFKA_PROTOCOLS)}")
    mechanism = (kafka.sasl_mechanism or str(extra.get("sasl.mechanism", extra.get("sasl.mechanisms", "")))).upper()
    if mechanism and mechanism not in SASL_MECHANISMS:
        raise ConfigError(f"kafka.sasl_mechanism = {mechanism!r} is not one of: {', '.join(SASL_MECHANISMS)}")
    sasl = protocol.startswith("SASL_")
    if (kafka.sasl_mechanism or kafka.sasl_username or kafka.sasl_password) and not sasl:
        raise ConfigError(
            "kafka.sasl_* is set but kafka.security_protocol is not SASL_SSL (or SASL_PLAINTEXT): "
            'set kafka.security_protocol = "SASL_SSL"'
        )
    if sasl and not mechanism:
        raise ConfigError(f"kafka.security_protocol = {protocol!r} needs kafka.sasl_mechanism (e.g. SCRAM-SHA-512)")
    if sasl and mechanism in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"):
        if not (kafka.sasl_username or extra.get("sasl.username")) or not (kafka.sasl_password or extra.get("sasl.password")):
            raise ConfigError(
                f"kafka.sasl_mechanism = {mechanism!r} needs kafka.sasl_username and kafka.sasl_password "
                "(the password from the environment: CRM_STREAM__KAFKA__SASL_PASSWORD)"
            )
    ssl_files = ("ssl_ca_location", "ssl_certificate_location", "ssl_key_location")
    for name in ssl_files:
        path = getattr(kafka, name)
        if path and protocol not in ("SSL", "SASL_SSL"):
            raise ConfigError(f"kafka.{name} is set but kafka.security_protocol is {protocol or 'unset'}: use SSL or SASL_SSL")
        if path and not Path(path).is_file():
            raise ConfigError(f"kafka.{name} = {path!r} is not a readable file: give the PEM file's path")


def kafka_security_config(kafka: KafkaSettings) -> dict[str, str]:
    """The librdkafka properties of the first-class security settings that are set (``security.protocol`` upper-cased)."""
    out = {prop: str(getattr(kafka, name)) for name, prop in KAFKA_SECURITY_PROPERTIES.items() if getattr(kafka, name)}
    for prop in ("security.protocol", "sasl.mechanism"):
        if prop in out:
            out[prop] = out[prop].upper()
    return out


def secret_values(s: Settings) -> list[str]:
    """Every secret the settings hold, as written (for masking log lines; see operators/secrets_log.py)."""
    found: list[str] = []

    def walk(value: Any, key: str) -> None:
        if isinstance(value, dict):
            secret = bool(key) and any(m in key.lower() for m in SECRET_MARKERS)
            for k, v in value.items():
                walk(v, key if secret else str(k))
        elif isinstance(value, str) and value:
            if any(m in key.lower() for m in SECRET_MARKERS) and key.lower() not in _NOT_SECRET:
                found.append(value)
            elif "://" in value and "@" in value:
                password = value.split("://", 1)[1].rsplit("@", 1)[0].partition(":")[2]
                if password:
                    found.append(password)

    walk(dataclasses.asdict(s), "")
    return sorted(set(found), key=len, reverse=True)


# Setting names that contain a secret marker but hold no secret: shown in dumps, and a common word like
# "crm" (the key prefix) is not blanked out of every log line.
_NOT_SECRET = frozenset(("key_prefix", "require_pii_key", "ssl_key_location", "tls_key_file", "sasl_mechanism", "sasl_username"))


def _mask(value: Any, key: str = "") -> Any:
    if isinstance(value, dict):
        secret = bool(key) and any(m in key.lower() for m in SECRET_MARKERS)  # a secret table: every value in it
        return {k: _mask(v, key if secret else str(k)) for k, v in value.items()}
    if isinstance(value, str):
        if value and key.lower() not in _NOT_SECRET and any(m in key.lower() for m in SECRET_MARKERS):
            return MASK
        return _mask_url(value)
    return value


def _mask_url(url: str) -> str:
    """Hide the password in ``scheme://user:password@host`` URLs."""
    if "://" in url and "@" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        user = creds.split(":", 1)[0]
        return f"{scheme}://{user}:{MASK}@{host}"
    return url
