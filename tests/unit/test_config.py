from __future__ import annotations

from pathlib import Path

import pytest

from gateway.cli import main
from gateway.load import ConfigError, load_config, parse_config

ROOT = Path(__file__).resolve().parents[2]

MINIMAL = """
providers:
  mock: {type: mock}
models:
  demo: {deployments: [{provider: mock, model: demo-1}]}
"""


def problems(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, source="g.yaml", env=env or {})
    return info.value.lines()


def test_the_shipped_gateway_yaml_runs_as_is_without_keys():
    config = load_config(ROOT / "gateway.yaml", env={})
    assert "demo" in config.models
    assert config.enabled_providers().keys() == {"mock"}


def test_openai_is_enabled_when_its_key_is_set():
    config = load_config(ROOT / "gateway.yaml", env={"OPENAI_API_KEY": "sk-x"})
    assert config.enabled_providers()["openai"].api_key == "sk-x"


def test_unknown_provider_names_the_file_and_key_path():
    text = MINIMAL.replace("{provider: mock, model: demo-1}", "{provider: opena, model: demo-1}")
    assert problems(text) == ["g.yaml: models.demo.deployments[0].provider: unknown provider 'opena'"]


def test_unknown_keys_are_errors_at_every_depth():
    lines = problems(MINIMAL + "serverr: {}\nrouting: {timeouts: {idle: 3}}\n")
    assert any(line.startswith("g.yaml: serverr: unknown key") for line in lines)
    assert any(line.startswith("g.yaml: routing.timeouts.idle: unknown key") for line in lines)


def test_every_problem_is_reported_at_once():
    lines = problems(MINIMAL + "server: {port: abc, access_log: maybe}\nauth: {mode: open}\n")
    assert "g.yaml: server.port: expected int, got 'abc'" in lines
    assert "g.yaml: server.access_log: expected bool, got 'maybe'" in lines
    assert "g.yaml: auth.mode: must be one of 'none', 'keys', got 'open'" in lines
    # Cross-references are checked once every value has its type.
    lines = problems(MINIMAL + "server: {workers: 0}\npipeline: [auth, nope, route]\n")
    assert "g.yaml: server.workers: must be at least 1" in lines
    assert any(line.startswith("g.yaml: pipeline[1]: unknown filter 'nope'") for line in lines)


def test_interpolation_with_defaults_and_type_coercion():
    text = MINIMAL + "server: {port: '${PORT:-9000}', max_body_mb: '${MB}'}\n"
    config = parse_config(text, env={"MB": "2.5"})
    assert config.server.port == 9000
    assert config.server.max_body_mb == 2.5


def test_an_unset_variable_without_default_is_an_error():
    assert problems(MINIMAL + "auth: {admin_key: '${ADMIN}'}\n") == [
        "g.yaml: auth.admin_key: environment variable ADMIN is not set (use ${ADMIN:-default})"
    ]


def test_a_variable_set_but_empty_is_an_error_unless_a_default_allows_it():
    # A blank Secret or `GATEWAY_ADMIN_KEY=` in an env file must not turn the admin key off without a word.
    text = MINIMAL + "auth: {admin_key: '${ADMIN}'}\n"
    assert problems(text, env={"ADMIN": ""}) == [
        "g.yaml: auth.admin_key: environment variable ADMIN is empty (use ${ADMIN:-default})"
    ]
    assert parse_config(MINIMAL + "auth: {admin_key: '${ADMIN:-}'}\n", env={"ADMIN": ""}).auth.admin_key == ""
    assert parse_config(MINIMAL + "auth: {admin_key: '${ADMIN:-sk-a}'}\n", env={"ADMIN": ""}).auth.admin_key == "sk-a"


def test_secrets_are_never_printed():
    lines = problems(MINIMAL + "auth: {admin_key: [sk-very-secret]}\nproviders: {mock: {type: mock, api_key: 42.5}}\n")
    assert not any("sk-very-secret" in line for line in lines)
    assert "g.yaml: auth.admin_key: expected str, got (hidden)" in lines


def test_route_must_end_the_pipeline():
    assert "g.yaml: pipeline: must end with 'route', the stage that calls the upstream" in problems(
        MINIMAL + "pipeline: [route, auth]\n"
    )


def test_invalid_yaml_names_line_and_column():
    (line,) = problems("models: [\n")
    assert line.startswith("g.yaml: invalid YAML: line 2")


def test_azure_needs_an_api_version():
    text = MINIMAL + "providers: {az: {type: azure, base_url: 'http://x'}}\n"
    assert "g.yaml: providers.az.api_version: required for type 'azure'" in problems(text)


def test_check_command_prints_each_error_and_fails(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(MINIMAL.replace("provider: mock,", "provider: opena,") + "pipeline: [auth, route, nope]\n")
    assert main(["check", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}: models.demo.deployments[0].provider: unknown provider 'opena'" in err
    assert f"{bad}: pipeline[2]: unknown filter 'nope'" in err


def test_check_command_accepts_the_shipped_config(capsys):
    assert main(["check", "--config", str(ROOT / "gateway.yaml")]) == 0
    assert "ok" in capsys.readouterr().out


def test_check_command_on_a_missing_file(tmp_path, capsys):
    assert main(["check", "--config", str(tmp_path / "none.yaml")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_the_telemetry_store_s_bounds_must_be_positive():
    text = MINIMAL + "telemetry: {write_timeout_s: 0, spill_after_ms: -1, dead_letter_max_mb: -2}\n"
    assert problems(text) == [
        "g.yaml: telemetry.write_timeout_s: must be positive",
        "g.yaml: telemetry.spill_after_ms: must be positive",
        "g.yaml: telemetry.dead_letter_max_mb: must not be negative",
    ]
    config = parse_config(MINIMAL, source="g.yaml", env={})
    assert (config.telemetry.write_timeout_s, config.telemetry.spill_after_ms) == (2.0, 1000)


def test_the_responses_settings_are_checked_and_their_retention_is_their_own():
    text = MINIMAL + (
        "responses: {retention_days: 0, memory_max: -1, max_chain: 0}\n"
        "telemetry: {retention_days: {responses: 3, event_logs: 7}}\n"
    )
    assert problems(text) == [
        "g.yaml: responses.retention_days: must be positive",
        "g.yaml: responses.memory_max: must be positive",
        "g.yaml: responses.max_chain: must be positive",
        "g.yaml: telemetry.retention_days.responses: set by responses.retention_days",
    ]
    responses = parse_config(MINIMAL, source="g.yaml", env={}).responses
    assert (responses.store, responses.retention_days, responses.memory_max, responses.max_chain) == (
        True,
        30.0,
        10_000,
        1000,
    )


def test_a_shared_semantic_index_needs_a_redis_to_share_through():
    """Caught by `gateway check`, not by the server's start (which it had failed with a traceback)."""
    semantic = MINIMAL + "cache:\n  backend: redis://127.0.0.1:6379/8\n  semantic: {backend: redis}\n"
    assert any("cache.semantic.redis_url" in line for line in problems(semantic))
    parse_config(semantic + "state: {backend: 'redis://127.0.0.1:6379/8'}\n", source="g.yaml", env={})
    own = MINIMAL + "cache:\n  semantic: {backend: redis, redis_url: 'redis://127.0.0.1:6379/8'}\n"
    parse_config(own, source="g.yaml", env={})


@pytest.mark.parametrize(
    ("setting", "problem"),
    [
        ("sync_interval_s: 0", "routing.breaker.sync_interval_s: must be a positive number of seconds"),
        ("sync_interval_s: -1", "routing.breaker.sync_interval_s: must be a positive number of seconds"),
        ("sync_interval_s: .nan", "routing.breaker.sync_interval_s: must be a positive number of seconds"),
        ("cooldown_s: 0", "routing.breaker.cooldown_s: must be a positive number of seconds"),
        ("window_s: -3", "routing.breaker.window_s: must be a positive number of seconds"),
        ("max_cooldown_s: -5", "routing.breaker.max_cooldown_s: must be a positive number of seconds"),
        ("max_cooldown_s: .inf", "routing.breaker.max_cooldown_s: must be a positive number of seconds"),
        ("consecutive_failures: 0", "routing.breaker.consecutive_failures: must be at least 1"),
        ("min_requests: 0", "routing.breaker.min_requests: must be at least 1"),
        ("error_rate: 0", "routing.breaker.error_rate: must be in (0, 1]"),
    ],
)
def test_a_breaker_setting_that_would_break_the_breakers_is_refused_by_name(setting: str, problem: str) -> None:
    breaker = setting if setting.startswith("{") else f"{{{setting}}}"
    text = "providers: {m: {type: mock}}\nmodels: {x: {deployments: [{provider: m, model: x}]}}\n"
    assert problem in "\n".join(problems(f"{text}routing: {{breaker: {breaker}}}\n"))
