"""Load and validate Tollgate's config.yaml (LiteLLM's format, supported subset).

`load_config(path, environ)` reads the file once and returns a frozen `Config`. Every problem
found is collected with its dotted key path and raised together as one `ConfigError`, so an
operator fixes a broken config in one pass. Keys that LiteLLM knows but Tollgate does not
implement become warnings (`Config.warnings`), so a LiteLLM config starts as is; a key unknown to
both that looks like a typo of one Tollgate reads, and the few LiteLLM keys whose being ignored
would lift a spending limit, are errors (`config_keys`).

Model names are read as LiteLLM reads them (`providers.models`): a bare `gpt-4o-mini` gets the
provider LiteLLM would infer, and a `model_name` with `*` is a wildcard deployment.

Run `python cli.py check-config [PATH]` to validate a file without starting the server.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

import yaml

from config_keys import (
    LITELLM_ENTRY,
    LITELLM_GENERAL_SETTINGS,
    LITELLM_MODEL_INFO,
    LITELLM_PARAMS,
    LITELLM_SETTINGS,
    LITELLM_TOP_LEVEL,
)
from config_reader import Reader
from logs import FORMATS, LEVELS
from providers import PROVIDERS
from providers.models import is_wildcard, read_target

DEFAULT_CONFIG_PATH = "config.yaml"
DEFAULT_DATABASE_URL = "sqlite:///tollgate.db"
DEFAULT_MAX_REQUEST_BYTES = 10 * 1024 * 1024

# Keys Tollgate reads; anything else in these sections is reported as a warning.
_TOP_LEVEL_KEYS = {"model_list", "litellm_settings", "general_settings", "environment_variables"}
_DEPLOYMENT_PARAMS = {
    "model",
    "api_base",
    "api_key",
    "api_version",
    "region_name",
    "rpm",
    "tpm",
    "timeout",
    "input_cost_per_token",
    "output_cost_per_token",
    "cache_read_input_token_cost",
    "cache_creation_input_token_cost",
    "mock_response",
    "mock_latency_ms",
    "drop_params",
}
_PRICE_KEYS = (
    "input_cost_per_token",
    "output_cost_per_token",
    "cache_read_input_token_cost",
    "cache_creation_input_token_cost",
)
_MODEL_INFO_KEYS = {"id", "base_model", "mode", "max_output_tokens", *_PRICE_KEYS}
_LITELLM_SETTINGS = {
    "request_timeout",
    "num_retries",
    "max_end_user_budget_id",
    "budget_exceeded_status_code",
    "block_requests_for_models_without_pricing",
    "drop_params",
    "budget_enforcement",
    "enable_end_user_cost_tracking_prometheus_only",
}
_GENERAL_SETTINGS = {
    "master_key",
    "alerting",
    "alert_types",
    "budget_alert_thresholds",
    "enforce_user_param",
    "max_request_size_mb",
    "database_url",
    "user_header_mappings",
    "user_header_name",
    "maximum_spend_logs_retention_period",
    "maximum_spend_logs_retention_interval",
}
_ALERT_TYPES = ("spend_tracked", "budget_alerts")
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


class ConfigError(Exception):
    """The config cannot be used. `problems` holds one `"key.path: message"` string each."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid config:\n" + "\n".join(f"  {p}" for p in problems))


@dataclass(frozen=True)
class Prices:
    """Custom per-token prices in USD, exact."""

    input: Decimal
    output: Decimal
    cache_read: Decimal | None = None
    cache_write: Decimal | None = None


@dataclass(frozen=True)
class Deployment:
    """One `model_list` entry: a concrete upstream that serves the public `model_name`."""

    id: str
    model_name: str
    provider: str
    model: str
    api_base: str | None = None
    api_key: str | None = None
    api_version: str | None = None
    region_name: str | None = None
    rpm: int | None = None
    timeout: float = 600.0
    prices: Prices | None = None
    base_model: str | None = None
    mock_response: str | None = None
    mock_latency_ms: int = 0
    max_output_tokens: int | None = None
    drop_params: bool = False
    # A wildcard whose `model` has no fixed provider (`model: "*"`) picks the provider per call;
    # these are the provider keys from the environment it may use then.
    provider_keys: tuple[tuple[str, str], ...] = ()

    @property
    def wildcard(self) -> bool:
        """A `model_name` with `*`: serves every requested model it matches."""
        return is_wildcard(self.model_name)


@dataclass(frozen=True)
class Settings:
    """`litellm_settings` and `general_settings` that change behaviour."""

    request_timeout: float = 600.0
    num_retries: int = 0
    max_end_user_budget_id: str | None = None
    budget_exceeded_status_code: int = 422
    block_requests_for_models_without_pricing: bool = False
    drop_params: bool = False
    budget_enforcement: str = "standard"
    # The customer as the `end_user` label of /metrics (one series per customer, so off by default).
    end_user_metrics: bool = False
    alerting: tuple[str, ...] = ()
    alert_types: tuple[str, ...] = _ALERT_TYPES
    budget_alert_thresholds: tuple[Decimal, ...] = (Decimal("0.85"), Decimal("0.95"))
    enforce_user_param: bool = False
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    # Headers that name the customer after LiteLLM's own two (`user_header_mappings`, `user_header_name`).
    customer_headers: tuple[str, ...] = ()


@dataclass(frozen=True)
class Config:
    """Everything Tollgate needs to run, validated and frozen."""

    deployments: tuple[Deployment, ...]
    master_key: str
    database_url: str = DEFAULT_DATABASE_URL
    # TOLLGATE_MIGRATIONS: "start" (a web process migrates) or "release" (only `cli.py migrate` does)
    migrations: str = "start"
    settings: Settings = field(default_factory=Settings)
    webhook_url: str | None = None
    webhook_secret: str | None = None
    webhook_retry_max_seconds: float = 1800.0
    webhook_retention_days: float = 7.0
    log_level: str = "INFO"  # LITELLM_LOG
    log_format: str = "text"  # LOG_FORMAT: text or json
    # general_settings.maximum_spend_logs_retention_period and _interval, in seconds (None: keep every row)
    spend_log_retention_seconds: float | None = None
    spend_log_retention_interval_seconds: float = 86_400.0
    # Slow clients: seconds a client may take to send a request's headers, then its body (408 beyond).
    request_header_timeout: float = 10.0
    request_body_timeout: float = 30.0
    warnings: tuple[str, ...] = ()

    @property
    def webhooks_enabled(self) -> bool:
        """`alerting: ["webhook"]` and a `WEBHOOK_URL` to send to."""
        return "webhook" in self.settings.alerting and self.webhook_url is not None

    def groups(self) -> dict[str, tuple[Deployment, ...]]:
        """Deployments by public model name, in config order."""
        groups: dict[str, list[Deployment]] = {}
        for deployment in self.deployments:
            groups.setdefault(deployment.model_name, []).append(deployment)
        return {name: tuple(members) for name, members in groups.items()}


def load_config(path: str | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Read, resolve and validate the config file; raise `ConfigError` listing every problem."""
    environ = os.environ if environ is None else environ
    path = path or environ.get("CONFIG_FILE_PATH") or DEFAULT_CONFIG_PATH
    try:
        with open(path, encoding="utf-8") as handle:
            raw = yaml.safe_load(handle)
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read config file ({exc.strerror})"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([f"{path}: not valid YAML ({exc})"]) from None
    return parse_config(raw if raw is not None else {}, environ)


def parse_config(raw: Any, environ: Mapping[str, str]) -> Config:
    """Validate an already-parsed config document against `environ`."""
    reader = Reader(environ)
    if not isinstance(raw, dict):
        raise ConfigError(["(top level): must be a mapping of sections"])
    reader.check_keys(raw, "", _TOP_LEVEL_KEYS, LITELLM_TOP_LEVEL)

    env_vars = reader.mapping(raw, "environment_variables")
    reader.env = {**environ, **{str(k): str(v) for k, v in env_vars.items() if v is not None}}

    litellm = reader.mapping(raw, "litellm_settings")
    general = reader.mapping(raw, "general_settings")
    reader.check_keys(litellm, "litellm_settings", _LITELLM_SETTINGS, LITELLM_SETTINGS,
                      elsewhere=dict.fromkeys(_GENERAL_SETTINGS, "general_settings"))  # fmt: skip
    reader.check_keys(general, "general_settings", _GENERAL_SETTINGS, LITELLM_GENERAL_SETTINGS,
                      elsewhere=dict.fromkeys(_LITELLM_SETTINGS, "litellm_settings"))  # fmt: skip
    settings = _settings(reader, litellm, general)
    deployments = _deployments(reader, raw.get("model_list"), settings)

    master_key = reader.resolve(general.get("master_key"), "general_settings.master_key", optional=True)
    master_key = master_key or reader.env.get("LITELLM_MASTER_KEY")
    if not master_key:
        reader.error(
            "general_settings.master_key: no master key configured; set LITELLM_MASTER_KEY in the "
            "environment or general_settings.master_key in the config (Tollgate never starts open)"
        )
    elif not isinstance(master_key, str):
        reader.error("general_settings.master_key: must be a string")

    database_url = reader.resolve(general.get("database_url"), "general_settings.database_url", optional=True)
    database_url = str(database_url or reader.env.get("DATABASE_URL") or DEFAULT_DATABASE_URL)
    postgres = database_url.startswith(("postgres://", "postgresql://"))
    if "://" in database_url and not postgres and not database_url.startswith("sqlite:///"):
        reader.error(
            "DATABASE_URL: use postgresql://user:password@host:5432/database, sqlite:///relative.db, "
            "sqlite:////absolute/path.db or a file path"
        )
    migrations = reader.env.get("TOLLGATE_MIGRATIONS", "start").strip().lower() or "start"
    if migrations not in ("start", "release"):
        reader.error(f"environment.TOLLGATE_MIGRATIONS: must be start or release, got {migrations!r}")
    if settings.alerting and "webhook" in settings.alerting and not reader.env.get("WEBHOOK_URL"):
        reader.warn("general_settings.alerting: 'webhook' is on but WEBHOOK_URL is not set; no webhooks will be sent")

    retry_ceiling = reader.number(reader.env, "WEBHOOK_RETRY_MAX_SECONDS", "environment", 1800.0)
    retention_days = reader.number(reader.env, "WEBHOOK_RETENTION_DAYS", "environment", 7.0)
    operations = _logging_and_retention(reader, general)
    header_timeout = reader.number(reader.env, "REQUEST_HEADER_TIMEOUT", "environment", 10.0)
    body_timeout = reader.number(reader.env, "REQUEST_BODY_TIMEOUT", "environment", 30.0)
    for name, seconds in (("REQUEST_HEADER_TIMEOUT", header_timeout), ("REQUEST_BODY_TIMEOUT", body_timeout)):
        if seconds is not None and not 0 < seconds <= 3600:
            reader.error(f"environment.{name}: must be between 0 and 3600 seconds, got {seconds}")
    secret = reader.env.get("WEBHOOK_SECRET") or None
    if secret and secret.startswith("whsec_") and not _is_base64(secret[len("whsec_") :]):
        reader.error("WEBHOOK_SECRET: a whsec_ secret must be base64 after the prefix")

    if reader.problems:
        raise ConfigError(reader.problems)
    return Config(
        deployments=tuple(deployments),
        master_key=master_key,
        database_url=database_url,
        migrations=migrations,
        settings=settings,
        webhook_url=reader.env.get("WEBHOOK_URL") or None,
        webhook_secret=secret,
        webhook_retry_max_seconds=retry_ceiling,
        webhook_retention_days=retention_days,
        **operations,
        request_header_timeout=header_timeout,
        request_body_timeout=body_timeout,
        warnings=tuple(reader.warnings),
    )


def _logging_and_retention(reader: Reader, general: dict) -> dict:
    """`LITELLM_LOG`, `LOG_FORMAT` and the spend-log retention settings, checked, as `Config` fields."""
    level = reader.env.get("LITELLM_LOG", "INFO").strip().upper() or "INFO"
    if level not in LEVELS:
        reader.error(f"environment.LITELLM_LOG: must be one of {', '.join(LEVELS)}, got {level!r}")
    log_format = reader.env.get("LOG_FORMAT", "text").strip().lower() or "text"
    if log_format not in FORMATS:
        reader.error(f"environment.LOG_FORMAT: must be text or json, got {log_format!r}")
    fields = {"log_level": level, "log_format": log_format}
    for key, field_name in (
        ("maximum_spend_logs_retention_period", "spend_log_retention_seconds"),
        ("maximum_spend_logs_retention_interval", "spend_log_retention_interval_seconds"),
    ):
        raw = general.get(key)
        if raw is None:
            continue
        try:
            fields[field_name] = period_seconds(raw)
        except ValueError as exc:
            reader.error(f"general_settings.{key}: {exc}")
    return fields


_PERIOD = re.compile(r"([0-9]+)(s|m|h|d|w)")  # ASCII digits: `\d` also takes "²" and "١"
_PERIOD_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 7 * 86_400}
MAX_PERIOD_DAYS = 36_525  # 100 years: a cutoff further back is no date Python can compute


def period_seconds(text: object) -> float:
    """Seconds in a LiteLLM period (`"7d"`, `"24h"`, `"60m"`, `"3600s"`, `"2w"`); ValueError saying what
    is accepted otherwise (zero, a fraction, another unit, more than 100 years)."""
    match = _PERIOD.fullmatch(text.strip().lower()) if isinstance(text, str) else None
    if match is None or not match.group(1).lstrip("0"):
        raise ValueError(f"must be a period like '7d', '24h', '60m' or '3600s', got {text!r}")
    digits = match.group(1).lstrip("0")
    seconds = (int(digits) if len(digits) <= 15 else 10**15) * _PERIOD_SECONDS[match.group(2)]
    if seconds > MAX_PERIOD_DAYS * 86_400:
        raise ValueError(f"must be at most 100 years ({MAX_PERIOD_DAYS}d), got {text!r}")
    return float(seconds)


def _is_base64(text: str) -> bool:
    try:
        return bool(base64.b64decode(text, validate=True))
    except ValueError:
        return False


def _settings(reader: Reader, litellm: dict, general: dict) -> Settings:
    defaults = Settings()
    status = reader.integer(
        litellm, "budget_exceeded_status_code", "litellm_settings", defaults.budget_exceeded_status_code
    )
    if not 400 <= status <= 599:
        reader.error("litellm_settings.budget_exceeded_status_code: must be an HTTP error status (400-599)")
    enforcement = reader.string(litellm, "budget_enforcement", "litellm_settings") or defaults.budget_enforcement
    if enforcement not in ("standard", "strict"):
        reader.error("litellm_settings.budget_enforcement: must be 'standard' or 'strict'")
    alert_types = reader.string_list(general, "alert_types", "general_settings")
    alert_types = _ALERT_TYPES if alert_types is None else tuple(alert_types)
    for index, name in enumerate(alert_types):
        if name not in _ALERT_TYPES:
            reader.warn(f"general_settings.alert_types[{index}]: '{name}' is not sent by Tollgate, ignored")
    thresholds = []
    raw_thresholds = general.get("budget_alert_thresholds")
    if raw_thresholds is None:
        thresholds = list(defaults.budget_alert_thresholds)
    elif not isinstance(raw_thresholds, list):
        reader.error("general_settings.budget_alert_thresholds: must be a list of fractions")
    else:
        for index, value in enumerate(raw_thresholds):
            fraction = reader.money(value, f"general_settings.budget_alert_thresholds[{index}]")
            if fraction is not None and not Decimal(0) < fraction <= Decimal(1):
                reader.error(f"general_settings.budget_alert_thresholds[{index}]: must be between 0 and 1")
            elif fraction is not None:
                thresholds.append(fraction)
    max_mb = reader.number(general, "max_request_size_mb", "general_settings", None)
    return Settings(
        request_timeout=reader.number(litellm, "request_timeout", "litellm_settings", defaults.request_timeout),
        num_retries=reader.integer(litellm, "num_retries", "litellm_settings", defaults.num_retries),
        max_end_user_budget_id=reader.string(litellm, "max_end_user_budget_id", "litellm_settings"),
        budget_exceeded_status_code=status,
        block_requests_for_models_without_pricing=reader.boolean(
            litellm, "block_requests_for_models_without_pricing", "litellm_settings"
        ),
        drop_params=reader.boolean(litellm, "drop_params", "litellm_settings"),
        budget_enforcement=enforcement,
        end_user_metrics=reader.boolean(litellm, "enable_end_user_cost_tracking_prometheus_only", "litellm_settings"),
        alerting=tuple(reader.string_list(general, "alerting", "general_settings") or ()),
        alert_types=tuple(t for t in alert_types if t in _ALERT_TYPES),
        budget_alert_thresholds=tuple(sorted(thresholds)),
        enforce_user_param=reader.boolean(general, "enforce_user_param", "general_settings"),
        max_request_bytes=int(max_mb * 1024 * 1024) if max_mb else defaults.max_request_bytes,
        customer_headers=_customer_headers(reader, general),
    )


def _customer_headers(reader: Reader, general: dict) -> tuple[str, ...]:
    """The headers configured to name the customer, in LiteLLM's order: the mappings with role
    `customer`, then the deprecated `user_header_name`."""
    names = []
    mappings = general.get("user_header_mappings")
    if mappings is not None and not isinstance(mappings, list):
        reader.error("general_settings.user_header_mappings: must be a list of {header_name, litellm_user_role}")
        mappings = []
    for index, entry in enumerate(mappings or []):
        path = f"general_settings.user_header_mappings[{index}]"
        name = entry.get("header_name") if isinstance(entry, dict) else None
        if not isinstance(name, str) or not _HEADER_NAME.fullmatch(name.strip()):
            reader.error(f"{path}.header_name: must be an HTTP header name")
            continue
        role = entry.get("litellm_user_role")
        if role == "customer":
            names.append(name.strip().lower())
        else:
            reader.warn(
                f"{path}: role {role!r} is not used by Tollgate (only 'customer' names who is charged), ignored"
            )
    single = reader.string(general, "user_header_name", "general_settings")
    if single is not None and not _HEADER_NAME.fullmatch(single.strip()):
        reader.error("general_settings.user_header_name: must be an HTTP header name")
    elif single:
        names.append(single.strip().lower())
    return tuple(dict.fromkeys(names))


def _deployments(reader: Reader, model_list: Any, settings: Settings) -> list[Deployment]:
    if model_list is None:
        reader.error("model_list: missing; configure at least one model")
        return []
    if not isinstance(model_list, list):
        reader.error("model_list: must be a list of models")
        return []
    deployments = []
    for index, entry in enumerate(model_list):
        deployment = _deployment(reader, entry, f"model_list[{index}]", settings)
        if deployment is None:
            continue
        if any(d.id == deployment.id for d in deployments):
            deployment = replace(deployment, id=f"{deployment.id}-{index}")
        deployments.append(deployment)
    if not model_list:
        reader.error("model_list: is empty; configure at least one model")
    return deployments


def _deployment(reader: Reader, entry: Any, path: str, settings: Settings) -> Deployment | None:
    if not isinstance(entry, dict):
        reader.error(f"{path}: must be a mapping with model_name and litellm_params")
        return None
    reader.check_keys(entry, path, LITELLM_ENTRY, ())
    model_name = entry.get("model_name")
    if not isinstance(model_name, str) or not model_name.strip():
        reader.error(f"{path}.model_name: must be a non-empty string")
    params = reader.mapping(entry, "litellm_params", path, required=True)
    info = reader.mapping(entry, "model_info", path)
    params_path, info_path = f"{path}.litellm_params", f"{path}.model_info"
    reader.check_keys(params, params_path, _DEPLOYMENT_PARAMS, LITELLM_PARAMS, "litellm_params")
    reader.check_keys(info, info_path, _MODEL_INFO_KEYS, LITELLM_MODEL_INFO)

    wildcard = isinstance(model_name, str) and is_wildcard(model_name)
    api_base = reader.resolve(params.get("api_base"), f"{params_path}.api_base", optional=True, missing=[])
    target = read_target(params.get("model"), wildcard, api_base if isinstance(api_base, str) else None)
    for message, report in ((target.error, reader.error), (target.warning, reader.warn)):
        if message:
            report(f"{params_path}.model: {message}")
    if target.provider is None:
        return None
    provider, model = target.provider, target.model

    missing_env = []
    values = {}
    for key in ("api_base", "api_key", "api_version", "region_name", "mock_response"):
        values[key] = reader.resolve(params.get(key), f"{params_path}.{key}", optional=True, missing=missing_env)
    if missing_env:
        reader.warn(
            f"{path}: environment variable {', '.join(missing_env)} is not set; deployment '{model_name}' skipped"
        )
        return None
    spec = PROVIDERS.get(provider)
    api_key = values["api_key"] or (reader.env.get(spec.key_env) if spec and spec.key_env else None)
    if spec is not None and spec.needs_base and not values["api_base"]:
        reader.error(f"{params_path}.api_base: required for provider '{provider}'")
    region = values["region_name"]
    if region is not None and not isinstance(region, str):
        reader.error(f"{params_path}.region_name: must be a string")

    return Deployment(
        id=str(info.get("id") or _deployment_id(model_name, params)),
        model_name=str(model_name),
        provider=provider,
        model=model,
        api_base=values["api_base"],
        api_key=api_key,
        api_version=values["api_version"],
        region_name=region,
        rpm=reader.integer(params, "rpm", params_path, None),
        timeout=reader.number(params, "timeout", params_path, settings.request_timeout),
        prices=_custom_prices(reader, params, info, params_path, info_path),
        base_model=reader.string(info, "base_model", info_path),
        mock_response=values["mock_response"],
        mock_latency_ms=reader.integer(params, "mock_latency_ms", params_path, 0),
        max_output_tokens=reader.integer(info, "max_output_tokens", info_path, None),
        drop_params=reader.boolean(params, "drop_params", params_path)
        if "drop_params" in params
        else settings.drop_params,
        provider_keys=() if provider else _provider_keys(reader.env),
    )


def _provider_keys(env: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """Each provider's key from its usual environment variable, for a wildcard that picks the provider per call."""
    return tuple(
        (name, env[spec.key_env]) for name, spec in PROVIDERS.items() if spec.key_env and env.get(spec.key_env)
    )


def _deployment_id(model_name: Any, params: dict) -> str:
    """A stable id derived from the entry, as LiteLLM derives `model_info.id`."""
    digest = hashlib.sha256(json.dumps([model_name, params], sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]


def _custom_prices(reader: Reader, params: dict, info: dict, params_path: str, info_path: str) -> Prices | None:
    """Custom prices from litellm_params, else model_info; None when neither sets one."""
    for source, source_path in ((params, params_path), (info, info_path)):
        if not any(source.get(key) is not None for key in _PRICE_KEYS):
            continue
        values = {key: reader.money(source.get(key), f"{source_path}.{key}") for key in _PRICE_KEYS}
        return Prices(
            input=values["input_cost_per_token"] or Decimal(0),
            output=values["output_cost_per_token"] or Decimal(0),
            cache_read=values["cache_read_input_token_cost"],
            cache_write=values["cache_creation_input_token_cost"],
        )
    return None
