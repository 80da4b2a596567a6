"""Tollgate's log lines: where they go, their level and their format, and the request id they carry.

`LOG_FORMAT=text` (the default) writes `time LEVEL logger message` lines; `LOG_FORMAT=json` writes
one JSON object per line: `time`, `level`, `logger`, `message`, the `request_id` of the request
the line was written for (when there is one), whatever structured fields the caller passed with
`extra=`, and `exception` with the traceback of a `log.exception`. The level comes from
`LITELLM_LOG` (LiteLLM's variable). Both are read and checked with the config (`config.py`).

The formatting is a `logging.Formatter`, so every line of every `tollgate.*` logger follows the
format without the code that writes it knowing which one is on.
"""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
FORMATS = ("text", "json")
HANDLER_NAME = "tollgate"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"

# The id of the request this thread is serving. Set when a request starts and left in place until
# the next one: a stream's body is relayed, and its call logged, after Flask's request context ends.
_request_id: ContextVar[str | None] = ContextVar("tollgate_request_id", default=None)

# What every LogRecord has; anything else on a record came with `extra=` and is a structured field.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}


def set_request_id(request_id: str) -> None:
    """Mark the lines this thread writes from now on as belonging to `request_id`."""
    _request_id.set(request_id)


def current_request_id() -> str | None:
    return _request_id.get()


class JsonFormatter(logging.Formatter):
    """One JSON object per line; money and other values are written as the caller formatted them."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None) or current_request_id()
        if request_id is not None:
            line["request_id"] = request_id
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in line:
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def formatter(log_format: str) -> logging.Formatter:
    return JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)


def configure_logging(level: str = "INFO", log_format: str = "text") -> None:
    """Send the `tollgate` loggers' lines to stderr in `log_format` at `level`.

    Called by every `create_app` (a config reload may change both): Tollgate's own handler is
    replaced; a host application that put its own handlers on the `tollgate` logger keeps them,
    and only the level is set.
    """
    logger = logging.getLogger("tollgate")
    logger.setLevel(level)
    ours = [handler for handler in logger.handlers if handler.get_name() == HANDLER_NAME]
    if logger.handlers and not ours:
        return
    for handler in ours:
        logger.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.set_name(HANDLER_NAME)
    handler.setFormatter(formatter(log_format))
    logger.addHandler(handler)


def gunicorn_logconfig(log_format: str, level: str) -> dict:
    """gunicorn's `logconfig_dict`: its own lines (workers booting and exiting, timeouts, the access
    log when one is on) go to stderr in Tollgate's format and at its level, so a log reader meets one
    format. The values are the environment's, checked with the config; anything else is the default."""
    level = level.strip().upper() if level.strip().upper() in LEVELS else "INFO"
    log_format = log_format.strip().lower() if log_format.strip().lower() in FORMATS else "text"
    formatter = {"()": "logs.JsonFormatter"} if log_format == "json" else {"format": TEXT_FORMAT}
    handler = {"class": "logging.StreamHandler", "formatter": "tollgate", "stream": "ext://sys.stderr"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "root": {"level": "WARNING", "handlers": []},
        "formatters": {"tollgate": formatter},
        "handlers": {"tollgate": handler},
        "loggers": {
            "gunicorn.error": {"level": level, "handlers": ["tollgate"], "propagate": False},
            "gunicorn.access": {"level": "INFO", "handlers": ["tollgate"], "propagate": False},
        },
    }
