from __future__ import annotations

import pytest

from crm_stream.config import settings as config


def test_defaults_load_and_validate():
    s = config.load(None, env={})
    assert s.source.kind == "simulator" and s.store.kind == "memory" and s.currency_rates["EUR"] == 1.08


def test_production_example_loads():
    s = config.load(config.CONFIG_DIR / "production.toml", env={})
    assert s.source.kind == "kafka" and s.store.kind == "redis" and s.recovery.dir


def test_environment_overrides_file_with_types_coerced():
    s = config.load(
        None,
        env={
            "CRM_STREAM__ENGINE__SHARDS": "8",
            "CRM_STREAM__STORE__URL": "redis://h:1/0",
            "CRM_STREAM__KAFKA__TOPICS__CLICKSTREAM": "shop.clicks",
            "CRM_STREAM__KAFKA__EXTRA__SASL.PASSWORD": "hunter2",
            "UNRELATED": "x",
        },
    )
    assert s.engine.shards == 8 and s.store.url == "redis://h:1/0"
    assert s.kafka.topics.clickstream == "shop.clicks" and s.kafka.extra["sasl.password"] == "hunter2"


@pytest.mark.parametrize(
    "env, message",
    [
        ({"CRM_STREAM__ENGINE__SHARDS": "many"}, "engine.shards = 'many' is not a valid int"),
        ({"CRM_STREAM__ENGINE__SHARDS": "0"}, "engine.shards = 0 must be greater than 0"),
        ({"CRM_STREAM__STORE__KIND": "mongo"}, "store.kind = 'mongo' is not one of: memory, redis"),
        ({"CRM_STREAM__ENGINE__SHARDZ": "3"}, "unknown setting engine.shardz"),
        ({"CRM_STREAM__SOURCE__KIND": "file"}, "needs source.path"),
        ({"CRM_STREAM__STORE__KIND": "redis", "CRM_STREAM__STORE__URL": "localhost:6379"}, "must start with redis://"),
    ],
)
def test_bad_values_name_the_key_the_value_and_what_is_allowed(env, message):
    with pytest.raises(config.ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        config.load(None, env=env)


def test_missing_file_and_bad_toml(tmp_path):
    with pytest.raises(config.ConfigError, match="does not exist"):
        config.load(tmp_path / "nope.toml", env={})
    bad = tmp_path / "bad.toml"
    bad.write_text("[engine\nshards=1")
    with pytest.raises(config.ConfigError, match="not valid TOML"):
        config.load(bad, env={})


def test_secrets_are_masked_when_printed():
    s = config.load(
        None,
        env={"CRM_STREAM__STORE__URL": "redis://crm:s3cret@redis:6379/0", "CRM_STREAM__KAFKA__EXTRA__SASL.PASSWORD": "hunter2"},
    )
    text = repr(s.masked())
    assert "s3cret" not in text and "hunter2" not in text and "***" in text
    assert s.masked()["store"]["key_prefix"] == "crm"  # names that merely contain a marker word stay readable
