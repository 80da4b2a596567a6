"""Load and validate Tollgate's config.yaml (LiteLLM's format, supported subset).

`load_config(path, environ)` reads the file once and returns a frozen `Config`. Every problem
found is collected with its dotted key path and raised together as one `ConfigError`, so an
operator fixes a broken config in one pass. Keys that LiteLLM knows but Tollgate does not
implement become warnings (`Config.warnings`), never errors, so a LiteLLM config starts as is.

Run `python cli.py check-config [PATH]` to validate a file without starting the server.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal, InvalidOperation
from typing import Any

import yaml

from providers import PROVIDERS, UNSUPPORTED_PROVIDERS

ENV_PREFIX = "os.environ/"
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
}
_GENERAL_SETTINGS = {
    "master_key",
    "alerting",
    "alert_types",
    "budget_alert_thresholds",
    "enforce_user_param",
    "max_request_size_mb",
    "database_url",
}
_ALERT_TYPES = ("spend_tracked", "budget_alerts")


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
    alerting: tuple[str, ...] = ()
    alert_types: tuple[str, ...] = _ALERT_TYPES
    budget_alert_thresholds: tuple[Decimal, ...] = (Decimal("0.85"), Decimal("0.95"))
    enforce_user_param: bool = False
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES


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
    reader = _Reader(environ)
    if not isinstance(raw, dict):
        raise ConfigError(["(top level): must be a mapping of sections"])
    for key in raw:
        if key not in _TOP_LEVEL_KEYS:
            reader.warn(f"{key}: not supported by Tollgate, ignored")

    env_vars = reader.mapping(raw, "environment_variables")
    reader.env = {**environ, **{str(k): str(v) for k, v in env_vars.items() if v is not None}}

    litellm = reader.mapping(raw, "litellm_settings")
    general = reader.mapping(raw, "general_settings")
    reader.warn_unknown(litellm, "litellm_settings", _LITELLM_SETTINGS)
    reader.warn_unknown(general, "general_settings", _GENERAL_SETTINGS)
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
        warnings=tuple(reader.warnings),
    )


def _is_base64(text: str) -> bool:
    try:
        return bool(base64.b64decode(text, validate=True))
    except ValueError:
        return False


def _settings(reader: _Reader, litellm: dict, general: dict) -> Settings:
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
        alerting=tuple(reader.string_list(general, "alerting", "general_settings") or ()),
        alert_types=tuple(t for t in alert_types if t in _ALERT_TYPES),
        budget_alert_thresholds=tuple(sorted(thresholds)),
        enforce_user_param=reader.boolean(general, "enforce_user_param", "general_settings"),
        max_request_bytes=int(max_mb * 1024 * 1024) if max_mb else defaults.max_request_bytes,
    )


def _deployments(reader: _Reader, model_list: Any, settings: Settings) -> list[Deployment]:
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


def _deployment(reader: _Reader, entry: Any, path: str, settings: Settings) -> Deployment | None:
    if not isinstance(entry, dict):
        reader.error(f"{path}: must be a mapping with model_name and litellm_params")
        return None
    for key in entry:
        if key not in ("model_name", "litellm_params", "model_info"):
            reader.warn(f"{path}.{key}: not supported by Tollgate, ignored")
    model_name = entry.get("model_name")
    if not isinstance(model_name, str) or not model_name.strip():
        reader.error(f"{path}.model_name: must be a non-empty string")
    params = reader.mapping(entry, "litellm_params", path, required=True)
    info = reader.mapping(entry, "model_info", path)
    params_path, info_path = f"{path}.litellm_params", f"{path}.model_info"
    reader.warn_unknown(params, params_path, _DEPLOYMENT_PARAMS)
    reader.warn_unknown(info, info_path, _MODEL_INFO_KEYS)

    target = params.get("model")
    if not isinstance(target, str) or "/" not in target:
        reader.error(f"{params_path}.model: must be '<provider>/<model>', got {target!r}")
        return None
    provider, model = target.split("/", 1)
    if provider in UNSUPPORTED_PROVIDERS:
        reader.warn(f"{params_path}.model: provider '{provider}' is not supported by Tollgate; deployment skipped")
        return None
    if provider not in PROVIDERS:
        reader.error(f"{params_path}.model: unknown provider '{provider}' (supported: {', '.join(sorted(PROVIDERS))})")
        return None

    missing_env = []
    values = {}
    for key in ("api_base", "api_key", "api_version", "region_name", "mock_response"):
        values[key] = reader.resolve(params.get(key), f"{params_path}.{key}", optional=True, missing=missing_env)
    if missing_env:
        reader.warn(
            f"{path}: environment variable {', '.join(missing_env)} is not set; deployment '{model_name}' skipped"
        )
        return None
    spec = PROVIDERS[provider]
    api_key = values["api_key"] or (reader.env.get(spec.key_env) if spec.key_env else None)
    if spec.needs_base and not values["api_base"]:
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
    )


def _deployment_id(model_name: Any, params: dict) -> str:
    """A stable id derived from the entry, as LiteLLM derives `model_info.id`."""
    digest = hashlib.sha256(json.dumps([model_name, params], sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]


def _custom_prices(reader: _Reader, params: dict, info: dict, params_path: str, info_path: str) -> Prices | None:
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


class _Reader:
    """Collects problems and warnings while reading typed values out of the raw document."""

    def __init__(self, environ: Mapping[str, str]):
        self.env: Mapping[str, str] = environ
        self.problems: list[str] = []
        self.warnings: list[str] = []

    def error(self, message: str) -> None:
        self.problems.append(message)

    def warn(self, message: str) -> None:
        self.warnings.append(message)

    def warn_unknown(self, section: dict, path: str, known: set[str]) -> None:
        for key in section:
            if key not in known:
                self.warn(f"{path}.{key}: not supported by Tollgate, ignored")

    def resolve(self, value: Any, path: str, *, optional: bool = False, missing: list | None = None) -> Any:
        """Replace an `os.environ/NAME` reference with the variable's value."""
        if isinstance(value, str) and value.startswith(ENV_PREFIX):
            name = value[len(ENV_PREFIX) :]
            if name in self.env:
                return self.env[name]
            if missing is not None:
                missing.append(name)
            elif not optional:
                self.error(f"{path}: environment variable {name} is not set")
            return None
        return value

    def mapping(self, parent: dict, key: str, path: str = "", *, required: bool = False) -> dict:
        full = f"{path}.{key}" if path else key
        value = parent.get(key)
        if value is None:
            if required:
                self.error(f"{full}: missing")
            return {}
        if not isinstance(value, dict):
            self.error(f"{full}: must be a mapping")
            return {}
        return value

    def string(self, section: dict, key: str, path: str) -> str | None:
        value = self.resolve(section.get(key), f"{path}.{key}")
        if value is not None and not isinstance(value, str):
            self.error(f"{path}.{key}: must be a string")
            return None
        return value

    def string_list(self, section: dict, key: str, path: str) -> list[str] | None:
        value = section.get(key)
        if value is None:
            return None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.error(f"{path}.{key}: must be a list of strings")
            return None
        return value

    def boolean(self, section: dict, key: str, path: str) -> bool:
        value = self.resolve(section.get(key, False), f"{path}.{key}")
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        if not isinstance(value, bool):
            self.error(f"{path}.{key}: must be true or false")
            return False
        return value

    def number(self, section: dict, key: str, path: str, default: float | None) -> float | None:
        value = self.resolve(section.get(key), f"{path}.{key}")
        if value is None:
            return default
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = math.nan
        if isinstance(value, bool) or not math.isfinite(number) or number <= 0:
            self.error(f"{path}.{key}: must be a positive number, got {value!r}")
            return default
        return number

    def integer(self, section: dict, key: str, path: str, default: int | None) -> int | None:
        value = self.resolve(section.get(key), f"{path}.{key}")
        if value is None:
            return default
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            self.error(f"{path}.{key}: must be a whole number >= 0, got {value!r}")
            return default
        return value

    def money(self, value: Any, path: str) -> Decimal | None:
        """A non-negative exact amount; YAML floats go through their shortest repr."""
        value = self.resolve(value, path)
        if value is None:
            return None
        try:
            amount = Decimal(str(value)) if not isinstance(value, bool) else Decimal("NaN")
        except InvalidOperation:
            amount = Decimal("NaN")
        if not amount.is_finite() or amount < 0:
            self.error(f"{path}: must be a number >= 0, got {value!r}")
            return None
        return amount
