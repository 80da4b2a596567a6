"""A corpus of configs in LiteLLM's documented styles (examples/litellm/) starts as it is: through
`cli.py check-config`, and through a start-up of the app that serves the models it names."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

from app import create_app, stop_background_work
from config import load_config
from tests.helpers import AUTH, MASTER_KEY, anthropic_reply, assert_openai_error, chat_body, openai_reply
from tests.servers import REPO

CORPUS = sorted((REPO / "examples" / "litellm").glob("*.yaml"))
KEYS = {
    "OPENAI_API_KEY": "sk-openai-test",
    "ANTHROPIC_API_KEY": "sk-ant-test",
    "AZURE_API_KEY": "az-test",
    "AZURE_API_BASE": "https://my-resource.openai.azure.com",
    "AZURE_API_KEY_EU": "az-eu-test",
    "AZURE_API_KEY_CA": "az-ca-test",
    "GROQ_API_KEY": "gsk-test",
    "MISTRAL_API_KEY": "mistral-test",
    "CUSTOM_MODEL_KEY": "custom-test",
    "REDIS_HOST": "redis.internal",
    "REDIS_PASSWORD": "redis-test",
}
# The styles the corpus must cover (the list), each a file.
STYLES = {"simple", "load_balancing", "azure", "wildcard", "bare_names", "customers_webhooks", "budgets", "fallbacks"}


def test_the_corpus_covers_every_documented_style():
    assert {path.stem for path in CORPUS} == STYLES


@pytest.fixture
def env(database_url):
    return {"LITELLM_MASTER_KEY": MASTER_KEY, "DATABASE_URL": database_url(), **KEYS}


@pytest.mark.parametrize("path", CORPUS, ids=lambda path: path.stem)
def test_check_config_accepts_it(path, env):
    done = subprocess.run(
        [sys.executable, "cli.py", "check-config", str(path)],
        cwd=REPO,
        env={"PATH": os.environ["PATH"], **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.rstrip().endswith("config OK") and "Traceback" not in done.stderr
    listed = [
        line.removeprefix("model ").split(": ", 1)[0] for line in done.stdout.splitlines() if line.startswith("model ")
    ]
    assert listed == [entry["model_name"] for entry in yaml.safe_load(path.read_text())["model_list"]]


@pytest.mark.parametrize("path", CORPUS, ids=lambda path: path.stem)
def test_the_app_starts_with_it_and_serves_its_models(path, env, upstream, stores):
    app = create_app(load_config(str(path), env), http=upstream.transport())
    stores.append(app.extensions["tollgate"].store)
    try:
        client = app.test_client()
        assert client.get("/health/readiness").status_code == 200
        names = list(dict.fromkeys(entry["model_name"] for entry in yaml.safe_load(path.read_text())["model_list"]))
        assert [model["id"] for model in client.get("/v1/models", headers=AUTH).get_json()["data"]] == names
    finally:
        stop_background_work(app)


ANTHROPIC_MESSAGE = anthropic_reply("msg_1")


@pytest.mark.parametrize(
    ("style", "model", "url", "answer", "sent_model"),
    [
        ("simple", "gpt-4o", "https://api.openai.com/v1/chat/completions", openai_reply(), "gpt-4o"),
        ("bare_names", "claude", "https://api.anthropic.com/v1/messages", ANTHROPIC_MESSAGE,
         "claude-3-5-sonnet-20241022"),
        ("wildcard", "claude-3-5-haiku-20241022", "https://api.anthropic.com/v1/messages", ANTHROPIC_MESSAGE,
         "claude-3-5-haiku-20241022"),
        ("wildcard", "groq/llama-3.1-8b-instant", "https://api.groq.com/openai/v1/chat/completions", openai_reply(),
         "llama-3.1-8b-instant"),
        ("fallbacks", "gpt-4o", "https://api.openai.com/v1/chat/completions", openai_reply(), "gpt-4o"),
    ],
)  # fmt: skip
def test_a_call_goes_where_litellm_would_send_it_and_is_charged(
    style, model, url, answer, sent_model, env, upstream, stores
):
    app = create_app(load_config(str(REPO / "examples" / "litellm" / f"{style}.yaml"), env), http=upstream.transport())
    stores.append(app.extensions["tollgate"].store)
    upstream.post(url, json=answer)
    response = app.test_client().post("/chat/completions", json=chat_body(model=model, user="corpus"), headers=AUTH)
    assert response.status_code == 200, response.get_json()
    assert json.loads(upstream.calls[0].request.body)["model"] == sent_model
    assert float(response.headers["x-litellm-response-cost"]) > 0


def test_the_budgets_style_refuses_customers_until_its_default_tier_exists(env, upstream, stores):
    app = create_app(load_config(str(REPO / "examples" / "litellm" / "budgets.yaml"), env), http=upstream.transport())
    stores.append(app.extensions["tollgate"].store)
    client = app.test_client()
    assert_openai_error(client.post("/chat/completions", json=chat_body(model="gpt-4o-mini"), headers=AUTH), 503)
    client.post("/budget/new", json={"budget_id": "free-tier", "max_budget": 1}, headers=AUTH)
    upstream.post("https://api.openai.com/v1/chat/completions", json=openai_reply())
    assert client.post("/chat/completions", json=chat_body(model="gpt-4o-mini"), headers=AUTH).status_code == 200
    assert_openai_error(
        client.post("/chat/completions", json=chat_body(model="gpt-4o-mini", user=None), headers=AUTH), 401
    )
