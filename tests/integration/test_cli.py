"""The CLI against real servers: simulate to Kafka, and useful errors when a server is missing."""

from __future__ import annotations

import subprocess

from crm_stream.operators.io.kafka import read_topic
from tests.integration.engine_process import CLI, ROOT, engine_env


def test_simulate_to_kafka_fills_the_input_topics(kafka_settings, redis_url, tmp_path):
    env = engine_env(kafka_settings, redis_url, tmp_path / "rec")
    done = subprocess.run(
        CLI + ["simulate", "--to-kafka", "--customers", "20", "--days", "10"], env=env, cwd=ROOT, capture_output=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    produced = int(done.stderr.split(b"produced ")[1].split()[0])
    topics = kafka_settings.topics
    found = sum(len(read_topic(kafka_settings, t, timeout_s=10)) for t in topics.inputs())
    assert found == produced > 100


def test_profile_of_an_unknown_customer_and_an_unreachable_redis_say_what_to_do(redis_url, kafka_settings, tmp_path):
    env = engine_env(kafka_settings, redis_url, tmp_path / "rec")
    missing = subprocess.run(CLI + ["profile", "nobody"], env=env, cwd=ROOT, capture_output=True, timeout=60)
    assert missing.returncode == 1 and b"no profile for customer 'nobody'" in missing.stderr
    env["CRM_STREAM__STORE__URL"] = "redis://127.0.0.1:1/0"
    down = subprocess.run(CLI + ["profile", "c1"], env=env, cwd=ROOT, capture_output=True, timeout=60)
    assert down.returncode == 1 and b"is redis-server running" in down.stderr
