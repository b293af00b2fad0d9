from pathlib import Path

import pytest

from worker.config import ConfigError, load_settings


def test_defaults_are_usable() -> None:
    settings = load_settings()
    assert settings.topics.posts == "posts" and settings.judge_t1.reasoning_effort == "low"
    assert settings.judge_t2.reasoning_effort == "high"


def test_env_overrides_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("kafka:\n  group_id: from-yaml\n  bootstrap_servers: yaml:9092\ntopics:\n  actions: acts\n")
    monkeypatch.setenv("MODSTREAM_KAFKA__GROUP_ID", "from-env")
    monkeypatch.setenv("MODSTREAM_JUDGE_T1__BASE_URLS", '["http://a:1/v1/", "http://b:1/v1"]')
    settings = load_settings(config)
    assert settings.kafka.group_id == "from-env"
    assert settings.kafka.bootstrap_servers == "yaml:9092"
    assert settings.topics.actions == "acts"
    assert settings.judge_t1.base_urls == ["http://a:1/v1", "http://b:1/v1"]
    assert settings.judge_t1.model == "openai/gpt-oss-safeguard-20b"  # other tier-1 defaults kept


@pytest.mark.parametrize(
    ("env", "value", "named"),
    [
        ("MODSTREAM_MAX_IN_FLIGHT", "0", "MODSTREAM_MAX_IN_FLIGHT"),
        ("MODSTREAM_JUDGE_T2__BASE_URLS", '["vllm:8000"]', "MODSTREAM_JUDGE_T2__BASE_URLS"),
        ("MODSTREAM_JUDGE_T1__REASONING_EFFORT", "extreme", "MODSTREAM_JUDGE_T1__REASONING_EFFORT"),
        ("MODSTREAM_KAFKA__EXTRA", '{"enable.auto.commit": true}', "MODSTREAM_KAFKA__EXTRA"),
        ("MODSTREAM_TOPIKS__POSTS", "x", "MODSTREAM_TOPIKS__POSTS"),
        # Not JSON where a list is expected: pydantic-settings fails before validation.
        ("MODSTREAM_JUDGE_T1__BASE_URLS", "http://vllm:8000/v1", "MODSTREAM_JUDGE_T1__BASE_URLS"),
    ],
)
def test_bad_settings_fail_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch, env: str, value: str, named: str
) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert named in str(info.value)


def test_missing_config_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.yaml")


def test_secrets_are_redacted() -> None:
    settings = load_settings(kafka={"extra": {"sasl.password": "hunter2", "security.protocol": "SASL_SSL"}})
    assert settings.kafka.redacted_extra() == {"sasl.password": "***", "security.protocol": "SASL_SSL"}
