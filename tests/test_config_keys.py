"""Config keys Tollgate does not read: LiteLLM's are warnings, typos of Tollgate's and the few that
would lift a limit are start-up errors naming the likely key (SPEC §2). Configured customer headers."""

from __future__ import annotations

import pytest

from config import ConfigError, parse_config
from tests.helpers import AUTH, MASTER_KEY, chat_body

ENV = {"LITELLM_MASTER_KEY": MASTER_KEY}
MODELS = [{"model_name": "m", "litellm_params": {"model": "mock/m"}}]


def problems_and_warnings(**sections) -> tuple[list[str], tuple[str, ...]]:
    document = {"model_list": MODELS, **sections}
    try:
        return [], parse_config(document, ENV).warnings
    except ConfigError as exc:
        return exc.problems, ()


@pytest.mark.parametrize(
    ("sections", "problem"),
    [
        ({"general_settings": {"enforce_user_params": True}},
         "general_settings.enforce_user_params: unknown key; did you mean 'enforce_user_param'?"),
        ({"general_settings": {"Enforce-User-Param": True}},
         "general_settings.Enforce-User-Param: unknown key; did you mean 'enforce_user_param'?"),
        ({"litellm_settings": {"max_end_user_budget_idd": "tier"}},
         "litellm_settings.max_end_user_budget_idd: unknown key; did you mean 'max_end_user_budget_id'?"),
        ({"litellm_settings": {"block_request_for_models_without_pricing": True}},
         "litellm_settings.block_request_for_models_without_pricing: unknown key; did you mean "
         "'block_requests_for_models_without_pricing'?"),
        ({"model_list": [{"model_name": "m", "litellm_params": {"model": "mock/m", "input_cost_per_tokn": 1}}]},
         "model_list[0].litellm_params.input_cost_per_tokn: unknown key; did you mean 'input_cost_per_token'?"),
        ({"model_list": [{"model_name": "m", "litellm_params": {"model": "mock/m"},
                          "model_info": {"output_cost_per_tokens": 1}}]},
         "model_list[0].model_info.output_cost_per_tokens: unknown key; did you mean 'output_cost_per_token'?"),
        ({"general_setings": {"master_key": "sk-x"}}, "general_setings: unknown key; did you mean 'general_settings'?"),
        ({"litellm_settings": {"enforce_user_param": True}},
         "litellm_settings.enforce_user_param: Tollgate reads this as general_settings.enforce_user_param"),
    ],
)  # fmt: skip
def test_a_typo_of_a_key_tollgate_reads_is_a_start_up_error_naming_the_likely_key(sections, problem):
    problems, _ = problems_and_warnings(**sections)
    assert len(problems) == 1 and problems[0].startswith(problem), problems


@pytest.mark.parametrize(
    ("sections", "key", "instead"),
    [
        ({"litellm_settings": {"max_end_user_budget": 5}}, "litellm_settings.max_end_user_budget",
         "max_end_user_budget_id"),
        ({"litellm_settings": {"max_budget": 100}}, "litellm_settings.max_budget", "customers budgets"),
        ({"litellm_settings": {"blocked_user_list": ["bad"]}}, "litellm_settings.blocked_user_list", "/customer/block"),
        ({"model_list": [{"model_name": "m", "litellm_params": {"model": "mock/m", "max_budget": 10}}]},
         "model_list[0].litellm_params.max_budget", "budget the customers"),
    ],
)  # fmt: skip
def test_a_litellm_key_whose_being_ignored_would_lift_a_limit_is_refused(sections, key, instead):
    problems, _ = problems_and_warnings(**sections)
    assert len(problems) == 1 and problems[0].startswith(f"{key}: refused: ")
    assert instead.split()[0] in problems[0]


@pytest.mark.parametrize(
    ("sections", "warning"),
    [
        ({"litellm_settings": {"success_callback": ["langfuse"]}},
         "litellm_settings.success_callback: not supported by Tollgate, ignored"),
        ({"general_settings": {"max_response_size_mb": 10}},
         "general_settings.max_response_size_mb: not supported by Tollgate, ignored"),
        ({"model_list": [{"model_name": "m", "litellm_params": {"model": "mock/m", "input_cost_per_second": 0.1}}]},
         "model_list[0].litellm_params.input_cost_per_second: not supported by Tollgate, ignored"),
        ({"model_list": [{"model_name": "m", "litellm_params": {"model": "mock/m"},
                          "model_info": {"max_input_tokens": 8192}}]},
         "model_list[0].model_info.max_input_tokens: not supported by Tollgate, ignored"),
        ({"litellm_settings": {"sucess_callback": ["langfuse"]}},
         "litellm_settings.sucess_callback: not a LiteLLM or Tollgate key (did you mean 'success_callback'?"),
        ({"general_settings": {"frobnicate": True}},
         "general_settings.frobnicate: not a LiteLLM or Tollgate key, ignored"),
    ],
)  # fmt: skip
def test_litellm_keys_and_unknown_keys_far_from_tollgates_are_warnings(sections, warning):
    problems, warnings = problems_and_warnings(**sections)
    assert problems == []
    assert len(warnings) == 1 and warnings[0].startswith(warning), warnings


def test_a_configured_customer_header_names_who_is_charged(make_app):
    general = {
        "user_header_mappings": [
            {"header_name": "X-OpenWebUI-User-Id", "litellm_user_role": "customer"},
            {"header_name": "X-Internal-User", "litellm_user_role": "internal_user"},
        ],
        "user_header_name": "X-Legacy-User",
    }
    client = make_app(general_settings=general).test_client()
    headers = {**AUTH, "X-OpenWebUI-User-Id": "webui-7", "X-Legacy-User": "legacy-7"}
    assert (
        client.post("/chat/completions", json=chat_body(user="body-7", model="mock-model"), headers=headers).status_code
        == 200
    )
    legacy_only = {**AUTH, "X-Legacy-User": "legacy-7", "X-Internal-User": "staff"}
    assert (
        client.post("/chat/completions", json=chat_body(user=None, model="mock-model"), headers=legacy_only).status_code
        == 200
    )
    for customer, charged in (("webui-7", True), ("legacy-7", True), ("body-7", False), ("staff", False)):
        found = client.get(f"/customer/info?end_user_id={customer}", headers=AUTH).status_code == 200
        assert found is charged, customer


def test_litellms_own_headers_still_come_before_configured_ones(make_app):
    client = make_app(general_settings={"user_header_name": "x-my-user"}).test_client()
    headers = {**AUTH, "x-my-user": "mine", "x-litellm-customer-id": "litellms"}
    client.post("/chat/completions", json=chat_body(user=None, model="mock-model"), headers=headers)
    assert client.get("/customer/info?end_user_id=litellms", headers=AUTH).status_code == 200
    assert client.get("/customer/info?end_user_id=mine", headers=AUTH).status_code == 404


@pytest.mark.parametrize(
    "general",
    [{"user_header_mappings": "x-user"}, {"user_header_mappings": [{"litellm_user_role": "customer"}]},
     {"user_header_name": "bad header"}],
)  # fmt: skip
def test_an_unusable_customer_header_setting_is_a_start_up_error(general):
    problems, _ = problems_and_warnings(general_settings=general)
    assert len(problems) == 1 and problems[0].startswith("general_settings.user_header")
