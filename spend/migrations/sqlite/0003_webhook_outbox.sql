-- The webhook outbox: events written in the same transaction as the spend they describe, and
-- delivered by a background thread in each worker. A worker claims due events with a lease so
-- each is posted by one worker at a time. `alert_marks` makes each budget alert fire once per
-- customer, event, threshold and budget window.

CREATE TABLE webhook_events (
    event_id TEXT PRIMARY KEY,
    customer_id TEXT,
    event TEXT NOT NULL,
    payload TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    retry_until REAL NOT NULL,
    lease_until REAL,
    last_error TEXT,
    created_at REAL NOT NULL,
    delivered_at REAL
);

CREATE INDEX webhook_events_due ON webhook_events (status, next_attempt_at);

CREATE TABLE alert_marks (
    customer_id TEXT NOT NULL,
    event TEXT NOT NULL,
    threshold TEXT NOT NULL,
    window_end TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (customer_id, event, threshold, window_end)
) WITHOUT ROWID
