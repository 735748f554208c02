"""End to end: contract events produced to Kafka -> the engine process -> profiles in Redis, rejects on the dead-letter topic."""

from __future__ import annotations

import subprocess
import time
from datetime import timedelta

import orjson
from bytewax.testing import run_main

from crm_stream.config import settings as config
from crm_stream.flows.dataflow import build_flow
from crm_stream.flows.runtime import replay
from crm_stream.operators.events.simulator import Shop
from crm_stream.operators.io.files import CollectingOutputs, FileReader
from crm_stream.operators.io.kafka import ensure_topics, produce_records, read_topic
from crm_stream.operators.io.stores import MemoryStore
from tests.integration.engine_process import CLI, ROOT, Engine, applied_events, engine_env, profiles_in_redis, wait_until_settled

SIM = config.SimulatorSettings(customers=120, days=45, seed=11, bad_rate=0.01)


def _comparable(profile: dict) -> tuple:
    """Fields that do not depend on the order in which partitions are interleaved."""
    return (
        profile["frequency"],
        round(profile["monetary"], 2),
        profile["events"],
        profile["type_counts"],
        sorted(profile["anonymous_ids"]),
    )


def _expected_by_replay(tmp_path):
    shop = Shop(SIM)
    events_file = tmp_path / "events.jsonl"
    counts = shop.write_files(events_file)
    out = {n: tmp_path / f"{n}.jsonl" for n in ("alerts", "profiles", "dead")}
    settings = config.load(None, env={})
    summary = replay(settings, events_file, alerts_out=out["alerts"], profiles_out=out["profiles"], deadletter_out=out["dead"])
    return shop, counts, summary, out


def test_events_through_kafka_become_profiles_in_redis(kafka_settings, redis_url, fresh_redis, tmp_path):
    shop, counts, summary, out = _expected_by_replay(tmp_path)
    ensure_topics(kafka_settings, partitions=3)
    topics = kafka_settings.topics
    produce_records(kafka_settings, ((getattr(topics, role), key, value) for role, key, value in shop.records()))

    engine = Engine(engine_env(kafka_settings, redis_url, tmp_path / "recovery"), tmp_path / "engine.log")
    engine.start()
    try:
        # Every valid event except redeliveries and visitors who never logged in is applied to a profile.
        replay_profiles = {p["customer_id"]: p for p in map(orjson.loads, out["profiles"].read_bytes().splitlines())}
        settled = wait_until_settled(fresh_redis, engine, expected=1)
        assert settled >= 1, engine.log_tail()
        redis_profiles = _wait_for_profiles(fresh_redis, engine, len(replay_profiles))
        assert set(redis_profiles) == set(replay_profiles)

        dead = _wait_for_topic(kafka_settings, topics.deadletter, counts["malformed"])
        assert len(dead) == counts["malformed"] == summary.dead
        for _, value in dead:
            record = orjson.loads(value)
            assert record["reason"] and record["topic"] in topics.inputs() and isinstance(record["offset"], int)

        # Live and replay raise the same alerts, with the same ids (timers run in event time, not wall time).
        # Exactly so for rules whose state is one customer's purchases and tickets. Rules that read shop-wide
        # statistics (adaptive segment lines, product refund rates) or bursts of clickstream (interest
        # episodes) can differ at the margin when topics interleave differently from the file, and through
        # the frequency caps so can the triggers competing with them: those are compared in size only.
        replayed = {orjson.loads(line)["alert_id"] for line in out["alerts"].read_bytes().splitlines()}
        assert replayed, "the simulated shop should raise alerts"
        live = _wait_for_alerts(kafka_settings, len(replayed))
        per_customer = ("angry_customer-", "win_back-", "replenishment-")
        assert {a for a in live if a.startswith(per_customer)} == {a for a in replayed if a.startswith(per_customer)}
        assert abs(len(live) - len(replayed)) <= 0.5 * len(replayed), (len(live), len(replayed))

        # The profile command reads what other services read.
        shown = subprocess.run(
            CLI + ["profile", next(iter(sorted(redis_profiles)))], env=engine.env, cwd=ROOT, capture_output=True, timeout=60
        )
        assert shown.returncode == 0, shown.stderr
        assert orjson.loads(shown.stdout)["customer_id"] == next(iter(sorted(redis_profiles)))
    finally:
        engine.kill()
    _assert_same_as_replay(tmp_path, redis_profiles)


def _assert_same_as_replay(tmp_path, redis_profiles):
    """The live engine and replay agree on every order-independent number of every profile."""
    settings = config.load(None, env={})
    store = MemoryStore()
    flow = build_flow(
        settings,
        reader=FileReader(tmp_path / "events.jsonl"),
        outputs_factory=lambda w: CollectingOutputs(),
        store_provider=lambda: store,
    )
    run_main(flow, epoch_interval=timedelta(seconds=10))
    expected = {k.rsplit(":", 1)[1]: v for k, v in store.scan("crm:profile:")}
    assert {c: _comparable(p) for c, p in redis_profiles.items()} == {c: _comparable(p) for c, p in expected.items()}


def _wait_for_profiles(client, engine, count, timeout_s=60.0):
    deadline = time.monotonic() + timeout_s
    profiles: dict = {}
    last_applied, stable_since = -1, time.monotonic()
    while time.monotonic() < deadline:
        engine.assert_running()
        applied = applied_events(client)
        if applied != last_applied:
            last_applied, stable_since = applied, time.monotonic()
        profiles = profiles_in_redis(client)
        if len(profiles) >= count and time.monotonic() - stable_since > 1.5:
            return profiles
        time.sleep(0.25)
    return profiles


def _wait_for_alerts(kafka, count, timeout_s=45.0):
    """Alert ids on both output topics, once ``count`` are there and a second has brought no more."""
    topics = (kafka.topics.service_alerts, kafka.topics.marketing_triggers)
    records = _wait_for_topic(kafka, topics, count, timeout_s)
    if len(records) >= count:
        time.sleep(1.0)
        records = _read(kafka, topics)
    return {orjson.loads(v)["alert_id"] for _, v in records}


def _read(kafka, topics):
    return [record for topic in topics for record in read_topic(kafka, topic, timeout_s=5)]


def _wait_for_topic(kafka, topics, count, timeout_s=30.0):
    topics = (topics,) if isinstance(topics, str) else topics
    deadline = time.monotonic() + timeout_s
    records: list = []
    while time.monotonic() < deadline:
        records = _read(kafka, topics)
        if len(records) >= count:
            return records
        time.sleep(0.5)
    return records


# Governance caps count what was sent, so they couple rules: a trigger of a rule that reads shop-wide state (churn
# model, segment lines, interest episodes) can crowd out a reminder. Lifted here so that the timer rules are compared alone.
UNCAPPED = {
    "CRM_STREAM__GOVERNANCE__DAILY_CAP": "1000",
    "CRM_STREAM__GOVERNANCE__WEEKLY_CAP": "1000",
    "CRM_STREAM__GOVERNANCE__LOW_FREQUENCY_WEEKLY_CAP": "1000",
}
TIMER_RULES = ("replenishment", "win_back")


def test_timer_rules_raise_the_same_alerts_live_as_in_replay(kafka_settings, redis_url, fresh_redis, tmp_path):
    """The 150-day shop through 3 partitions per topic: the purchases partitions are read far ahead of the
    clickstream, yet every reminder and win-back the final live watermark passed is raised, with replay's ids."""
    from crm_stream.operators.events.schema import DeadLetter, Decoder, Origin
    from crm_stream.operators.events.timeutil import MS_PER_HOUR, parse_ts
    from tests.integration.scenario import ENV, output_records
    from tests.integration.scenario import SIM as SHOP

    env = {**ENV, **UNCAPPED}
    events = tmp_path / "events.jsonl"
    Shop(SHOP).write_files(events)
    settings = config.load(None, env=env)
    replay(settings, events, alerts_out=tmp_path / "alerts.jsonl", profiles_out=tmp_path / "profiles.jsonl")
    replayed = [orjson.loads(line) for line in (tmp_path / "alerts.jsonl").read_bytes().splitlines()]
    decoder = Decoder(settings.currency_rates, settings.engine.base_currency, settings.kafka.max_message_bytes)
    decoded = (decoder.decode(line, Origin("file", line=n)) for n, line in enumerate(events.read_bytes().splitlines(), 1))
    last_ts = max(e["ts"] for e in decoded if not isinstance(e, DeadLetter))

    ensure_topics(kafka_settings, partitions=3)
    topics = kafka_settings.topics
    produce_records(kafka_settings, ((getattr(topics, role), key, value) for role, key, value in Shop(SHOP).records()))
    engine = Engine(engine_env(kafka_settings, redis_url, tmp_path / "recovery", **env), tmp_path / "engine.log")
    engine.start()
    try:
        # Once every partition is caught up and idle, the watermark is the newest event time minus the lateness.
        final_hour = (last_ts - settings.engine.allowed_lateness_ms) // MS_PER_HOUR - 1
        deadline = time.monotonic() + 180
        while min(_fired_through(fresh_redis, settings.engine.shards), default=-1) < final_hour:
            engine.assert_running()
            assert time.monotonic() < deadline, f"timers stopped short of hour {final_hour}: {engine.log_tail()}"
            time.sleep(0.5)
        passed = (
            min(_fired_through(fresh_redis, settings.engine.shards)) + 1
        ) * MS_PER_HOUR  # the final live watermark passed it

        def fair(alerts, kinds=TIMER_RULES) -> set[str]:
            return {a["alert_id"] for a in alerts if a["kind"] in kinds and parse_ts(a.get("send_at") or a["ts"]) <= passed}

        expected = fair(replayed)
        assert len(expected) > 100  # both rules, 150 days: reminders of several cycles per customer
        live: set[str] = set()
        deadline = time.monotonic() + 30
        while live != expected and time.monotonic() < deadline:
            time.sleep(1.0)
            live = fair(output_records(kafka_settings, topics.marketing_triggers))
        assert live == expected, (len(live - expected), len(expected - live))
        # abandoned_interest cuts interest episodes from the looks in time order (rules/abandoned_interest.py):
        # 100% of replay's offers came out live with the same ids over 16 runs (the every-kind test holds the floor).
        abandoned = ("abandoned_interest",)
        replayed_offers = fair(replayed, abandoned)
        live_offers = fair(output_records(kafka_settings, topics.marketing_triggers), abandoned)
        assert len(live_offers & replayed_offers) >= 0.95 * len(replayed_offers), (len(live_offers), len(replayed_offers))
    finally:
        engine.kill()


def _fired_through(client, shards: int) -> list[int]:
    blobs = client.mget([f"crm:shard:{n}" for n in range(shards)])
    return [orjson.loads(b).get("fired_through") or -1 for b in blobs if b]


# Every kind: live and replay raise the same ids, KIND_AGREEMENT of them at least (docs/guarantees.md, "Live and
# replay": 100% for every kind in every run since the fixes of 2026-12-06). Caps lifted (UNCAPPED): they count what was
# sent, so a trigger that differs would crowd out others.
KIND_AGREEMENT = 0.98


def test_every_kind_raises_the_same_alert_ids_live_as_in_replay(kafka_settings, redis_url, fresh_redis, tmp_path):
    """The 150-day shop through 3 partitions per topic (tests/integration/live_vs_replay.py): per kind, the share of
    alert ids live and replay have in common, over the alerts both runs had the time to raise."""
    from tests.integration.live_vs_replay import run_once
    from tests.integration.scenario import ENV
    from tests.integration.scenario import SIM as SHOP

    table = run_once(SHOP, kafka_settings, redis_url, fresh_redis, {**ENV, **UNCAPPED}, tmp_path, partitions=3)
    print("\n".join(a.line() for a in table.values()))  # the measured agreement, for the report (pytest -s)
    assert {"segment_change", "return_spike", "churn_risk", "win_back", "replenishment", "angry_customer"} <= set(table)
    assert all(a.replayed for a in table.values()), "every kind must have replayed alerts to compare"
    short = [a.line() for a in table.values() if a.share < KIND_AGREEMENT]
    assert not short, short
