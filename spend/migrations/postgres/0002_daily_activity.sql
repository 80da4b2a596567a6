-- The daily rollup: every call (served, failed or refused) summed per UTC day, customer and model,
-- written in the transaction that writes the call's spend-log row (spend/activity.py). Calls
-- charged to nobody are kept under the customer id ''. Filled here from the spend log so far.

CREATE TABLE daily_activity (
    day TEXT NOT NULL,
    customer_id TEXT NOT NULL,
    model_group TEXT NOT NULL,
    provider_model TEXT NOT NULL,
    spend_units NUMERIC NOT NULL DEFAULT 0,
    prompt_tokens BIGINT NOT NULL DEFAULT 0,
    completion_tokens BIGINT NOT NULL DEFAULT 0,
    cache_read_tokens BIGINT NOT NULL DEFAULT 0,
    cache_creation_tokens BIGINT NOT NULL DEFAULT 0,
    api_requests BIGINT NOT NULL DEFAULT 0,
    successful_requests BIGINT NOT NULL DEFAULT 0,
    failed_requests BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (day, customer_id, model_group, provider_model)
);

CREATE INDEX daily_activity_by_customer ON daily_activity (customer_id, day);

INSERT INTO daily_activity (day, customer_id, model_group, provider_model, spend_units, prompt_tokens,
    completion_tokens, cache_read_tokens, cache_creation_tokens, api_requests, successful_requests, failed_requests)
SELECT substr(created_at, 1, 10), COALESCE(customer_id, ''), model_group, provider_model,
    COALESCE(SUM(CASE WHEN status = 'success' THEN cost_units ELSE 0 END), 0), SUM(prompt_tokens),
    SUM(completion_tokens), SUM(cached_tokens), SUM(cache_creation_tokens), COUNT(*),
    SUM(CASE WHEN status = 'success' THEN 1 ELSE 0 END), SUM(CASE WHEN status = 'success' THEN 0 ELSE 1 END)
FROM spend_logs
GROUP BY substr(created_at, 1, 10), COALESCE(customer_id, ''), model_group, provider_model
