"""Reading typed values out of a raw config document, collecting every problem and warning with
its key path (`config.py` uses one `Reader` per load), and resolving `os.environ/NAME` references."""

from __future__ import annotations

import math
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from config_keys import judge

ENV_PREFIX = "os.environ/"


class Reader:
    """Collects problems and warnings while reading typed values out of the raw document."""

    def __init__(self, environ: Mapping[str, str]):
        self.env: Mapping[str, str] = environ
        self.problems: list[str] = []
        self.warnings: list[str] = []

    def error(self, message: str) -> None:
        self.problems.append(message)

    def warn(self, message: str) -> None:
        self.warnings.append(message)

    def check_keys(
        self, section: dict, path: str, known, litellm, section_name: str | None = None, elsewhere=None
    ) -> None:
        """Judge every key of `section` that Tollgate does not read (`config_keys.judge`)."""
        for key in section:
            if key in known:
                continue
            where = f"{path}.{key}" if path else str(key)
            verdict = judge(where, key, known, litellm, section_name or path, elsewhere)
            if verdict.error:
                self.error(verdict.error)
            elif verdict.warning:
                self.warn(verdict.warning)

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
