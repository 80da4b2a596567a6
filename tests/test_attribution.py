"""Who a call is charged to: every spelling, the coercion rules, and refused ids (SPEC §5)."""

from __future__ import annotations

import json

import pytest

from errors import BadRequest
from spend.attribution import resolve_customer_id
from tests.helpers import AUTH, assert_openai_error, chat_body


@pytest.mark.parametrize(
    ("headers", "body", "expected"),
    [
        ({"x-litellm-customer-id": "h1"}, {"user": "u"}, "h1"),
        ({"x-litellm-end-user-id": "h2"}, {"user": "u"}, "h2"),
        ({"x-litellm-customer-id": "h1", "x-litellm-end-user-id": "h2"}, {}, "h1"),
        ({}, {"user": "u", "litellm_metadata": {"user": "lm"}}, "u"),
        ({}, {"litellm_metadata": {"user": "lm"}, "metadata": {"user_id": "md"}}, "lm"),
        ({}, {"litellm_metadata": json.dumps({"user": "lm-json"})}, "lm-json"),
        ({}, {"metadata": {"user_id": "md"}}, "md"),
        ({}, {"metadata": json.dumps({"user_id": "md-json"})}, "md-json"),
        ({}, {"metadata": "not json"}, None),
        ({}, {"user": "  padded  "}, "padded"),
        ({}, {"user": "   ", "metadata": {"user_id": "next"}}, "next"),
        ({"x-litellm-customer-id": ""}, {"user": "u"}, "u"),
        ({}, {"user": 42}, "42"),
        ({}, {"user": 4.5}, "4.5"),
        ({}, {"user": True}, None),
        ({}, {"user": ["a"]}, None),
        ({}, {"user": {"id": "a"}}, None),
        ({}, {"user": None}, None),
        ({}, {}, None),
    ],
)
def test_resolve_customer_id(headers, body, expected):
    assert resolve_customer_id(headers, body) == expected


@pytest.mark.parametrize("bad", ["x" * 257, "a\nb", "tab\there", "nul\x00", "esc\x1b[31m"])
def test_unusable_customer_id_is_refused(bad):
    with pytest.raises(BadRequest):
        resolve_customer_id({}, {"user": bad})


def test_id_of_exactly_256_characters_is_accepted():
    assert resolve_customer_id({}, {"user": "y" * 256}) == "y" * 256


@pytest.mark.parametrize(
    "spelling",
    [
        {"headers": {"x-litellm-customer-id": "spelled"}, "body": {}},
        {"headers": {"x-litellm-end-user-id": "spelled"}, "body": {}},
        {"headers": {}, "body": {"user": "spelled"}},
        {"headers": {}, "body": {"litellm_metadata": {"user": "spelled"}}},
        {"headers": {}, "body": {"metadata": {"user_id": "spelled"}}},
    ],
)
def test_every_spelling_charges_the_customer_over_http(client, spelling):
    body = {**chat_body(user=None, model="mock-model"), **spelling["body"]}
    response = client.post("/chat/completions", json=body, headers={**AUTH, **spelling["headers"]})

    assert response.status_code == 200
    info = client.get("/customer/info?end_user_id=spelled", headers=AUTH).get_json()
    assert info["spend"] == float(response.headers["x-litellm-response-cost"])


def test_enforce_user_param_refuses_calls_without_customer(make_app):
    client = make_app(general_settings={"enforce_user_param": True}).test_client()
    response = client.post("/chat/completions", json=chat_body(user=None, model="mock-model"), headers=AUTH)
    error = assert_openai_error(response, 401, "auth_error")
    assert error["message"] == "Authentication Error, 'user' param not passed in. 'enforce_user_param'=True"

    allowed = client.post("/chat/completions", json=chat_body(user="named", model="mock-model"), headers=AUTH)
    assert allowed.status_code == 200
