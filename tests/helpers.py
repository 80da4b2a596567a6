"""Assertions and builders shared by the tests."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import yaml

MASTER_KEY = "sk-test-master-1234"
AUTH = {"Authorization": f"Bearer {MASTER_KEY}"}
UPSTREAM = "https://upstream.test/v1"
UPSTREAM_KEY = "sk-upstream-secret"

# The customer object's keys, in the order LiteLLM's seed shows them (SPEC §8).
CUSTOMER_KEYS = [
    "user_id",
    "blocked",
    "alias",
    "spend",
    "allowed_model_region",
    "default_model",
    "models",
    "budget_id",
    "litellm_budget_table",
]

# Prices of the canonical LiteLLM test: 20 prompt + 20 completion tokens cost exactly 0.06.
PRICED = {"input_cost_per_token": 0.001, "output_cost_per_token": 0.002}
DEFAULT_MODELS = [
    {
        "model_name": "gpt-test",
        "litellm_params": {"model": "openai/gpt-test", "api_base": UPSTREAM, "api_key": UPSTREAM_KEY, **PRICED},
    },
    {"model_name": "mock-model", "litellm_params": {"model": "mock/mock-model", **PRICED}},
]


def write_config(directory: Path, model_list=None, **sections) -> Path:
    """A config.yaml in `directory` with the given model list and sections."""
    document = {"model_list": DEFAULT_MODELS if model_list is None else model_list, **sections}
    document.setdefault("general_settings", {}).setdefault("master_key", "os.environ/LITELLM_MASTER_KEY")
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def chat_body(user="cust-1", model="gpt-test", **extra) -> dict:
    body = {"model": model, "messages": [{"role": "user", "content": "hello"}], **extra}
    if user is not None:
        body["user"] = user
    return body


def openai_reply(prompt_tokens=20, completion_tokens=20, model="gpt-test-2024", **usage_extra) -> dict:
    """A chat.completion body as OpenAI returns it."""
    return {
        "id": "chatcmpl-123",
        "object": "chat.completion",
        "created": 1700000000,
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            **usage_extra,
        },
    }


def anthropic_reply(message_id="msg_01XFDUDYJgAACzvnptvVoYEL", input_tokens=10, output_tokens=5) -> dict:
    """A Messages API answer as Anthropic returns it."""
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": "claude-3-5-haiku-20241022",
        "content": [{"type": "text", "text": "Hi"}],
        "stop_reason": "end_turn",
        "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
    }


def assert_openai_error(response, status: int, type: str | None = None, param: str | None = ...) -> dict:
    """The response is an error with the OpenAI envelope, no secrets and no internals in it."""
    assert response.status_code == status, (response.status_code, _text(response))
    body = response.get_json() if hasattr(response, "get_json") else response.json()
    assert list(body) == ["error"], body
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert error["code"] == str(status)
    assert isinstance(error["message"], str) and error["message"]
    if type is not None:
        assert error["type"] == type, error
    if param is not ...:
        assert error["param"] == param, error
    text = json.dumps(body)
    for secret in (MASTER_KEY, UPSTREAM_KEY, "Traceback", 'File "', "/work/", "upstream.test"):
        assert secret not in text, f"{secret!r} leaked into {text}"
    return error


def _text(response) -> str:
    return response.get_data(as_text=True) if hasattr(response, "get_data") else response.text


def sql_rows(store, sql: str, params=()) -> list[tuple]:
    """A raw query on the store's own database, on either engine (`?` parameters); money columns
    come back as SQLite's text or PostgreSQL's Decimal: compare them with `int()`."""
    return store.engine.read(lambda tx: tx.execute(sql, params).fetchall())


def answer_while_the_writer_turn_is_held(store, look):
    """What `look()` returns while another thread holds the store's writer turn; it must not wait for it."""
    held, release = threading.Event(), threading.Event()

    def hold_the_writer_turn():
        with store.engine.transaction():
            held.set()
            release.wait(10)

    writer = threading.Thread(target=hold_the_writer_turn)
    writer.start()
    try:
        assert held.wait(5)
        found = []
        looker = threading.Thread(target=lambda: found.append(look()))
        looker.start()
        looker.join(5)
        assert not looker.is_alive(), "it waited for the writer's turn"
        return found[0]
    finally:
        release.set()
        writer.join()
