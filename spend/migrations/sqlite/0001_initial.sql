-- Customers, budget tiers and the spend log. Money columns are integer pico-dollars.

CREATE TABLE budgets (
    budget_id TEXT PRIMARY KEY,
    max_budget_units INTEGER,
    soft_budget_units INTEGER,
    tpm_limit INTEGER,
    rpm_limit INTEGER,
    model_max_budget TEXT,
    budget_duration TEXT,
    budget_reset_at TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

CREATE TABLE customers (
    user_id TEXT PRIMARY KEY,
    alias TEXT,
    blocked INTEGER NOT NULL DEFAULT 0,
    spend_units INTEGER NOT NULL DEFAULT 0,
    allowed_model_region TEXT,
    default_model TEXT,
    models TEXT NOT NULL DEFAULT '[]',
    budget_id TEXT REFERENCES budgets (budget_id) ON DELETE SET NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

CREATE TABLE spend_logs (
    request_id TEXT PRIMARY KEY,
    customer_id TEXT,
    model_group TEXT NOT NULL,
    provider_model TEXT NOT NULL,
    deployment_id TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    cached_tokens INTEGER NOT NULL,
    cache_creation_tokens INTEGER NOT NULL,
    reasoning_tokens INTEGER NOT NULL,
    cost_units INTEGER NOT NULL,
    priced INTEGER NOT NULL,
    estimated INTEGER NOT NULL,
    status TEXT NOT NULL,
    error TEXT,
    latency_ms INTEGER NOT NULL,
    started_at TEXT NOT NULL,
    created_at TEXT NOT NULL
);

CREATE INDEX spend_logs_by_customer ON spend_logs (customer_id, created_at);

CREATE INDEX spend_logs_by_time ON spend_logs (created_at);
