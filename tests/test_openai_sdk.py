"""The official `openai` Python SDK works unchanged against Tollgate (real gunicorn, local upstream)."""

from __future__ import annotations

import openai
import pytest

from tests.fake_upstream import FakeUpstream
from tests.helpers import MASTER_KEY, PRICED, write_config
from tests.servers import server_env, tollgate_server


@pytest.fixture(scope="module")
def sdk(tmp_path_factory, module_database_url):
    directory = tmp_path_factory.mktemp("sdk")
    with FakeUpstream(chunks=4) as upstream:
        models = [
            {
                "model_name": "gpt-test",
                "litellm_params": {"model": "openai/gpt-test", "api_base": upstream.url, "api_key": "none", **PRICED},
            },
            {
                "model_name": "embed-test",
                "litellm_params": {"model": "openai/embed-test", "api_base": upstream.url, "api_key": "none", **PRICED},
            },
            {"model_name": "mock-test", "litellm_params": {"model": "mock/mock-test", **PRICED}},
        ]
        env = server_env(write_config(directory, models), module_database_url())
        with tollgate_server(env, workers=2) as server:
            yield openai.OpenAI(base_url=f"{server.url}/v1", api_key=MASTER_KEY, max_retries=0), server


def spend(server, customer):
    import requests

    from tests.helpers import AUTH

    return requests.get(
        f"{server.url}/customer/info", params={"end_user_id": customer}, headers=AUTH, timeout=10
    ).json()["spend"]


def test_sdk_chat(sdk):
    client, server = sdk
    completion = client.chat.completions.create(
        model="gpt-test", user="sdk-sync", messages=[{"role": "user", "content": "hi"}]
    )
    assert completion.choices[0].message.content == "fake reply"
    assert completion.usage.total_tokens == 40
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-test", user="sdk-sync", messages=[{"role": "user", "content": "hi"}]
    )
    assert raw.headers["x-litellm-response-cost"] == "0.06"
    assert spend(server, "sdk-sync") == 0.12


def test_sdk_streaming(sdk):
    client, server = sdk
    stream = client.chat.completions.create(
        model="gpt-test",
        user="sdk-stream",
        stream=True,
        stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "hi"}],
    )
    chunks = list(stream)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text == "word0 word1 word2 word3 "
    assert chunks[-1].usage.total_tokens == 40
    assert spend(server, "sdk-stream") == 0.06


def test_sdk_embeddings(sdk):
    client, server = sdk
    result = client.embeddings.create(model="embed-test", input=["a", "b"], user="sdk-embed")
    assert len(result.data[0].embedding) == 3
    assert spend(server, "sdk-embed") == 0.02


def test_sdk_sees_errors_as_its_own_exceptions(sdk):
    client, _ = sdk
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "hi"}])
    assert "no-such-model" in caught.value.message
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=client.base_url, api_key="sk-wrong", max_retries=0).models.list()
    assert [model.id for model in client.models.list()] == ["gpt-test", "embed-test", "mock-test"]


def test_sdk_responses_api_plain_and_streamed(sdk):
    client, server = sdk
    response = client.responses.create(model="mock-test", input="Say hi", user="sdk-responses")
    assert response.output_text.startswith("This is a mock response") and response.usage.input_tokens > 0
    events = list(client.responses.create(model="mock-test", input="Say hi", user="sdk-responses", stream=True))
    assert events[0].type == "response.created" and events[-1].type == "response.completed"
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == response.output_text
    assert spend(server, "sdk-responses") > 0


def test_sdk_text_completions_and_one_model(sdk):
    client, server = sdk
    completion = client.completions.create(model="mock-test", prompt="Once upon a time", user="sdk-legacy")
    assert completion.choices[0].text and completion.usage.total_tokens > 0
    assert spend(server, "sdk-legacy") > 0
    assert client.models.retrieve("embed-test").id == "embed-test"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")
