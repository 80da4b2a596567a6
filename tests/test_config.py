"""config.yaml: LiteLLM's format, every problem reported at once with its key path (SPEC §1–§2)."""

from __future__ import annotations

import subprocess
import sys
from decimal import Decimal

import pytest
import yaml

from config import ConfigError, load_config, parse_config
from tests.helpers import MASTER_KEY, UPSTREAM
from tests.servers import REPO

ENV = {"LITELLM_MASTER_KEY": MASTER_KEY}


def parse(document, environ=ENV):
    return parse_config(document, environ)


def problems_of(document, environ=ENV) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse(document, environ)
    return caught.value.problems


def test_shipped_config_loads_with_only_the_master_key_in_the_environment():
    config = load_config(str(REPO / "config.yaml"), ENV)
    assert config.master_key == MASTER_KEY
    assert {d.provider for d in config.deployments} == {"mock"}
    assert config.database_url == "sqlite:///tollgate.db"


def test_config_file_path_comes_from_the_environment(tmp_path):
    path = tmp_path / "elsewhere.yaml"
    path.write_text(yaml.safe_dump({"model_list": [{"model_name": "x", "litellm_params": {"model": "mock/x"}}]}))
    config = load_config(None, {**ENV, "CONFIG_FILE_PATH": str(path)})
    assert [d.model_name for d in config.deployments] == ["x"]


def test_every_problem_is_reported_at_once_with_its_path():
    document = {
        "model_list": [
            {"model_name": "ok", "litellm_params": {"model": "mock/ok"}},
            {"model_name": "bad-rpm", "litellm_params": {"model": "mock/x", "rpm": "lots"}},
            {"model_name": "typo", "litellm_params": {"model": "azur/my-deployment"}},
            {"model_name": "price", "litellm_params": {"model": "mock/p", "input_cost_per_token": -1}},
            {"litellm_params": {"model": "mock/nameless"}},
        ],
        "litellm_settings": {"num_retries": -2, "budget_exceeded_status_code": 200},
    }
    problems = problems_of(document)
    assert any(p.startswith("model_list[2].litellm_params.model: unknown provider 'azur'") for p in problems)
    joined = "\n".join(problems)
    for expected in (
        "model_list[1].litellm_params.rpm:",
        "model_list[3].litellm_params.input_cost_per_token:",
        "model_list[4].model_name:",
        "litellm_settings.num_retries:",
        "litellm_settings.budget_exceeded_status_code:",
    ):
        assert expected in joined
    assert len(problems) == 6


def test_missing_master_key_refuses_to_start_and_says_how_to_set_one():
    problems = problems_of({"model_list": [{"model_name": "x", "litellm_params": {"model": "mock/x"}}]}, {})
    assert len(problems) == 1
    assert "LITELLM_MASTER_KEY" in problems[0] and "general_settings.master_key" in problems[0]


def test_master_key_from_config_wins_over_environment():
    document = {
        "model_list": [{"model_name": "x", "litellm_params": {"model": "mock/x"}}],
        "general_settings": {"master_key": "sk-from-config"},
    }
    assert parse(document).master_key == "sk-from-config"


def test_os_environ_references_resolve_anywhere_including_environment_variables():
    document = {
        "model_list": [
            {
                "model_name": "gpt",
                "litellm_params": {
                    "model": "openai/gpt-4o",
                    "api_base": "os.environ/BASE",
                    "api_key": "os.environ/KEY",
                },
            }
        ],
        "environment_variables": {"BASE": UPSTREAM},
        "general_settings": {"master_key": "os.environ/MY_MASTER"},
    }
    config = parse(document, {"KEY": "sk-up", "MY_MASTER": "sk-m"})
    deployment = config.deployments[0]
    assert (deployment.api_base, deployment.api_key, config.master_key) == (UPSTREAM, "sk-up", "sk-m")


def test_deployment_with_unset_key_variable_is_skipped_with_a_warning():
    document = {
        "model_list": [
            {"model_name": "real", "litellm_params": {"model": "openai/gpt-4o", "api_key": "os.environ/OPENAI_KEY_X"}},
            {"model_name": "mock", "litellm_params": {"model": "mock/m"}},
        ]
    }
    config = parse(document)
    assert [d.model_name for d in config.deployments] == ["mock"]
    assert any("OPENAI_KEY_X" in warning and "skipped" in warning for warning in config.warnings)


def test_litellm_keys_tollgate_does_not_implement_are_warnings_not_errors():
    document = {
        "model_list": [
            {
                "model_name": "x",
                "litellm_params": {"model": "mock/x", "tpm": 1000, "organization": "o"},
                "model_info": {"id": "dep-1", "supports_vision": True},
            }
        ],
        "router_settings": {"routing_strategy": "simple-shuffle"},
        "litellm_settings": {"callbacks": ["blocked_user_check"], "drop_params": True},
        "general_settings": {"proxy_batch_write_at": 10},
    }
    config = parse(document)
    joined = "\n".join(config.warnings)
    for path in (
        "router_settings",
        "litellm_settings.callbacks",
        "general_settings.proxy_batch_write_at",
        "model_list[0].litellm_params.organization",
        "model_list[0].model_info.supports_vision",
    ):
        assert path in joined
    assert config.deployments[0].id == "dep-1"


def test_litellm_provider_not_served_yet_is_skipped_with_a_warning():
    document = {
        "model_list": [
            {"model_name": "claude", "litellm_params": {"model": "bedrock/anthropic.claude-v2"}},
            {"model_name": "x", "litellm_params": {"model": "mock/x"}},
        ]
    }
    config = parse(document)
    assert [d.model_name for d in config.deployments] == ["x"]
    assert any("bedrock" in warning for warning in config.warnings)


def test_custom_prices_are_exact_and_read_from_model_info_too():
    document = {
        "model_list": [
            {
                "model_name": "a",
                "litellm_params": {
                    "model": "mock/a",
                    "input_cost_per_token": 0.0000005,
                    "output_cost_per_token": 1.5e-06,
                },
            },
            {
                "model_name": "b",
                "litellm_params": {"model": "mock/b"},
                "model_info": {"input_cost_per_token": "0.000003", "output_cost_per_token": 0.000015},
            },
        ]
    }
    a, b = parse(document).deployments
    assert (a.prices.input, a.prices.output) == (Decimal("0.0000005"), Decimal("0.0000015"))
    assert (b.prices.input, b.prices.output) == (Decimal("0.000003"), Decimal("0.000015"))


def test_same_model_name_forms_a_group_and_deployment_ids_are_distinct():
    document = {
        "model_list": [
            {"model_name": "g", "litellm_params": {"model": "mock/a"}},
            {"model_name": "g", "litellm_params": {"model": "mock/a"}},
        ]
    }
    config = parse(document)
    assert len(config.groups()["g"]) == 2
    assert len({d.id for d in config.deployments}) == 2


@pytest.mark.parametrize(
    ("content", "fragment"),
    [("model_list: [unclosed", "not valid YAML"), ("- just\n- a list\n", "must be a mapping")],
)
def test_unreadable_yaml_is_a_config_error(tmp_path, content, fragment):
    path = tmp_path / "config.yaml"
    path.write_text(content)
    with pytest.raises(ConfigError) as caught:
        load_config(str(path), ENV)
    assert fragment in str(caught.value)


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(str(tmp_path / "absent.yaml"), ENV)


def run_cli(*args, env=None):
    return subprocess.run(
        [sys.executable, "cli.py", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )


def test_check_config_command_accepts_the_shipped_config():
    result = run_cli("check-config", env={"LITELLM_MASTER_KEY": MASTER_KEY, "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    assert "config OK" in result.stdout


def test_check_config_command_lists_every_problem_and_exits_non_zero(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"model_list": [{"model_name": "x", "litellm_params": {"model": "azur/x"}}]}))
    result = run_cli("check-config", str(path), env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 1
    assert "model_list[0].litellm_params.model: unknown provider 'azur'" in result.stderr
    assert "LITELLM_MASTER_KEY" in result.stderr


@pytest.mark.parametrize(
    ("secret", "ok"),
    [("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", True), ("any-text", True), ("whsec_not*base64", False)],
)
def test_webhook_secret_format(secret, ok):
    document = {"model_list": [{"model_name": "x", "litellm_params": {"model": "mock/x"}}]}
    if ok:
        assert parse(document, {**ENV, "WEBHOOK_SECRET": secret}).webhook_secret == secret
    else:
        assert problems_of(document, {**ENV, "WEBHOOK_SECRET": secret}) == [
            "WEBHOOK_SECRET: a whsec_ secret must be base64 after the prefix"
        ]


@pytest.mark.parametrize(
    ("variable", "field", "default", "good", "bad"),
    [
        ("WEBHOOK_RETRY_MAX_SECONDS", "webhook_retry_max_seconds", 1800, "2.5", "soon"),
        ("WEBHOOK_RETENTION_DAYS", "webhook_retention_days", 7, "0.5", "0"),
    ],
)
def test_webhook_numbers_come_from_the_environment(variable, field, default, good, bad):
    document = {"model_list": [{"model_name": "x", "litellm_params": {"model": "mock/x"}}]}
    assert getattr(parse(document), field) == default
    assert getattr(parse(document, {**ENV, variable: good}), field) == float(good)
    assert problems_of(document, {**ENV, variable: bad}) == [
        f"environment.{variable}: must be a positive number, got {bad!r}"
    ]


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("mysql://localhost/db", "use postgresql://"),
        ("sqlite://relative.db", "sqlite:///relative.db"),
    ],
)
def test_unusable_database_url_is_a_config_error(url, problem):
    document = {"model_list": [{"model_name": "x", "litellm_params": {"model": "mock/x"}}]}
    [message] = problems_of(document, {**ENV, "DATABASE_URL": url})
    assert message.startswith("DATABASE_URL: ") and problem in message


@pytest.mark.parametrize("url", ["postgres://u:p@db.example:5432/app", "postgresql://localhost/test"])
def test_postgresql_urls_as_a_paas_sets_them_are_accepted(url):
    document = {"model_list": [{"model_name": "x", "litellm_params": {"model": "mock/x"}}]}
    assert parse(document, {**ENV, "DATABASE_URL": url}).database_url == url
