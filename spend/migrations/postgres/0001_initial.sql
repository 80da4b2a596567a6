-- The whole schema on PostgreSQL, as SQLite reaches it through its migrations 0001-0007.
-- Money columns are NUMERIC integer pico-dollars (exact at any size); times a call or an event
-- is due at are epoch seconds (double precision), timestamps shown to users ISO-8601 text.
-- The roles' SQL does money arithmetic only through units_add / units_le / units_sum, which
-- SQLite defines in Python on each connection and PostgreSQL here (inlined by the planner).

CREATE FUNCTION units_add(numeric, numeric) RETURNS numeric
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS 'SELECT $1 + $2';

CREATE FUNCTION units_le(numeric, numeric) RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS 'SELECT $1 <= $2';

CREATE AGGREGATE units_sum(numeric) (SFUNC = numeric_add, STYPE = numeric);

CREATE TABLE budgets (
    budget_id TEXT PRIMARY KEY,
    max_budget_units NUMERIC,
    soft_budget_units NUMERIC,
    tpm_limit BIGINT,
    rpm_limit BIGINT,
    model_max_budget TEXT,
    budget_duration TEXT,
    budget_reset_at TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    owner_user_id TEXT
);

CREATE TABLE customers (
    user_id TEXT PRIMARY KEY,
    alias TEXT,
    blocked BOOLEAN NOT NULL DEFAULT FALSE,
    allowed_model_region TEXT,
    default_model TEXT,
    models TEXT NOT NULL DEFAULT '[]',
    budget_id TEXT REFERENCES budgets (budget_id) ON DELETE SET NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

CREATE TABLE spend_accounts (
    user_id TEXT NOT NULL REFERENCES customers (user_id) ON DELETE CASCADE,
    scope TEXT NOT NULL,
    spend_units NUMERIC NOT NULL DEFAULT 0,
    reserved_units NUMERIC NOT NULL DEFAULT 0,
    period_end DOUBLE PRECISION,
    PRIMARY KEY (user_id, scope)
);

CREATE TABLE reservations (
    request_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    scope TEXT NOT NULL,
    units NUMERIC NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL,
    capped BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (request_id, scope)
);

CREATE INDEX reservations_by_customer ON reservations (user_id, expires_at);

CREATE TABLE rate_events (
    request_id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    at DOUBLE PRECISION NOT NULL,
    tokens BIGINT NOT NULL DEFAULT 0
);

CREATE INDEX rate_events_by_customer ON rate_events (user_id, at);

CREATE TABLE spend_logs (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    request_id TEXT NOT NULL UNIQUE,
    customer_id TEXT,
    model_group TEXT NOT NULL,
    provider_model TEXT NOT NULL,
    deployment_id TEXT NOT NULL,
    prompt_tokens BIGINT NOT NULL,
    completion_tokens BIGINT NOT NULL,
    cached_tokens BIGINT NOT NULL,
    cache_creation_tokens BIGINT NOT NULL,
    reasoning_tokens BIGINT NOT NULL,
    cost_units NUMERIC NOT NULL,
    priced BOOLEAN NOT NULL,
    estimated BOOLEAN NOT NULL,
    status TEXT NOT NULL,
    error TEXT,
    latency_ms BIGINT NOT NULL,
    started_at TEXT NOT NULL,
    created_at TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 1,
    response_id TEXT
);

CREATE INDEX spend_logs_by_customer ON spend_logs (customer_id, created_at);

-- The upstream's id of each answer (`chatcmpl-…`, `resp_…`, `msg_…`): `/spend/logs?request_id=`
-- finds a call by it or by Tollgate's call id.
CREATE INDEX spend_logs_by_response ON spend_logs (response_id) WHERE response_id IS NOT NULL;

CREATE INDEX spend_logs_by_time ON spend_logs (created_at);

CREATE TABLE webhook_events (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE,
    customer_id TEXT,
    event TEXT NOT NULL,
    payload TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at DOUBLE PRECISION NOT NULL,
    retry_until DOUBLE PRECISION NOT NULL,
    lease_until DOUBLE PRECISION,
    last_error TEXT,
    created_at DOUBLE PRECISION NOT NULL,
    delivered_at DOUBLE PRECISION
);

-- seq last, so a claim reads the due events in their order off the index and stops at its limit.
CREATE INDEX webhook_events_due ON webhook_events (status, next_attempt_at, seq);

CREATE TABLE alert_marks (
    customer_id TEXT NOT NULL,
    event TEXT NOT NULL,
    threshold TEXT NOT NULL,
    window_end TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (customer_id, event, threshold, window_end)
);

CREATE TABLE idempotency_keys (
    customer_id TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    request_id TEXT NOT NULL,
    state TEXT NOT NULL,
    response BYTEA,
    content_type TEXT,
    cost_units NUMERIC,
    expires_at DOUBLE PRECISION NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (customer_id, idempotency_key)
)
