-- How many upstream attempts a call took (retries on other deployments), and the
-- Idempotency-Key ledger: a key and customer seen within 24 h are charged once, and the
-- first answer is replayed to the retries.

ALTER TABLE spend_logs ADD COLUMN attempts INTEGER NOT NULL DEFAULT 1;

CREATE TABLE idempotency_keys (
    customer_id TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    request_id TEXT NOT NULL,
    state TEXT NOT NULL,
    response BLOB,
    content_type TEXT,
    cost_units INTEGER,
    expires_at REAL NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (customer_id, idempotency_key)
) WITHOUT ROWID
