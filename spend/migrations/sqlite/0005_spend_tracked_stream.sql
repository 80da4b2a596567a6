-- spend_tracked events without an outbox row: a charged call that announces its spend says so in
-- its own spend-log row (`announced`, with the key hash and budget the event shows), and the
-- dispatchers deliver those rows in order after a cursor (`webhook_cursor`, `webhook_claims`).
-- Only an event whose first post fails is copied into webhook_events, to be retried from there.
--
-- The spend log is rebuilt with an explicit `seq INTEGER PRIMARY KEY`: the cursor is a position in
-- it, and VACUUM may renumber an implicit rowid, never an INTEGER PRIMARY KEY. Rows keep their order.

CREATE TABLE spend_logs_next (
    seq INTEGER PRIMARY KEY,
    request_id TEXT NOT NULL UNIQUE,
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
    created_at TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 1,
    announced INTEGER NOT NULL DEFAULT 0,
    key_hash TEXT,
    max_budget_units INTEGER,
    soft_budget_units INTEGER
);

INSERT INTO spend_logs_next (seq, request_id, customer_id, model_group, provider_model, deployment_id,
    prompt_tokens, completion_tokens, cached_tokens, cache_creation_tokens, reasoning_tokens, cost_units,
    priced, estimated, status, error, latency_ms, started_at, created_at, attempts)
SELECT rowid, request_id, customer_id, model_group, provider_model, deployment_id, prompt_tokens,
    completion_tokens, cached_tokens, cache_creation_tokens, reasoning_tokens, cost_units, priced, estimated,
    status, error, latency_ms, started_at, created_at, attempts
FROM spend_logs ORDER BY rowid;

DROP TABLE spend_logs;

ALTER TABLE spend_logs_next RENAME TO spend_logs;

CREATE INDEX spend_logs_by_customer ON spend_logs (customer_id, created_at);

CREATE INDEX spend_logs_by_time ON spend_logs (created_at);

-- Every spend-log row up to `position` is settled (its event, if it announces one, delivered or
-- in the outbox). After it, dispatchers claim consecutive runs of rows (after_seq < seq <= through_seq)
-- with a lease, so several can post at once; a run is `done` once settled, and the position
-- moves over the done runs at its front.
CREATE TABLE webhook_cursor (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    position INTEGER NOT NULL
);

INSERT INTO webhook_cursor (id, position) SELECT 1, COALESCE(MAX(seq), 0) FROM spend_logs;

CREATE TABLE webhook_claims (
    after_seq INTEGER PRIMARY KEY,
    through_seq INTEGER NOT NULL,
    owner TEXT,
    lease_until REAL,
    done INTEGER NOT NULL DEFAULT 0
);

-- An event copied from the spend log into the outbox (its first post failed) keeps its row's seq:
-- listings show it once, with the outbox's status.
ALTER TABLE webhook_events ADD COLUMN seq INTEGER;

CREATE INDEX webhook_events_by_seq ON webhook_events (seq) WHERE seq IS NOT NULL
