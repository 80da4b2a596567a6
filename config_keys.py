"""Which config keys LiteLLM reads that Tollgate does not, and how a key Tollgate does not read is judged.

A key in a section Tollgate reads is one of four kinds (`judge`):

- read by Tollgate: used;
- read by LiteLLM only: a warning, and ignored, so a LiteLLM config starts as is;
- refused (`REFUSED`): a LiteLLM key whose being ignored would lift a spending limit or serve a
  customer the operator meant to stop; a start-up error saying what to use instead;
- unknown to both: when it is close to a key Tollgate reads (`enforce_user_params`,
  `input_cost_per_tokn`), or is one Tollgate reads in the other settings section
  (`enforce_user_param` under `litellm_settings`), it is a mistake that would silently change what
  is charged or enforced, so a start-up error names the likely key; anything else is a warning (a
  typo of a key Tollgate ignores anyway changes nothing).

The LiteLLM lists hold the keys documented in LiteLLM's config reference, and with care every one
close to a key Tollgate reads, so that none of LiteLLM's own keys is taken for a typo.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass

TYPO_CUTOFF = 0.85

PRICE_KEYS_LITELLM_ONLY = {
    "input_cost_per_second",
    "output_cost_per_second",
    "input_cost_per_token_batches",
    "output_cost_per_token_batches",
    "input_cost_per_token_above_128k_tokens",
    "output_cost_per_token_above_128k_tokens",
    "input_cost_per_token_above_200k_tokens",
    "output_cost_per_token_above_200k_tokens",
    "cache_read_input_token_cost_above_200k_tokens",
    "cache_creation_input_token_cost_above_200k_tokens",
    "cache_creation_input_token_cost_above_1hr",
    "input_cost_per_token_priority",
    "output_cost_per_token_priority",
    "input_cost_per_token_flex",
    "output_cost_per_token_flex",
    "input_cost_per_audio_token",
    "output_cost_per_audio_token",
    "cache_read_input_audio_token_cost",
    "output_cost_per_reasoning_token",
    "input_cost_per_character",
    "output_cost_per_character",
    "input_cost_per_image",
    "output_cost_per_image",
    "input_cost_per_pixel",
    "output_cost_per_pixel",
    "input_cost_per_query",
    "input_cost_per_request",
    "input_cost_per_audio_per_second",
    "input_cost_per_video_per_second",
    "output_cost_per_video_per_second",
    "search_context_cost_per_query",
    "citation_cost_per_token",
    "file_search_cost_per_1k_calls",
    "vector_store_cost_per_gigabyte_per_day",
    "computer_use_input_cost_per_1k_tokens",
    "computer_use_output_cost_per_1k_tokens",
    "tiered_pricing",
}

LITELLM_TOP_LEVEL = {
    "router_settings",
    "callback_settings",
    "guardrails",
    "credential_list",
    "mcp_servers",
    "mcp_tools",
    "pass_through_endpoints",
    "include",
    "prompts",
    "vector_store_registry",
    "search_tools",
    "model_group_settings",
    "files_settings",
    "finetune_settings",
    "assistant_settings",
    "agent_list",
    "litellm_proxy_admin_settings",
}

LITELLM_ENTRY = {"model_name", "litellm_params", "model_info"}

LITELLM_PARAMS = {
    "custom_llm_provider",
    "api_type",
    "organization",
    "stream_timeout",
    "max_retries",
    "num_retries",
    "max_parallel_requests",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "stop",
    "seed",
    "stream",
    "n",
    "presence_penalty",
    "frequency_penalty",
    "response_format",
    "reasoning_effort",
    "extra_headers",
    "extra_body",
    "headers",
    "order",
    "weight",
    "tags",
    "base_model",
    "model_info",
    "budget_duration",
    "max_budget",
    "litellm_credential_name",
    "configurable_clientside_auth_params",
    "merge_reasoning_content_in_choices",
    "use_in_pass_through",
    "use_litellm_proxy",
    "mock_timeout",
    "mock_delay",
    "mock_tool_calls",
    "input_cost_per_token_above_1hr",
    "aws_access_key_id",
    "aws_secret_access_key",
    "aws_session_token",
    "aws_region_name",
    "aws_role_name",
    "aws_session_name",
    "aws_profile_name",
    "aws_web_identity_token",
    "aws_sts_endpoint",
    "aws_bedrock_runtime_endpoint",
    "aws_external_id",
    "vertex_project",
    "vertex_location",
    "vertex_credentials",
    "vertex_ai_project",
    "vertex_ai_location",
    "watsonx_region_name",
    "azure_ad_token",
    "azure_ad_token_provider",
    "azure_username",
    "azure_password",
    "azure_scope",
    "tenant_id",
    "client_id",
    "client_secret",
    "auto_router_config",
    "auto_router_config_path",
    "auto_router_default_model",
    "auto_router_embedding_model",
    "region",
    "cache_control_injection_points",
    "guardrails",
    "disable_background_health_check",
    "health_check_model",
    "additional_drop_params",
    "supports_system_message",
    *PRICE_KEYS_LITELLM_ONLY,
}

LITELLM_MODEL_INFO = {
    "max_tokens",
    "max_input_tokens",
    "litellm_provider",
    "access_groups",
    "tier",
    "team_id",
    "team_public_model_name",
    "db_model",
    "description",
    "version",
    "key",
    "output_vector_size",
    "tpm",
    "rpm",
    "direct_access",
    "supported_openai_params",
    "health_check_model",
    "health_check_timeout",
    "disable_background_health_check",
    "tool_use_system_prompt_tokens",
    "created_at",
    "created_by",
    "updated_at",
    "updated_by",
    "supports_vision",
    "supports_function_calling",
    "supports_parallel_function_calling",
    "supports_tool_choice",
    "supports_response_schema",
    "supports_system_messages",
    "supports_prompt_caching",
    "supports_reasoning",
    "supports_audio_input",
    "supports_audio_output",
    "supports_pdf_input",
    "supports_web_search",
    "supports_computer_use",
    "supports_assistant_prefill",
    "supports_embedding_image_input",
    "supports_native_streaming",
    "supports_url_context",
    *PRICE_KEYS_LITELLM_ONLY,
}

LITELLM_SETTINGS = {
    "success_callback",
    "failure_callback",
    "callbacks",
    "service_callbacks",
    "turn_off_message_logging",
    "redact_user_api_key_info",
    "langfuse_default_tags",
    "modify_params",
    "enable_preview_features",
    "set_verbose",
    "json_logs",
    "default_fallbacks",
    "fallbacks",
    "content_policy_fallbacks",
    "context_window_fallbacks",
    "max_fallbacks",
    "force_ipv4",
    "stream_timeout",
    "cache",
    "cache_params",
    "mcp_aliases",
    "disable_end_user_cost_tracking",
    "disable_end_user_cost_tracking_prometheus_only",
    "validate_end_user_id_in_db",
    "key_generation_settings",
    "disable_add_transform_inline_image_block",
    "use_chat_completions_url_for_anthropic_messages",
    "disable_hf_tokenizer_download",
    "enable_json_schema_validation",
    "enable_key_alias_format_validation",
    "disable_copilot_system_to_assistant",
    "additional_drop_params",
    "max_user_budget",
    "max_internal_user_budget",
    "default_max_internal_user_budget",
    "internal_user_budget_duration",
    "default_internal_user_params",
    "default_team_settings",
    "default_key_generate_params",
    "upperbound_key_generate_params",
    "max_end_user_budget",
    "max_budget",
    "budget_duration",
    "budget_rollover",
    "blocked_user_list",
    "timezone",
    "budget_reset_time",
    "num_retries_per_request",
    "allowed_fails",
    "cooldown_time",
    "disable_cooldowns",
    "retry_policy",
    "allowed_fails_policy",
    "routing_strategy",
    "telemetry",
    "suppress_debug_info",
    "log_raw_request_response",
    "return_response_headers",
    "ssl_verify",
    "ssl_certificate",
    "aiohttp_trust_env",
    "disable_aiohttp_transport",
    "cost_discount_config",
    "cost_margin_config",
    "model_cost_map_url",
    "public_model_groups",
    "public_model_groups_links",
    "guardrails",
    "default_redis_batch_cache_expiry",
    "disable_token_counter",
    "store_audit_logs",
    "prometheus_initialize_budget_metrics",
    "request_timeout",
    "num_retries",
    "drop_params",
}

LITELLM_GENERAL_SETTINGS = {
    "completion_model",
    "store_prompts_in_spend_logs",
    "forward_client_headers_to_llm_api",
    "forward_openai_org_id",
    "disable_spend_logs",
    "disable_spend_updates",
    "disable_master_key_return",
    "disable_retry_on_max_parallel_request_limit_error",
    "disable_reset_budget",
    "disable_adding_master_key_hash_to_db",
    "disable_responses_id_security",
    "enable_jwt_auth",
    "reject_clientside_metadata_tags",
    "allowed_routes",
    "admin_only_routes",
    "public_routes",
    "key_management_system",
    "key_management_settings",
    "maximum_spend_logs_cleanup_cron",
    "maximum_daily_tag_spend_retention_period",
    "user_mcp_management_mode",
    "database_connection_pool_limit",
    "database_connection_timeout",
    "database_args",
    "allow_requests_on_db_unavailable",
    "custom_auth",
    "custom_auth_settings",
    "max_parallel_requests",
    "global_max_parallel_requests",
    "infer_model_from_keys",
    "background_health_checks",
    "health_check_interval",
    "health_check_details",
    "alerting_threshold",
    "alerting_args",
    "alert_to_webhook_url",
    "use_client_credentials_pass_through_routes",
    "enforced_params",
    "enable_oauth2_auth",
    "enable_oauth2_proxy_auth",
    "use_x_forwarded_for",
    "service_account_settings",
    "image_generation_model",
    "embedding_model",
    "moderation_model",
    "store_model_in_db",
    "supported_db_objects",
    "max_response_size_mb",
    "proxy_budget_rescheduler_min_time",
    "proxy_budget_rescheduler_max_time",
    "proxy_batch_write_at",
    "proxy_batch_polling_interval",
    "custom_key_generate",
    "allowed_ips",
    "default_team_disabled",
    "allow_user_auth",
    "user_api_key_cache_ttl",
    "disable_prisma_schema_update",
    "litellm_key_header_name",
    "custom_sso",
    "allow_client_side_credentials",
    "use_azure_key_vault",
    "use_google_kms",
    "spend_report_frequency",
    "ui_access_mode",
    "litellm_jwtauth",
    "litellm_license",
    "oauth2_config_mappings",
    "pass_through_endpoints",
    "always_include_stream_usage",
    "disable_budget_reservation",
    "fail_closed_budget_enforcement",
    "end_user_id_jwt_field",
    "mcp_servers",
    "ui_username",
    "ui_password",
    "control_plane_url",
    "enable_end_user_cost_tracking_prometheus_only",
    "master_key",
    "database_url",
    "alerting",
    "alert_types",
    "enforce_user_param",
    "max_request_size_mb",
    "user_header_name",
    "user_header_mappings",
}

# LiteLLM keys that Tollgate refuses to start with: each would lift a limit or let a customer
# through if it were ignored. The message says what to do instead.
REFUSED = {
    "litellm_settings": {
        "max_end_user_budget": (
            "a budget for every customer as a bare amount is LiteLLM's old setting, which LiteLLM no longer "
            "enforces either; create a tier with POST /budget/new and name it in max_end_user_budget_id"
        ),
        "max_budget": (
            "a budget for the whole proxy is not supported, and ignoring it would leave spending without a "
            "limit; give customers budgets (max_end_user_budget_id, /customer/new) and remove this key"
        ),
        "blocked_user_list": (
            'blocked customers live in the database: POST /customer/block {"user_ids": [...]} blocks them '
            "on every call, whichever way they are named; remove this key"
        ),
    },
    "litellm_params": {
        "max_budget": (
            "a budget per deployment is not supported, and ignoring it would leave the deployment without a "
            "limit; remove it, and budget the customers instead"
        ),
    },
}


@dataclass(frozen=True)
class Verdict:
    """What to do about one key: `error` or `warning` (one of them), or neither when it is read."""

    error: str | None = None
    warning: str | None = None


def judge(
    path: str,
    key: object,
    tollgate: Iterable[str],
    litellm: Iterable[str],
    section: str = "",
    elsewhere: dict[str, str] | None = None,
) -> Verdict:
    """The verdict on `key` at `path` in a section where Tollgate reads `tollgate` and LiteLLM
    `litellm`; `elsewhere` maps the keys Tollgate reads in a neighbouring section to that section."""
    tollgate, litellm = set(tollgate), set(litellm)
    name = str(key)
    if name in tollgate:
        return Verdict()
    refused = REFUSED.get(section, {}).get(name)
    if refused is not None:
        return Verdict(error=f"{path}: refused: {refused}")
    if name in litellm:
        return Verdict(warning=f"{path}: not supported by Tollgate, ignored")
    normalized = name.strip().lower().replace("-", "_").replace(" ", "_")
    moved = difflib.get_close_matches(normalized, sorted(elsewhere or {}), n=1, cutoff=TYPO_CUTOFF)
    if moved:
        return Verdict(error=f"{path}: Tollgate reads this as {elsewhere[moved[0]]}.{moved[0]}; move it there")
    likely = difflib.get_close_matches(normalized, sorted(tollgate | litellm), n=1, cutoff=TYPO_CUTOFF)
    if likely and likely[0] in tollgate:
        return Verdict(error=f"{path}: unknown key; did you mean '{likely[0]}'? (as written it would be ignored)")
    if likely:
        return Verdict(
            warning=f"{path}: not a LiteLLM or Tollgate key (did you mean '{likely[0]}'? Tollgate does not "
            "support that one either), ignored"
        )
    return Verdict(warning=f"{path}: not a LiteLLM or Tollgate key, ignored")
