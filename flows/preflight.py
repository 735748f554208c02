"""Before the dataflow is built: can the broker and Redis be reached? One clear sentence if not.

Once Bytewax runs, a server that cannot be reached surfaces as a Rust panic and
chained tracebacks with the useful sentence buried in the middle (and the
store alone would retry for ever). So ``crm-stream run`` asks each server one
short question first (Kafka: cluster metadata; Redis: PING), with a timeout,
and raises ``StartupError``, whose message says what to check; the CLI prints
it as one line and exits 2. Outages *after* the start are another matter: the
engine waits for the server to return and loses nothing (README: guarantees).
"""

from __future__ import annotations

from crm_stream.config.settings import Settings, StoreSettings, _mask_url
from crm_stream.errors import UnavailableError

KAFKA_TIMEOUT_S = 5.0
REDIS_TIMEOUT_S = 3.0


class StartupError(UnavailableError, RuntimeError):
    """The engine cannot start as configured; the message says what to check (printed as one line, exit status 2)."""


def needs_kafka(settings: Settings) -> bool:
    """Whether anything in this run talks to the broker.

    >>> from crm_stream.config.settings import load
    >>> needs_kafka(load(None, env={}))  # the embedded demo: simulator in, terminal out, no Kafka audit
    False
    """
    return "kafka" in (settings.source.kind, settings.sink.kind, settings.audit.kind)


def check_services(
    settings: Settings, *, kafka_timeout_s: float = KAFKA_TIMEOUT_S, redis_timeout_s: float = REDIS_TIMEOUT_S
) -> None:
    """Raise ``StartupError`` unless every server the settings name answers within its timeout (the demo needs none)."""
    if settings.store.kind in ("redis", "redis-cluster"):
        check_redis(settings.store, redis_timeout_s)
    if needs_kafka(settings):
        check_kafka(settings, kafka_timeout_s)


def check_kafka(settings: Settings, timeout_s: float = KAFKA_TIMEOUT_S) -> None:
    """One metadata request; with a Kafka source, every input topic must exist (else the engine would fail inside Bytewax)."""
    from crm_stream.operators.io.kafka import KafkaIOError, _cluster_metadata

    kafka = settings.kafka
    try:
        metadata = _cluster_metadata(kafka, timeout_s)
    except KafkaIOError as exc:
        raise StartupError(str(exc)) from None
    if settings.source.kind != "kafka":
        return
    inputs = kafka.topics.inputs()
    missing = [t for t in inputs if t not in metadata.topics or metadata.topics[t].error is not None]
    if missing:
        raise StartupError(
            f"input topic(s) {', '.join(missing)} do not exist on Kafka at {kafka.bootstrap_servers}: create them "
            "(`crm-stream simulate --to-kafka` creates every topic of the config, or use your cluster's tooling) "
            "or fix kafka.topics.*"
        )


def check_redis(store: StoreSettings, timeout_s: float = REDIS_TIMEOUT_S) -> None:
    """One PING (a cluster: its slot map), with connect and read timeouts; refused credentials are said as such."""
    import redis
    from redis.cluster import RedisCluster
    from redis.exceptions import RedisClusterException

    from crm_stream.operators.io.stores import redis_connection_kwargs

    where = f"Redis at {_mask_url(store.url)}"
    kwargs = {"socket_connect_timeout": timeout_s, "socket_timeout": timeout_s, **redis_connection_kwargs(store)}
    client: redis.Redis | RedisCluster | None = None
    try:
        client = (
            RedisCluster.from_url(store.url, **kwargs)
            if store.kind == "redis-cluster"
            else redis.Redis.from_url(store.url, **kwargs)
        )
        client.ping()
    except (redis.AuthenticationError, redis.exceptions.NoPermissionError) as exc:
        raise StartupError(
            f"{where} refused the credentials ({exc}): check store.username and store.password "
            "(CRM_STREAM__STORE__PASSWORD) and that user's ACL"
        ) from None
    except (
        redis.RedisError,
        RedisClusterException,
        OSError,
    ) as exc:  # refused, timed out, no route, TLS, a cluster without slots
        reason = " ".join(str(exc).split()) or type(exc).__name__
        hint = (
            "set store.tls_ca_file to the CA that signed the server's certificate"
            if "certificate" in reason.lower()
            else "is redis-server running there, and are store.url and store.kind right?"
        )
        raise StartupError(f"{where} did not answer within {timeout_s:g}s ({reason}): {hint}") from None
    finally:
        if client is not None:
            client.close()
